"""The orchestration: config -> data -> plan -> chunks of models -> outputs -> products.

``run_experiment`` is what ``python -m jaxmia.run`` calls.  It checks
everything it can before it writes anything, trains only the jobs the run
folder does not already hold, and hands the models' outputs to analysis.py
(statistics, figures) and products.py (the files).  Multi-host gathering and
the progress bars live in their own small helpers below.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxmia import __version__, kinds, privacy
from jaxmia.config import Config
from jaxmia.data import load_dataset
from jaxmia.errors import NonFiniteLoss, UserError
from jaxmia.interrupt import StopFlag, StopRequested
from jaxmia.kinds.base import metadata, write_run
from jaxmia.runs.outputs import ModelOutputs
from jaxmia.runs.store import RunStore, check_output_path
from jaxmia.training.chunk import ChunkTrainer, Interrupted
from jaxmia.training.memory import auto_models_per_chunk
from jaxmia.training.setup import make_setup


def run_experiment(
    cfg: Config,
    *,
    data_dir: str | Path,
    output_dir: str | Path,
    fresh: bool = False,
    progress: bool = True,
    devices=None,
    stop: StopFlag | None = None,
    cpu_devices: int | None = None,
) -> dict | None:
    """Runs (or resumes) one experiment and writes its products.

    Under ``jax.distributed`` every process calls this: process 0 owns the run
    folder, the chunks of each step are spread over the processes (each trains
    its chunk on its local devices), the outputs are gathered to all, and
    process 0 saves them and writes the products.  Returns results.json's dict
    on process 0 and None elsewhere.  ``stop`` (interrupt.py) is checked
    between stages, chunks and epochs; a set flag ends the run with
    StopRequested after the last finished chunk is saved.  ``cpu_devices``: the
    single-threaded CPU devices the command line started (run.py), recorded in
    run.json so that a resumed run starts the same ones (None: XLA's own).
    """
    stop = stop or StopFlag()
    proc, n_proc = jax.process_index(), jax.process_count()
    lead = proc == 0
    run_dir = check_output_path(output_dir, cfg.run_name)
    dataset = load_dataset(
        cfg.dataset, data_dir, num_classes=cfg.num_classes, source=cfg.data_source
    )
    n_train, n_test = len(dataset.train_labels), len(dataset.test_labels)
    cfg.check_against(n_train, n_test)
    kind = cfg.kind
    cfg = kind.resolve(cfg, n_train)
    devices = list(devices if devices is not None else jax.local_devices())
    platform = devices[0].platform
    plan = kind.plan(cfg, n_train)
    setup = make_setup(cfg, dataset, platform, plan)
    # The models train (and score) on the canaries' labels; the arrays record both.
    train_data = privacy.mislabel(cfg, dataset)
    wanted = kind.jobs(cfg)
    run_hash = cfg.results_hash(dataset.fingerprint, __version__)
    stop.check()

    # Process 0 opens (and locks) the run folder; the others learn from it
    # which jobs are left and how many models a chunk holds.
    store, done, refusal, k = None, None, None, 0
    if lead:
        try:
            k = _models_per_chunk(cfg, setup, devices, len(wanted), n_proc, run_dir, run_hash)
            identity = _identity(
                cfg, dataset, run_hash, setup, platform, k // len(devices), cpu_devices
            )
            store = RunStore.open(
                run_dir, identity, fresh=fresh, product_files=_product_files(run_dir, kind)
            )
            done = store.load()
            left = len(wanted) - (len(set(done.jobs()) & set(wanted)) if done is not None else 0)
            k = _fit_chunk(k, left, len(devices), n_proc, setup.strategy)
        except UserError as e:
            refusal = e
    have = set(done.jobs()) if done is not None else set()
    shared = np.array([j not in have for j in wanted] + [refusal is None, k], np.int64)
    shared = _broadcast(shared, n_proc)
    if refusal is not None:
        raise refusal
    if not shared[-2]:
        raise UserError(f"process 0 could not open the run folder {run_dir}; see its message")
    k = int(shared[-1])
    todo = [j for j, flag in zip(wanted, shared[:-2], strict=True) if flag]

    try:
        trained, compile_seconds, train_seconds = _train(
            cfg, setup, plan, train_data, devices, k, todo, store, _show(progress, lead), stop
        )
        if not lead:
            return None
        outputs = ModelOutputs.concat([done, trained]).select(wanted)
        _check_finite(cfg, kind, outputs)
        arrays = kind.arrays(cfg, plan, dataset, outputs)
        n_trained = len(todo)
        per_model = kind.examples_per_model(cfg) * cfg.epochs
        run_info = {
            "compile_seconds": round(compile_seconds, 3),
            "train_seconds": round(train_seconds, 3),
            "models_trained": n_trained,
            "models_reused": len(wanted) - n_trained,
            "models_per_second": round(n_trained / train_seconds, 4) if train_seconds else None,
            "image_steps_per_second": (
                round(n_trained * per_model / train_seconds, 1) if train_seconds else None
            ),
            "models_per_chunk": k,
            "devices": [str(d) for d in devices],
            "backend": platform,
            "conv": setup.conv,
            "strategy": setup.strategy,
            "results_hash": run_hash,
            "jaxmia_version": __version__,
        }
        meta = metadata(kind, cfg, dataset.synthetic, dataset.fingerprint)
        return write_run(kind, run_dir, cfg, meta, arrays, run_info, between=stop.check)
    finally:
        if store is not None:
            store.close()


def _product_files(run_dir, kind) -> tuple[str, ...]:
    """The files at the top of the run folder that are jaxmia's to replace: the products of
    the kind its run.json records and of this run's kind (``--fresh`` deletes these and
    no other kind's: a targets.csv in a single-target folder is the user's)."""
    names = list(kinds.product_files(kind))
    old = RunStore.peek(run_dir)
    if old is not None:
        recorded = (old.get("config") or {}).get("experiment") or kinds.DEFAULT
        if recorded in kinds.names():
            names += kinds.product_files(kinds.get(recorded))
    return tuple(dict.fromkeys(names))


def _identity(cfg, dataset, run_hash, setup, platform, models_per_device, cpu_devices) -> dict:
    import jaxlib

    identity = {
        "results_hash": run_hash,
        "jaxmia_version": __version__,
        "data_fingerprint": dataset.fingerprint,
        # The size every saved training-set index must stay below (jaxmia analyze).
        "train_size": len(dataset.train_labels),
        "hashed_keys": cfg.hashed_keys(),
        "config": cfg.to_dict(),
        # Everything besides the config that decides the bits of a loss.
        "execution": {
            "conv": setup.conv,
            "strategy": setup.strategy,
            "compute_dtype": setup.compute_dtype,
            "backend": platform,
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            # vmap computes a chunk's models as one batch, whose width reaches
            # the last bits; lax.map computes them one by one.
            "models_per_device": models_per_device if setup.strategy == "vmap" else None,
        },
    }
    if cpu_devices and platform == "cpu":
        # Single-threaded devices sum in another order than one device on every
        # core.  Recorded only when set, so folders of XLA's default still match.
        identity["execution"]["cpu_devices"] = cpu_devices
    return identity


def _models_per_chunk(cfg, setup, devices, n_jobs, n_proc, run_dir, run_hash) -> int:
    """Models a chunk holds (a multiple of the local device count).

    ``auto`` under vmap reuses what the run folder recorded, so that a resumed
    or grown run computes its new chunks at the same width as its old ones.
    """
    n_dev = len(devices)
    if cfg.models_per_chunk != "auto":
        return -(-cfg.models_per_chunk // n_dev) * n_dev
    if setup.strategy == "vmap":
        old = RunStore.peek(run_dir)
        if old and old.get("results_hash") == run_hash:
            width = (old.get("execution") or {}).get("models_per_device")
            if isinstance(width, int) and width > 0:
                return width * n_dev
    return auto_models_per_chunk(setup, max(-(-n_jobs // n_proc), 1), devices)


def _fit_chunk(k: int, left: int, n_dev: int, n_proc: int, strategy: str) -> int:
    """A chunk no larger than the models left to train (each process's share, rounded up to
    the device count): a short chunk is filled with copies of its last job, trained and
    dropped (models_per_chunk 64 for 16 models cost 39.6 s and 3.0 GB against 15.7 s and
    0.9 GB, for identical results).  Under lax.map a chunk's width cannot change a bit of
    any model's result, so it is capped.  Under vmap the width is the batch width of the
    computation, recorded in run.json and part of every later chunk's bits: it is kept,
    and one line says what the filling costs."""
    per_proc = -(-left // n_proc) if left else 0
    need = max(n_dev, -(-per_proc // n_dev) * n_dev)
    if k <= need:
        return k
    if strategy != "vmap":
        return need
    print(
        f"jaxmia: note: a chunk holds {k} models and {per_proc} are left to train here; under "
        f"vmap the chunk's width decides the last bits of every loss and is kept, so "
        f"{k - per_proc} copies of the last model fill it (set models_per_chunk to {need} for "
        "a new run of this size)",
        file=sys.stderr,
    )
    return k


def _train(cfg, setup, plan, dataset, devices, k, todo, store, show_progress, stop):
    """Trains the jobs still to do, saving each chunk as it finishes (``show_progress``:
    ``_show``'s mode)."""
    if not todo:
        return None, 0.0, 0.0
    proc, n_proc = jax.process_index(), jax.process_count()
    trainer = ChunkTrainer(
        setup,
        dataset,
        plan=plan,
        models_per_chunk=k,
        devices=devices,
        noise_multipliers=lambda jobs: privacy.noise_multipliers(cfg, jobs),
    )
    compile_seconds = trainer.compile()
    stop.check()
    chunks = [todo[i : i + k] for i in range(0, len(todo), k)]
    # One step = one chunk per process; process p takes chunk step * n_proc + p.
    steps = [chunks[i : i + n_proc] for i in range(0, len(chunks), n_proc)]
    bars = _Progress(show_progress, len(chunks), cfg.epochs, setup.steps_per_epoch, len(todo))
    trained = []
    t0 = time.perf_counter()
    try:
        for step in steps:
            mine = step[proc] if proc < len(step) else step[0]  # spare: result dropped
            try:
                result = trainer.run(
                    mine,
                    on_epoch=bars.epoch_done if bars.bars else None,
                    should_stop=stop.requested,
                )
            except Interrupted:
                stop.check()
                raise
            for res in _gather(result, k, n_proc)[: len(step)]:
                if store is not None:
                    store.save_chunk(res)
                trained.append(res)
                _check_finite(cfg, cfg.kind, res)  # the chunk is saved first: a rerun reuses it
                bars.chunk_done(len(res))
            stop.check()
    finally:
        bars.close()
    return ModelOutputs.concat(trained), compile_seconds, time.perf_counter() - t0


def _check_finite(cfg, kind, outputs: ModelOutputs) -> None:
    if cfg.on_nonfinite != "stop":
        return
    ok = outputs.finite()
    if ok.all():
        return
    i = int(np.argmin(ok))
    epochs = outputs.epoch_loss[i]
    where = (
        f"in epoch {int(np.argmin(np.isfinite(epochs)))}"
        if not np.isfinite(epochs).all()
        else "on the target"
    )
    raise NonFiniteLoss(
        f"non-finite loss {where} for {kind.describe_job(outputs.jobs()[i])} "
        "(lower lr, or set on_nonfinite: skip to leave such rounds out)"
    )


# ---------------------------------------------------------------- hosts


def _broadcast(values: np.ndarray, n_proc: int) -> np.ndarray:
    """Process 0's array, on every process."""
    if n_proc == 1:
        return values
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(values))


