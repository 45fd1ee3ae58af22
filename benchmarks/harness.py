"""jaxmia against the sequential PyTorch baseline: speed, memory, chunk-size sweep, faithfulness.

    python benchmarks/harness.py --config configs/bench_cpu.yaml --quick
    python benchmarks/harness.py --config configs/bench_cpu.yaml --reps 3 --sweep 1,2,4,8,16
    python benchmarks/harness.py --gpu          # GPU sizes (synthetic data), see README
    python benchmarks/harness.py --config configs/bench_cpu_resnets.yaml --model wrn28_2 --quick

Every run is a subprocess of its own, so its peak resident memory (VmHWM)
belongs to it alone and nothing it compiled or cached in memory helps the next
one.  Within a repetition the implementations take turns, and the order rotates
from one repetition to the next, so a slow spell of a shared machine does not
land on one implementation only; the table reports medians over repetitions.

jaxmia's timed runs use ``JAXMIA_CACHE_DIR=off`` and a fresh output folder, so the
compile time is real and nothing is resumed.  Two extra runs with a persistent
cache folder show what the cache saves.

``--variant NAME:key=value,...`` times further jaxmia configurations in the same
rotation (config keys, or ``host_devices=N``: N CPU devices, each
single-threaded, the chunk's models sharded over them), so that a lever is only
ever compared side by side.  ``--sweep-convs xla,im2col`` repeats the chunk-size
sweep once per convolution, with ``strategy: vmap`` (the GPU question: grouped
convolution against batched GEMMs).

``--model NAME`` trains another network of jaxmia's registry in every
implementation (the baseline's torch twin of it) and in the faithfulness check;
for a network with BatchNorm the baseline modes default to ``tuned`` (``func``
trains the CNN only).  The machine's single-precision matrix-multiply peak
(torch.mm of 4096 x 4096, all cores, best of several) is measured once per run,
so that each implementation's GFLOP/s is also given as a share of it.

Results: ``<out>/<backend>-<YYYY-MM-DD>[-<model>].json`` and a PNG next to it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "benchmarks" / "pytorch_baseline.py"
MODES = ("seed", "tuned", "func", "opacus")  # pytorch_baseline's modes (opacus: dp: configs)
DEFAULT_MODES = ("seed", "tuned", "func")
CHILD_FLAG = "--jaxmia-child"

# The smoke preset: every stage of the harness on a config small enough for a test.
SMOKE_CONFIG = {
    "dataset": "synthetic",
    "num_classes": 10,
    "n_iterations": 2,
    "subset_size": 32,
    "epochs": 1,
    "batch_size": 16,
    "lr": 0.02,
    "alpha": 0.1,
    "eval_pairs": 0,
    "models_per_chunk": 2,
    "test_samples": 32,
    "target_index": 0,
    "save_plots": False,
}

# --quick times the baselines on their first 16 jobs (two func chunks of 8): a
# sequential baseline's rate per model does not depend on how many it trains.
QUICK_BASELINE_MAX_JOBS = 16

# GPU sizes (applied on top of --config): bigger subsets, big chunks, the baseline on
# CUDA and timed on its first jobs only (it trains one model at a time, so its rate
# does not depend on how many it trains).
GPU_PRESET = {
    "overrides": {"subset_size": 1000, "n_iterations": 256, "epochs": 2, "eval_pairs": 0},
    # one epoch: the warm-up (which must end before the last epoch) is dropped, which
    # changes the learning rates and not the work timed
    "resnet_overrides": {"subset_size": 500, "n_iterations": 64, "epochs": 1, "warmup_epochs": 0},
    "models_per_chunk": 512,
    "sweep": [1, 4, 16, 64, 256, 1024, 2048],
    "baseline_max_jobs": 16,
    "device": "cuda",
}


class HarnessError(Exception):
    """A run failed or the harness was asked for something impossible."""


def host_devices_env(n: int) -> dict:
    """XLA_FLAGS for n CPU devices that each run single-threaded (one core each)."""
    return {
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={n} "
        "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    }


# --------------------------------------------------------------------------
# Running one implementation.


def _jaxmia_child(argv: list[str]) -> int:
    """Runs jaxmia's CLI in this process, then writes the device's peak memory to a file."""
    stats_path = argv[0]
    from jaxmia.run import main

    rc = main(argv[1:])
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    Path(stats_path).write_text(json.dumps({"peak_bytes_in_use": stats.get("peak_bytes_in_use")}))
    return rc


def _vm_hwm_mib(pid: int) -> float | None:
    """A live process's peak resident memory so far (Linux VmHWM), in MiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return None


