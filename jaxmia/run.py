"""Command line: ``python -m jaxmia.run --config configs/single_point_mia.yaml``.

Only argument parsing and wiring live here; the experiment is in experiment.py.
User mistakes end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from jaxmia.errors import OneLineParser, UserError


def build_parser() -> OneLineParser:
    p = OneLineParser(
        prog="jaxmia",
        description="Single-point membership inference: train with/without model pairs "
        "in parallel and measure how well x's loss reveals its membership.",
    )
    p.add_argument("--config", default="configs/single_point_mia.yaml", help="YAML config")
    p.add_argument("--data-dir", default="./datasets", help="where data sets are looked for")
    p.add_argument(
        "--data-source",
        choices=("auto", "archive", "tfds"),
        default=None,
        help="where CIFAR comes from: the official archive/folder, a prepared "
        "tensorflow-datasets copy, or auto (overrides the config's data_source)",
    )
    p.add_argument("--output-dir", default="./outputs", help="where run folders are written")
    p.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    p.add_argument("--run-name", default=None, help="run folder name (default: config name)")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="discard what jaxmia wrote in this run folder (only its own files) and start over",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--cpu-devices",
        type=_cpu_devices_arg,
        default="auto",
        metavar="N|auto",
        help="on a CPU: N single-threaded host devices, the chunk's models sharded over "
        "them; 1: one device on every core (the behaviour before auto); auto (default): "
        "one per core, or one device when the machine is busy or XLA_FLAGS sets a count",
    )
    multi = p.add_argument_group(
        "several hosts", "start one process per host with jax.distributed; process 0 writes"
    )
    multi.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    multi.add_argument("--num-processes", type=int, metavar="N", help="processes in all")
    multi.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
    multi.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() with what the cluster environment says",
    )
    multi.add_argument(
        "--coordinator-timeout",
        type=float,
        default=COORDINATOR_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait for every process to join (default {COORDINATOR_TIMEOUT_S:g})",
    )
    return p


# How long the processes of a distributed run wait for each other at the start.  JAX
# waits 300 s and then aborts the process natively (a stack dump, no line of ours),
# deaf to Ctrl-C: jaxmia waits in its own loop, says what it waits for, and ends with
# one line.
COORDINATOR_TIMEOUT_S = 120.0
# JAX's own deadline lies beyond jaxmia's, so that jaxmia's line is the one seen.
_JAX_GRACE_S = 60


def _check_distributed(args) -> bool:
    """Whether the run is distributed; UserError for flags that do not go together."""
    given = [args.coordinator, args.num_processes, args.process_id]
    if not args.distributed and all(v is None for v in given):
        return False
    if not args.distributed and any(v is None for v in given):
        raise UserError("--coordinator, --num-processes and --process-id go together")
    if args.num_processes is not None and args.num_processes < 1:
        raise UserError(f"--num-processes must be >= 1, got {args.num_processes}")
    if args.process_id is not None and not 0 <= args.process_id < (args.num_processes or 1):
        raise UserError(f"--process-id must be in [0, {args.num_processes - 1}]")
    if not 0 < args.coordinator_timeout <= 86_400:
        raise UserError(
            f"--coordinator-timeout must be in (0, 86400] seconds, got {args.coordinator_timeout}"
        )
    return True


def _init_distributed(args, stop) -> None:
    """Joins the distributed run, waiting at most --coordinator-timeout seconds.

    JAX's initialize blocks in native code (no Ctrl-C) and aborts the process when its
    own deadline passes, so it runs in a helper thread while this one says what it
    waits for, watches the stop flag and the clock, and ends the process with one line
    when either fires (nothing has been written yet: the run folder is opened later).
    """
    if not _check_distributed(args):
        return
    import threading
    import time

    import jax

    where = f"the coordinator at {args.coordinator}" if args.coordinator else "the cluster"
    who = (
        f"process {args.process_id} of {args.num_processes}"
        if args.process_id is not None
        else "this process"
    )
    print(
        f"jaxmia: {who} waiting up to {args.coordinator_timeout:g} s for {where} and every "
        "process to join (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    failure: list[BaseException] = []

    def join():
        try:
            jax.distributed.initialize(
                coordinator_address=args.coordinator,
                num_processes=args.num_processes,
                process_id=args.process_id,
                initialization_timeout=int(args.coordinator_timeout) + _JAX_GRACE_S,
            )
        except BaseException as e:  # noqa: BLE001 - reported by the waiting thread
            failure.append(e)

    helper = threading.Thread(target=join, name="jaxmia-distributed", daemon=True)
    deadline = time.monotonic() + args.coordinator_timeout
    helper.start()
    while helper.is_alive():
        helper.join(0.1)
        if stop.requested():
            _leave(f"interrupted while waiting for {where}; nothing was written", 128 + stop.signum)
        if time.monotonic() > deadline and helper.is_alive():
            _leave(
                f"error: no contact with {where} within {args.coordinator_timeout:g} s: "
                f"{_what_to_check(args.process_id, args.num_processes)} "
                "(--coordinator-timeout sets the wait)",
                2,
            )
    if failure:
        raise UserError(f"cannot join the distributed run through {where}: {failure[0]}")


def _what_to_check(process_id: int | None, num_processes: int | None) -> str:
    """The question that ends the no-contact line, asked of the process that waited:
    process 0 hosts the coordinator and waits for the others; the others wait for it."""
    if process_id == 0:
        others = (
            f"are processes 1 .. {num_processes - 1}"
            if num_processes and num_processes > 2
            else "is process 1"
        )
        return (
            f"this is process 0, the coordinator: {others} running with the same "
            "--coordinator, and can their hosts reach this one at that port?"
        )
    return "is process 0 running, and can this host reach that address and port?"


def _leave(line: str, code: int) -> None:
    """Ends the process with one line: the helper thread is stuck in native code, which
    neither returns nor lets the interpreter shut down cleanly."""
    print(f"jaxmia: {line}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


def _cpu_devices_arg(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, got {text!r}") from None


# Distributions whose presence means JAX may start on an accelerator, where
# --cpu-devices auto has nothing to do.
_ACCELERATOR_PLUGINS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")


def _accelerator_installed() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0] != "cpu"
    from importlib import metadata

    return any(
        (dist.metadata["Name"] or "").lower().startswith(_ACCELERATOR_PLUGINS)
        for dist in metadata.distributions()
    )


def choose_cpu_devices(
    requested, *, recorded=None, cores=None, load=None, accelerator=None
) -> tuple[int | None, str | None]:
    """How many single-threaded CPU devices to start: (N, or None for XLA's own single
    device on every core; one line to print, or None).

    ``requested`` is --cpu-devices: a number (1 means XLA's default device), or
    ``auto``: the count a resumed run folder ``recorded``, else one device per
    core (``cores``, default the CPUs this process may use), unless XLA_FLAGS
    already sets a device count (the user's, or the test suite's: left alone),
    an accelerator plugin is installed (``accelerator``), there is one core,
    or the machine is busy: a 1-minute load average (``load``) above the core
    count when the run starts, where one of the single-threaded devices would
    wait for a core and hold the whole chunk back (benchmarks/README.md).
    Raises UserError for a number outside [1, 1024].
    """
    if requested != "auto":
        if not 1 <= requested <= 1024:
            raise UserError(f"--cpu-devices must be in [1, 1024], got {requested}")
        return (requested if requested > 1 else None), None
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None, None
    if accelerator if accelerator is not None else _accelerator_installed():
        return None, None
    if recorded:
        return recorded, None
    cores = cores or len(os.sched_getaffinity(0))
    if cores < 2:
        return None, None
    load = os.getloadavg()[0] if load is None else load
    if load > cores:
        return None, (
            f"jaxmia: the machine is busy (load average {load:.1f} on {cores} cores): one CPU "
            "device on every core instead of one per core (--cpu-devices N chooses)"
        )
    return cores, None


def use_cpu_devices(n: int) -> None:
    """N single-threaded CPU devices: independent models on independent cores.

    Small GEMMs scale poorly over threads, independent models perfectly; the
    results equal one device's up to float rounding (the threads of one device
    sum in another order).  Must run before JAX is imported (XLA reads its
    flags once).
    """
    if not 1 <= n <= 1024:
        raise UserError(f"--cpu-devices must be in [1, 1024], got {n}")
    if "jax" in sys.modules:
        raise UserError("--cpu-devices must be set before JAX starts")
    flags = (
        f"--xla_force_host_platform_device_count={n} "
        "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


# XLA flags jaxmia sets before JAX starts, each to step around a compiler fault seen
# on a real machine, unless XLA_FLAGS already names the flag (the user's choice wins):
# - jax/jaxlib 0.11.2 on an H200 (2026-11-30, benchmarks/README.md "GPU") aborted
#   while compiling WRN-28-2's vmapped training step: "triton_tiling_propagation.cc:703
#   Check failed: subdim_size_accumulator == dim_size (256 vs. 32)" in the GEMM
#   fusion pass.  With Triton GEMMs off, XLA calls cuBLAS for those products and
#   WRN-28-2 and ResNet-9 trained.  The flag means nothing to a CPU backend.
XLA_WORKAROUNDS = {"xla_gpu_enable_triton_gemm": "false"}


def use_xla_workarounds() -> list[str]:
    """Adds each of ``XLA_WORKAROUNDS`` to XLA_FLAGS that XLA_FLAGS does not already
    name; returns the flags added.  Does nothing once JAX is imported (XLA reads its
    flags once), so a caller that imported JAX first keeps its own flags."""
    if "jax" in sys.modules:
        return []
    current = os.environ.get("XLA_FLAGS", "")
    # The flag itself, not a longer name that starts with it (XLA has
    # --xla_gpu_enable_triton_gemm_int4) or a path that contains it.
    named = {m.group(1) for m in re.finditer(r"(?:^|\s)--?([A-Za-z0-9_]+)(?==|\s|$)", current)}
    added = [f"--{k}={v}" for k, v in XLA_WORKAROUNDS.items() if k not in named]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


def enable_compile_cache() -> None:
    """JAX's persistent compilation cache, so a second run skips most compiling.

    The folder is $JAXMIA_CACHE_DIR (default ~/.cache/jaxmia/xla); off, none, 0 or
    empty turn it off.  The test suite calls this too.
    """
    where = os.environ.get("JAXMIA_CACHE_DIR", str(Path.home() / ".cache" / "jaxmia" / "xla"))
    if where.lower() in ("", "0", "off", "none"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(argv: list[str] | None = None) -> int:
    try:
        return _dispatch(argv)
    except KeyboardInterrupt:  # only before the stop flag is installed (start-up imports)
        print("jaxmia: interrupted while starting; nothing was written", file=sys.stderr)
        return 130


def _dispatch(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["analyze"]:  # jaxmia analyze RUN_DIR ...
        from jaxmia.analyze import main as analyze_main

        return analyze_main(argv[1:])
    args = build_parser().parse_args(argv)
    from jaxmia.interrupt import StopFlag, StopRequested

    stop = StopFlag()
    with stop.installed():
        try:
            return _main(args, stop)
        except UserError as e:
            print(f"jaxmia: error: {e}", file=sys.stderr)
            return 2
        except StopRequested as e:
            during = (
                " while rewriting the products (results.json is removed until the set is whole)"
                if getattr(e, "products_begun", False)
                else ""
            )
            print(
                f"jaxmia: interrupted ({e}){during}; finished chunks are kept, rerun to resume",
                file=sys.stderr,
            )
            return e.exit_code


def _main(args, stop) -> int:
    # Nothing here imports JAX before the CPU devices are set up.
    from jaxmia.config import load_config
    from jaxmia.runs.store import RunStore, check_output_path

    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    cfg = load_config(args.config, seed=args.seed, data_source=args.data_source)
    if args.run_name is not None:
        cfg = cfg.replace(run_name=args.run_name)
    if "\x00" in args.data_dir:
        raise UserError("--data-dir must not contain a NUL byte")
    run_dir = check_output_path(args.output_dir, cfg.run_name)
    _check_distributed(args)
    old = None if args.fresh else RunStore.peek(run_dir)
    recorded = ((old or {}).get("execution") or {}).get("cpu_devices")
    cpu_devices, note = choose_cpu_devices(
        args.cpu_devices, recorded=recorded if isinstance(recorded, int) else None
    )
    if note:
        print(note, file=sys.stderr)
    if cpu_devices is not None:
        use_cpu_devices(cpu_devices)
    use_xla_workarounds()
    from jaxmia.experiment import NonFiniteLoss, run_experiment
    from jaxmia.kinds import format_summary

    enable_compile_cache()
    _init_distributed(args, stop)
    try:
        results = run_experiment(
            cfg,
            data_dir=args.data_dir,
            output_dir=args.output_dir,
            fresh=args.fresh,
            progress=not args.no_progress,
            stop=stop,
            cpu_devices=cpu_devices,
        )
    except NonFiniteLoss as e:
        print(f"jaxmia: stopped: {e}", file=sys.stderr)
        return 1
    if results is not None:  # None on processes other than 0
        print(format_summary(results))
        print(f"Outputs in {Path(args.output_dir) / cfg.run_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