def _gather(result: ModelOutputs, k: int, n_proc: int) -> list[ModelOutputs]:
    """Every process's outputs, in process order, on every process."""
    if n_proc == 1:
        return [result]
    from jax.experimental import multihost_utils

    n = len(result)
    packed = {}
    for f in ModelOutputs.fields():
        a = getattr(result, f)
        packed[f] = np.zeros((k, *a.shape[1:]), a.dtype)
        packed[f][:n] = a
    packed["n"] = np.array(n, np.int32)
    everyone = jax.tree.map(np.asarray, multihost_utils.process_allgather(packed))
    # The allgather may narrow int64 to int32 (JAX without x64): restore each dtype.
    dtypes = {f: getattr(result, f).dtype for f in ModelOutputs.fields()}
    return [
        ModelOutputs.from_arrays(
            {
                f: everyone[f][p][: int(everyone["n"][p])].astype(dtypes[f])
                for f in ModelOutputs.fields()
            }
        )
        for p in range(n_proc)
    ]


# ---------------------------------------------------------------- progress


def _show(progress: bool, lead: bool) -> str | None:
    """How the lead process shows progress: "bars" (tqdm), "lines" (--no-progress: one
    line per finished chunk, so that a long run is never silent), or None elsewhere."""
    if not lead:
        return None
    return "bars" if progress else "lines"