def _spawn(cmd: list[str], env: dict, log: Path, timeout: float) -> tuple[int, float, float]:
    """Runs cmd; returns (exit code, peak RSS of that child in MiB, wall seconds).

    The peak is the child's VmHWM, polled while it runs.  wait4's ru_maxrss is
    only the fallback: Linux carries the parent's resident size over a fork and
    exec into it, so a child of a big parent would report at least that.
    """
    t0 = time.perf_counter()
    peak = None
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = t0 + timeout
        while True:
            hwm = _vm_hwm_mib(proc.pid)
            if hwm is not None:
                peak = max(peak or 0.0, hwm)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                raise HarnessError(f"{' '.join(cmd[:4])} ... ran past {timeout:.0f} s; see {log}")
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if peak is None:
        peak = usage.ru_maxrss / 1024.0
    return proc.returncode, peak, time.perf_counter() - t0


def run_impl(
    impl: str,
    config: Path,
    work: Path,
    opts,
    *,
    cache_dir: str = "off",
    every_job: bool = False,
    env_extra: dict | None = None,
) -> dict:
    """One run of ``impl`` ("jaxmia" or a baseline mode) on ``config``; its results plus memory.

    Baselines train only their first ``opts.baseline_max_jobs`` jobs when that is
    set, unless ``every_job`` (the faithfulness check needs all of them).
    ``env_extra`` is added to the child's environment (a jaxmia variant's XLA_FLAGS).
    """
    out_dir = Path(tempfile.mkdtemp(prefix=f"{impl}-", dir=work))
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAXMIA_CACHE_DIR=cache_dir, **(env_extra or {}))
    common = ["--config", str(config), "--output-dir", str(out_dir), "--data-dir", opts.data_dir]
    stats_path = out_dir / "device_stats.json"
    if impl == "jaxmia":
        cmd = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, str(stats_path)]
        cmd += common + ["--no-progress"]
    else:
        cmd = [sys.executable, str(BASELINE), "--mode", impl, "--device", opts.device] + common
        if opts.baseline_max_jobs and not every_job:
            cmd += ["--max-jobs", str(opts.baseline_max_jobs)]
        if opts.baseline_threads:
            cmd += ["--threads", str(opts.baseline_threads)]
    log = out_dir / "log.txt"
    rc, rss_mib, wall = _spawn(cmd, env, log, opts.run_timeout)
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise HarnessError(f"{impl} on {config.name} exited {rc}: {' | '.join(tail)}")
    name = yaml.safe_load(config.read_text()).get("run_name") or config.stem
    run_dir = out_dir / (name if impl == "jaxmia" else f"{name}-torch-{impl}")
    results = json.loads((run_dir / "results.json").read_text())
    device_peak = None
    if impl == "jaxmia" and stats_path.exists():
        device_peak = json.loads(stats_path.read_text()).get("peak_bytes_in_use")
    elif impl != "jaxmia":
        device_peak = results.get("peak_device_bytes")
    return {
        "results": results,
        "run_dir": str(run_dir),
        "peak_rss_mib": round(rss_mib, 1),
        "peak_device_mib": round(device_peak / 2**20, 1) if device_peak else None,
        "wall_seconds": round(wall, 2),
    }