class _Progress:
    """The three tqdm bars (chunks, epochs, steps), or one line per chunk, or nothing."""

    def __init__(
        self, mode: str | None, n_chunks: int, epochs: int, steps_per_epoch: int, n_models=0
    ):
        self.bars = None
        self.lines = mode == "lines"
        self.n_chunks, self.n_models = n_chunks, n_models
        self.chunks_done = 0
        self.steps_per_epoch = steps_per_epoch
        if mode == "bars":
            from tqdm.auto import tqdm

            self.bars = (
                tqdm(total=n_chunks, desc="chunks", unit="chunk", position=0),
                tqdm(total=epochs, desc="epochs", unit="epoch", position=1, leave=False),
                tqdm(total=n_chunks * epochs * steps_per_epoch, desc="steps ", unit="step"),
            )
        self.t0 = time.perf_counter()
        self.models_done = 0

    def epoch_done(self, epoch: int) -> None:
        if self.bars:
            self.bars[1].update(1)
            self.bars[2].update(self.steps_per_epoch)

    def chunk_done(self, n_models: int) -> None:
        self.models_done += n_models
        self.chunks_done += 1
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.models_done / elapsed
        if self.bars:
            self.bars[0].set_postfix(models_per_s=f"{rate:.2f}")
            self.bars[0].update(1)
            self.bars[1].reset()
        if self.lines:
            left = max(self.n_models - self.models_done, 0) / rate
            print(
                f"jaxmia: chunk {self.chunks_done} of {self.n_chunks} done: "
                f"{self.models_done} of {self.n_models} models in {elapsed:.1f} s "
                f"({rate:.2f} models/s, about {left:.0f} s left)",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bars:
            for bar in reversed(self.bars):
                bar.close()


__all__ = ["NonFiniteLoss", "StopRequested", "run_experiment"]