def metrics(run: dict, flops: int, peak_gflops: float | None = None) -> dict:
    """The numbers the table shows, from one run (``peak_gflops``: the machine's sgemm rate)."""
    r = run["results"]
    isps = r["image_steps_per_second"]
    gflops = isps * flops / 1e9
    return {
        "conv": r.get("conv"),
        "strategy": r.get("strategy"),
        "devices": len(r["devices"]) if isinstance(r.get("devices"), list) else r.get("devices"),
        "models_per_second": r["models_per_second"],
        "image_steps_per_second": isps,
        "gflops_per_second": round(gflops, 2),
        "share_of_sgemm_peak": round(gflops / peak_gflops, 4) if peak_gflops else None,
        "seconds_per_model": round(1 / r["models_per_second"], 3)
        if r["models_per_second"]
        else None,
        "train_seconds": r["train_seconds"],
        "compile_seconds": r["compile_seconds"],
        "models_trained": r["models_trained"],
        "models_per_chunk": r.get("models_per_chunk"),
        "peak_rss_mib": run["peak_rss_mib"],
        "peak_device_mib": run["peak_device_mib"],
        "wall_seconds": run["wall_seconds"],
    }


def median_metrics(runs: list[dict]) -> dict:
    out = {}
    for key in runs[0]:
        vals = [r[key] for r in runs if r[key] is not None]
        if vals and not all(isinstance(v, int | float) for v in vals):
            out[key] = vals[0]  # conv, strategy: the same in every run
        else:
            out[key] = round(statistics.median(vals), 4) if vals else None
    return out


# --------------------------------------------------------------------------
# Configs.


def write_config(base: dict, work: Path, name: str, **changes) -> Path:
    cfg = {**base, **changes, "run_name": name}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def sweep_rounds(base: dict, k: int) -> int:
    """Rounds for a sweep point: at least the base run's jobs, and whole chunks of k."""
    jobs = 2 * base["n_iterations"] + 2 * base.get("eval_pairs", 0)
    step = k if k % 2 == 0 else 2 * k  # jobs = 2 * rounds must be a multiple of k
    return max(1, -(-jobs // step) * step // 2)


# --------------------------------------------------------------------------
# Faithfulness.


def faithfulness(jax_run: dict, torch_run: dict, n_rounds_min: int) -> dict:
    """KS tests of jaxmia's against the baseline's member and non-member losses, and accuracy."""
    from jaxmia.attack.metrics import ks_test

    zj = np.load(Path(jax_run["run_dir"]) / "losses.npz")
    zt = np.load(Path(torch_run["run_dir"]) / "losses.npz")
    ks_m, p_m = ks_test(zj["member_losses"], zt["member_losses"])
    ks_n, p_n = ks_test(zj["nonmember_losses"], zt["nonmember_losses"])
    rj, rt = jax_run["results"], torch_run["results"]
    acc_diff = 100.0 * abs(rj["test_accuracy"] - rt["test_accuracy"])
    rounds = len(zj["member_losses"])
    passed = bool(p_m > 0.01 and p_n > 0.01 and acc_diff < 2.0 and rounds >= n_rounds_min)
    return {
        "rounds": rounds,
        "member_ks": round(ks_m, 4),
        "member_p": round(p_m, 4),
        "nonmember_ks": round(ks_n, 4),
        "nonmember_p": round(p_n, 4),
        "test_accuracy_jaxmia": round(rj["test_accuracy"], 4),
        "test_accuracy_baseline": round(rt["test_accuracy"], 4),
        "test_accuracy_diff_points": round(acc_diff, 3),
        "member_loss_mean": [rj["member_loss_mean"], rt["member_loss_mean"]],
        "nonmember_loss_mean": [rj["nonmember_loss_mean"], rt["nonmember_loss_mean"]],
        "auc": [rj["auc"], rt["auc"]],
        "baseline": rt["implementation"],
        "criteria": f"KS p > 0.01 for each, |test acc diff| < 2 points, >= {n_rounds_min} rounds",
        "passed": passed,
    }


# --------------------------------------------------------------------------
# Machine and plot.


LSCPU_KEYS = ("Model name", "CPU family", "Model", "Thread(s) per core", "Core(s) per socket")

# The peak a GEMM reaches here: torch.mm (oneDNN/MKL) of n x n float32 on every
# core (CUDA when the baseline runs there), best of several calls after a warm-up.
# On CUDA the peak is TF32's, the precision XLA (jaxmia's float32 default) and cuDNN
# use for float32 convolutions on a GPU; torch's float32 mm alone avoids TF32, and
# ResNet-9 then ran at 127% of that "peak" on an H200 (benchmarks/README.md, "GPU").
SGEMM_PROBE = """
import sys, time, torch
dev, n = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(torch.get_num_threads())
if dev == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = True
    n = max(n, 8192)  # a 4096 product is too short to fill the GPU
a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
best = float("inf")
for _ in range(6):
    sync(); t = time.perf_counter(); torch.mm(a, b); sync()
    best = min(best, time.perf_counter() - t)
print(2 * n**3 / best / 1e9)
"""


def sgemm_peak_gflops(device: str = "cpu", n: int = 4096) -> float | None:
    """GFLOP/s of the best float32 n x n matrix product (None without torch); on CUDA,
    with TF32 allowed and n at least 8192."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", SGEMM_PROBE, device, str(n)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return round(float(out.stdout.strip().splitlines()[-1]), 1)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def machine_info() -> dict:
    info = {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in LSCPU_KEYS:
                info[key.strip()] = value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for dist in ("jax", "jaxlib", "torch"):
        try:
            info[f"{dist}_version"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[f"{dist}_version"] = None
    return info


def plot(report: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    names = list(report["implementations"])
    rates = [report["implementations"][n]["image_steps_per_second"] for n in names]
    bars = ax1.bar(names, rates, color=["tab:blue" if n == "jaxmia" else "tab:gray" for n in names])
    for bar, n in zip(bars, names, strict=True):
        g = report["implementations"][n]["gflops_per_second"]
        ax1.annotate(
            f"{g:.1f} GFLOP/s",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax1.set_ylabel("image-steps / s (median)")
    ax1.set_title(f"{report['backend']}: {Path(report['config']['path']).name}")
    sweep = [p for p in report["sweep"] if p.get("image_steps_per_second")]
    if sweep:
        for conv in sorted({str(p.get("conv")) for p in sweep}):
            points = [p for p in sweep if str(p.get("conv")) == conv]
            ks = [p["models_per_chunk"] for p in points]
            label = f"jaxmia ({conv})" if conv != "None" else "jaxmia"
            ax2.plot(ks, [p["image_steps_per_second"] for p in points], "o-", label=label)
        ax2.set_xscale("log", base=2)
        tuned = report["implementations"].get("tuned")
        if tuned:
            ax2.axhline(
                tuned["image_steps_per_second"], color="tab:gray", ls="--", label="pytorch-tuned"
            )
        ax2.set_ylim(bottom=0)
        ax2.legend(loc="lower right")
    ax2.set_xlabel("models_per_chunk")
    ax2.set_ylabel("image-steps / s")
    ax2.set_title("jaxmia chunk-size sweep")
    fig.tight_layout()
    fig.savefig(path)


# --------------------------------------------------------------------------
# The benchmark.


def benchmark(opts) -> dict:
    from jaxmia.config import load_config
    from jaxmia.models import MODELS

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="jaxmia-bench-"))
    say = (lambda *a: None) if opts.silent else (lambda *a: print(*a, flush=True))
    try:
        if opts.smoke:
            base = dict(SMOKE_CONFIG)
            config_path = write_config(base, work, "smoke")
        else:
            config_path = Path(opts.config)
            base = load_config(config_path).to_dict()
            base.pop("run_name", None)
        base.update(opts.overrides)
        if opts.model:
            base["model"] = opts.model
        main_cfg = write_config(base, work, "bench")
        cfg = load_config(main_cfg)  # validates the overrides
        flops = MODELS[cfg.model].flops_per_image_step(cfg.num_classes)
        modes = opts.modes or default_modes(cfg.model)

        machine = machine_info()
        if not opts.smoke:
            machine["sgemm_gflops"] = sgemm_peak_gflops(opts.device)
        variants = {f"jaxmia-{v}": (o, e) for v, o, e in opts.variants}
        impls = ["jaxmia", *variants, *modes]
        configs = {name: main_cfg for name in impls}
        envs: dict[str, dict] = {}
        for name, (overrides, env) in variants.items():
            configs[name] = write_config(base, work, name, **overrides)
            load_config(configs[name])  # validates the variant's keys
            envs[name] = env
        runs: dict[str, list[dict]] = {name: [] for name in impls}
        raw: dict[str, list[dict]] = {name: [] for name in impls}
        for rep in range(opts.reps):
            order = impls[rep % len(impls) :] + impls[: rep % len(impls)]
            for name in order:
                say(f"[rep {rep + 1}/{opts.reps}] {name} ...")
                impl = "jaxmia" if name in variants else name
                run = run_impl(impl, configs[name], work, opts, env_extra=envs.get(name))
                raw[name].append(run)
                runs[name].append(metrics(run, flops, machine.get("sgemm_gflops")))
                say(
                    f"    {runs[name][-1]['image_steps_per_second']:.0f} image-steps/s, "
                    f"train {runs[name][-1]['train_seconds']:.1f} s, "
                    f"compile {runs[name][-1]['compile_seconds']:.1f} s, "
                    f"RSS {runs[name][-1]['peak_rss_mib']:.0f} MiB"
                )
        table = {name: {**median_metrics(runs[name]), "runs": runs[name]} for name in impls}
        backend = raw["jaxmia"][0]["results"].get("backend", "cpu")
        jax_rate = table["jaxmia"]["image_steps_per_second"]
        speedups = {m: round(jax_rate / table[m]["image_steps_per_second"], 3) for m in modes}
        variant_speedups = {}
        if "tuned" in table:
            tuned_rate = table["tuned"]["image_steps_per_second"]
            variant_speedups = {
                v: round(table[v]["image_steps_per_second"] / tuned_rate, 3) for v in variants
            }

        # The persistent compilation cache: a cold run fills it, a warm one reads it.
        cache = None
        if not opts.no_cache_check:
            cache_dir = work / "xla-cache"
            k = table["jaxmia"]["models_per_chunk"]
            small = write_config(
                base, work, "cache", n_iterations=max(1, k // 2), eval_pairs=0, models_per_chunk=k
            )
            cold = run_impl("jaxmia", small, work, opts, cache_dir=str(cache_dir))
            warm = run_impl("jaxmia", small, work, opts, cache_dir=str(cache_dir))
            cache = {
                "compile_seconds_cold": cold["results"]["compile_seconds"],
                "compile_seconds_warm": warm["results"]["compile_seconds"],
                "wall_seconds_cold": cold["wall_seconds"],
                "wall_seconds_warm": warm["wall_seconds"],
            }
            say(
                f"compile cache: cold {cache['compile_seconds_cold']:.1f} s, "
                f"warm {cache['compile_seconds_warm']:.1f} s"
            )

        # Chunk-size sweep; the configured chunk size is already measured above.
        # With --sweep-convs, one sweep per convolution, all vmapped.
        sweep = []
        for conv in opts.sweep_convs or [None]:
            fixed = {} if conv is None else {"conv": conv, "strategy": "vmap"}
            for k in opts.sweep:
                if conv is None and k == table["jaxmia"]["models_per_chunk"]:
                    point = {k_: table["jaxmia"][k_] for k_ in runs["jaxmia"][0]}
                    sweep.append({**point, "models_per_chunk": k, "from": "timed runs"})
                    continue
                if opts.time_budget and time.perf_counter() - t_start > opts.time_budget:
                    sweep.append({"models_per_chunk": k, "conv": conv, "error": "time budget"})
                    say(f"    skipped models_per_chunk={k} {conv or ''}: past --time-budget")
                    break
                say(f"[sweep] {conv or ''} models_per_chunk={k} ...")
                path = write_config(
                    base,
                    work,
                    f"sweep{k}{conv or ''}",
                    models_per_chunk=k,
                    n_iterations=sweep_rounds(base, k),
                    eval_pairs=0,
                    **fixed,
                )
                try:
                    point = metrics(run_impl("jaxmia", path, work, opts), flops)
                except HarnessError as e:  # most often out of memory: the end of the sweep
                    sweep.append({"models_per_chunk": k, "conv": conv, "error": str(e)[:300]})
                    say(f"    failed: {e}")
                    break
                sweep.append(point)
                say(f"    {point['image_steps_per_second']:.0f} image-steps/s")
        sweep.sort(key=lambda p: (str(p.get("conv")), p["models_per_chunk"]))

        faith = None
        if not opts.no_faithfulness:
            if opts.smoke:
                fpath, min_rounds = main_cfg, 1
                fj = raw["jaxmia"][0]
                ft = raw["tuned"][0] if "tuned" in raw else None
                if ft is None or opts.baseline_max_jobs:
                    ft = run_impl("tuned", fpath, work, opts, every_job=True)
            else:
                fpath, min_rounds = Path(opts.faithfulness_config), 64
                if opts.model:  # the same check, on the network being measured
                    fbase = {**yaml.safe_load(fpath.read_text()), "model": opts.model}
                    fpath = write_config(fbase, work, fpath.stem)
                say(f"[faithfulness] {fpath} ...")
                fj = run_impl("jaxmia", fpath, work, opts)
                ft = run_impl("tuned", fpath, work, opts, every_job=True)
            faith = faithfulness(fj, ft, min_rounds)
            faith["config"] = str(fpath)
            say(
                f"    passed={faith['passed']}: KS p member {faith['member_p']}, "
                f"non-member {faith['nonmember_p']}, "
                f"test acc diff {faith['test_accuracy_diff_points']} points"
            )

        machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        today = datetime.date.today().isoformat()
        report = {
            "backend": backend,
            "date": today,
            "quick": opts.quick,
            "smoke": opts.smoke,
            "machine": machine,
            "config": {"path": str(opts.config if not opts.smoke else "smoke"), **base},
            "reps": opts.reps,
            "model": cfg.model,
            "flops_per_image_step": flops,
            "flop_count": (
                f"jaxmia.models.MODELS[{cfg.model!r}].flops_per_image_step: multiply-add = 2 "
                "FLOPs over the convolutions (border taps included) and dense layers; "
                "backward = 2 x forward minus the first layer's input gradient; BatchNorm, "
                "ReLU, pooling, softmax and the update not counted"
            ),
            "image_steps": "models x epochs x mean training-set size / train seconds",
            "speedup_vs_tuned": speedups.get("tuned"),
            "speedup_vs": speedups,
            "variants_speedup_vs_tuned": variant_speedups,
            "implementations": table,
            "compile_cache": cache,
            "sweep": sweep,
            "faithfulness": faith,
            "elapsed_seconds": round(time.perf_counter() - t_start, 1),
        }
        out = Path(opts.out)
        out.mkdir(parents=True, exist_ok=True)
        suffix = "" if cfg.model == "cnn" else f"-{cfg.model}"
        json_path = out / f"{backend}-{today}{suffix}.json"
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        plot(report, json_path.with_suffix(".png"))
        report["json_path"] = str(json_path)
        say(format_table(report))
        say(f"wrote {json_path} and {json_path.with_suffix('.png')}")
        return report
    finally:
        if opts.keep_work:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def format_table(report: dict) -> str:
    """The markdown table for benchmarks/README.md."""
    head = (
        "| implementation | models/s | s per model | image-steps/s | GFLOP/s | share of sgemm "
        "| train s | compile s | peak RSS MiB | peak device MiB |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [f"model: {report.get('model', 'cnn')}", head]
    for name, m in report["implementations"].items():
        label = f"pytorch-{name}" if name in MODES else name
        if name not in MODES and m.get("conv"):
            label += f" ({m['conv']}, {m['strategy']}, {m['devices']} dev)"
        dev = "" if m["peak_device_mib"] is None else f"{m['peak_device_mib']:.0f}"
        share = m.get("share_of_sgemm_peak")
        per_model = m.get("seconds_per_model")
        lines.append(
            f"| {label} | {m['models_per_second']:.3f} "
            f"| {'' if per_model is None else f'{per_model:.2f}'} "
            f"| {m['image_steps_per_second']:.0f} "
            f"| {m['gflops_per_second']:.2f} | {'' if share is None else f'{share:.1%}'} "
            f"| {m['train_seconds']:.1f} "
            f"| {m['compile_seconds']:.1f} | {m['peak_rss_mib']:.0f} | {dev} |"
        )
    lines.append(f"\nspeedup_vs_tuned: {report['speedup_vs_tuned']}")
    for name, ratio in (report.get("variants_speedup_vs_tuned") or {}).items():
        lines.append(f"{name} vs tuned: {ratio}")
    machine = report.get("machine", {})
    lines.append(
        f"CPU: {machine.get('Model name')}; sgemm peak {machine.get('sgemm_gflops')} GFLOP/s; "
        f"load average at start {machine.get('loadavg_start')}, at end {machine.get('loadavg_end')}"
    )
    lines.append(format_sweep(report))
    return "\n".join(lines)


def format_sweep(report: dict) -> str:
    """The chunk-size sweep as a markdown table: image-steps/s (peak device MiB) per conv."""
    convs = sorted({str(p.get("conv")) for p in report["sweep"]})
    ks = sorted({p["models_per_chunk"] for p in report["sweep"]})
    cells = {(str(p.get("conv")), p["models_per_chunk"]): p for p in report["sweep"]}
    lines = [
        "\n| models_per_chunk | " + " | ".join(f"{c} image-steps/s (MiB)" for c in convs) + " |",
        "|---|" + "---|" * len(convs),
    ]
    for k in ks:
        row = []
        for c in convs:
            p = cells.get((c, k))
            if p is None:
                row.append("")
            elif "error" in p:
                row.append("failed (" + p["error"][:40].replace("|", "/") + ")")
            else:
                mib = p.get("peak_device_mib") or p.get("peak_rss_mib")
                row.append(f"{p['image_steps_per_second']:.0f} ({mib:.0f})")
        lines.append(f"| {k} | " + " | ".join(row) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line.


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"harness: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,2,4, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return vals


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"modes must be among {','.join(MODES)}, got {text!r}")
    return modes


def _variant(text: str) -> tuple[str, dict, dict]:
    """NAME:key=value,... -> (name, config overrides, extra environment)."""
    name, _, spec = text.partition(":")
    if not name or not name.replace("-", "").replace("_", "").isalnum() or not spec:
        raise argparse.ArgumentTypeError(f"expected NAME:key=value,..., got {text!r}")
    overrides, env = {}, {}
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        if not eq:
            raise argparse.ArgumentTypeError(f"expected key=value in {text!r}, got {item!r}")
        if key == "host_devices":
            env.update(host_devices_env(int(value)))
        else:
            overrides[key] = yaml.safe_load(value)
    return name, overrides, env


def _convs(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def default_modes(model: str) -> list[str]:
    """Every baseline mode for the CNN; the tuned one for the others (func trains the CNN only,
    and the per-example seed mode of a ResNet on a CPU takes hours for nothing new)."""
    return list(DEFAULT_MODES) if model == "cnn" else ["tuned"]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="harness", description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "bench_cpu.yaml"))
    p.add_argument("--faithfulness-config", default=str(ROOT / "configs/bench_faithfulness.yaml"))
    p.add_argument("--quick", action="store_true", help="one repetition, short sweep (< 10 min)")
    p.add_argument("--smoke", action="store_true", help="tiny built-in config, for the tests")
    p.add_argument("--gpu", action="store_true", help="GPU sizes; baseline on CUDA")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 1)")
    p.add_argument(
        "--modes",
        type=_modes,
        default=None,
        help="baseline modes (default: all non-private ones for the CNN, tuned for the "
        "BatchNorm networks; opacus: DP-SGD, for a config with dp:)",
    )
    p.add_argument("--model", default=None, help="the network (jaxmia.models.MODELS) to train")
    p.add_argument("--sweep", type=_int_list, default=None, help="models_per_chunk values")
    p.add_argument(
        "--sweep-convs",
        type=_convs,
        default=None,
        help="one vmapped sweep per conv (xla,im2col)",
    )
    p.add_argument(
        "--variant",
        dest="variants",
        type=_variant,
        action="append",
        default=[],
        help="NAME:key=value,...: another jaxmia configuration timed in the same rotation "
        "(config keys, or host_devices=N)",
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--data-dir", default="./datasets")
    p.add_argument("--device", default=None, help="baseline device: cpu or cuda")
    p.add_argument("--baseline-max-jobs", type=int, default=None, help="time the first N jobs")
    p.add_argument(
        "--baseline-threads", type=int, default=None, help="torch threads (default: all cores)"
    )
    p.add_argument("--run-timeout", type=float, default=900.0, help="seconds per run")
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds after which the sweep stops starting new points (the table still prints)",
    )
    p.add_argument("--no-faithfulness", action="store_true")
    p.add_argument("--no-cache-check", action="store_true")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary run folders")
    p.add_argument("--silent", action="store_true")
    return p


def parse(argv: list[str] | None = None):
    opts = build_parser().parse_args(argv)
    opts.overrides = {}
    if opts.smoke:
        opts.reps = opts.reps or 1
        opts.sweep = opts.sweep or [1, 2]
        opts.no_cache_check = True
        opts.run_timeout = min(opts.run_timeout, 120.0)
    elif opts.gpu:
        opts.overrides = dict(GPU_PRESET["overrides"])
        # The ResNets need ~10-20x the CNN's memory per model: let jaxmia size
        # their chunks from the device's memory (training/memory.py).
        big = opts.model not in (None, "cnn")
        opts.overrides["models_per_chunk"] = "auto" if big else GPU_PRESET["models_per_chunk"]
        if big:  # 1.3-2.3 GFLOP per image-step: fewer images keep a run to seconds
            opts.overrides.update(GPU_PRESET["resnet_overrides"])
        opts.sweep = opts.sweep or GPU_PRESET["sweep"]
        opts.device = opts.device or GPU_PRESET["device"]
        if opts.baseline_max_jobs is None:
            opts.baseline_max_jobs = GPU_PRESET["baseline_max_jobs"]
    elif opts.quick:
        opts.sweep = opts.sweep or [1, 2, 4, 8]
        if opts.baseline_max_jobs is None:
            opts.baseline_max_jobs = QUICK_BASELINE_MAX_JOBS
    opts.reps = opts.reps or (1 if opts.quick else 3)
    opts.sweep = opts.sweep or [1, 2, 4, 8, 16]
    opts.device = opts.device or "cpu"
    if opts.reps < 1:
        build_parser().error("--reps must be >= 1")
    if opts.baseline_threads is not None and opts.baseline_threads < 1:
        build_parser().error("--baseline-threads must be >= 1")
    if opts.baseline_max_jobs is not None and opts.baseline_max_jobs < 1:
        build_parser().error("--baseline-max-jobs must be >= 1")
    return opts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD_FLAG]:
        return _jaxmia_child(argv[1:])
    opts = parse(argv)
    from jaxmia.errors import UserError

    try:
        report = benchmark(opts)
    except (HarnessError, UserError) as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    faith = report.get("faithfulness")
    return 0 if faith is None or faith["passed"] or opts.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
