"""The whole experiment: config -> data -> round plan -> chunks of models -> losses -> report.

``run_experiment`` is what ``python -m jaxmia.run`` calls.  It validates
everything it can before writing anything, trains only the jobs the run folder
does not already hold, and hands the stacked loss arrays to the host-side
statistics, plots and report.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np
import yaml

from jaxmia import __version__, plots, report, stats
from jaxmia.config import Config
from jaxmia.data import load_dataset
from jaxmia.errors import UserError
from jaxmia.plan import (
    CALIBRATION,
    EVALUATION,
    Job,
    calibration_jobs,
    evaluation_jobs,
    resolve_target,
)
from jaxmia.store import CHUNK_FIELDS, RunStore
from jaxmia.train import ChunkResult, ChunkTrainer, auto_models_per_chunk, make_setup


class NonFiniteLoss(RuntimeError):
    """A model's loss became NaN or infinite and the config says to stop."""


@dataclasses.dataclass
class Progress:
    """The three tqdm bars (chunks, epochs, steps); a no-op when disabled."""

    enabled: bool
    n_chunks: int
    epochs: int
    steps_per_epoch: int
    models_per_chunk: int

    def __post_init__(self):
        self.bars = None
        if self.enabled:
            from tqdm.auto import tqdm

            total_steps = self.n_chunks * self.epochs * self.steps_per_epoch
            self.bars = (
                tqdm(total=self.n_chunks, desc="chunks", unit="chunk", position=0),
                tqdm(total=self.epochs, desc="epochs", unit="epoch", position=1, leave=False),
                tqdm(total=total_steps, desc="steps ", unit="step", position=2),
            )
        self.t0 = time.perf_counter()
        self.models_done = 0

    def epoch_done(self, epoch: int) -> None:
        if self.bars:
            self.bars[1].update(1)
            self.bars[2].update(self.steps_per_epoch)

    def chunk_done(self, n_models: int) -> None:
        self.models_done += n_models
        if self.bars:
            rate = self.models_done / max(time.perf_counter() - self.t0, 1e-9)
            self.bars[0].set_postfix(models_per_s=f"{rate:.2f}")
            self.bars[0].update(1)
            self.bars[1].reset()

    def close(self) -> None:
        if self.bars:
            for bar in reversed(self.bars):
                bar.close()


def _chunks(jobs: list[Job], size: int) -> list[list[Job]]:
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def _describe_job(job: Job) -> str:
    kind = "calibration round" if job.stream == CALIBRATION else "evaluation pair"
    return f"{kind} {job.round}, {'IN' if job.member else 'OUT'} model"


def run_experiment(
    cfg: Config,
    *,
    data_dir: str | Path,
    output_dir: str | Path,
    fresh: bool = False,
    progress: bool = True,
    devices=None,
) -> dict:
    """Runs (or resumes) one experiment and writes its products.

    Under ``jax.distributed`` every process calls this: process 0 owns the run
    folder, the chunks of each step are spread over the processes (each trains
    its chunk on its local devices), the per-job results are gathered to all,
    and process 0 saves them and writes the products.  Returns results.json's
    dict on process 0 and None elsewhere.
    """
    proc, n_proc = jax.process_index(), jax.process_count()
    lead = proc == 0
    dataset = load_dataset(cfg.dataset, data_dir, num_classes=cfg.num_classes)
    n_train, n_test = len(dataset.train_labels), len(dataset.test_labels)
    cfg.check_against(n_train, n_test)
    target = resolve_target(cfg.target_index, cfg.seed, n_train)
    cfg = cfg.replace(target_index=target)
    devices = list(devices if devices is not None else jax.local_devices())
    platform = devices[0].platform

    run_hash = cfg.results_hash(dataset.fingerprint, __version__)
    run_dir = Path(output_dir) / cfg.run_name
    identity = {
        "jaxmia_version": __version__,
        "data_fingerprint": dataset.fingerprint,
        "config": cfg.to_dict(),
    }
    wanted = calibration_jobs(cfg.n_iterations) + evaluation_jobs(cfg.eval_pairs)
    store, done, refusal = None, {}, None
    if lead:
        try:
            store = RunStore.open(run_dir, run_hash, identity, fresh=fresh)
            done = store.load_jobs()
        except UserError as e:
            refusal = e
    todo_flags = np.array([j not in done for j in wanted] + [refusal is None], bool)
    todo_flags = _broadcast(todo_flags, n_proc)
    if refusal is not None:
        raise refusal
    if not todo_flags[-1]:
        raise UserError(f"process 0 could not open the run folder {run_dir}; see its message")
    todo = [j for j, flag in zip(wanted, todo_flags[:-1], strict=True) if flag]
    reused = len(wanted) - len(todo)

    setup = make_setup(cfg, n_test, platform)
    if cfg.models_per_chunk == "auto":
        k = auto_models_per_chunk(setup, max(-(-len(todo) // n_proc), 1), devices)
    else:
        k = -(-cfg.models_per_chunk // len(devices)) * len(devices)
    compile_seconds = train_seconds = 0.0
    if todo:
        trainer = ChunkTrainer(
            setup,
            dataset,
            seed=cfg.seed,
            target=target,
            subset_size=cfg.subset_size,
            models_per_chunk=k,
            devices=devices,
        )
        compile_seconds = trainer.compile()
        chunks = _chunks(todo, k)
        # One step = one chunk per process; process p takes chunk step * n_proc + p.
        steps = [chunks[i : i + n_proc] for i in range(0, len(chunks), n_proc)]
        bars = Progress(progress and lead, len(chunks), cfg.epochs, setup.steps_per_epoch, k)
        t0 = time.perf_counter()
        try:
            for step in steps:
                mine = step[proc] if proc < len(step) else step[0]  # spare: result dropped
                result = trainer.run(mine, on_epoch=bars.epoch_done)
                for chunk, res in zip(step, _gather(result, k, n_proc), strict=False):
                    if lead:
                        store.save_chunk(chunk, res)
                    for i, job in enumerate(chunk):
                        done[job] = {f: getattr(res, f)[i] for f in CHUNK_FIELDS}
                    _stop_on_nonfinite(cfg, chunk, done)
                    bars.chunk_done(len(chunk))
        finally:
            bars.close()
            train_seconds = time.perf_counter() - t0
    if not lead:
        return None

    results, arrays = _assemble(cfg, dataset, target, done)
    n_trained = len(todo)
    results.update(
        {
            "compile_seconds": round(compile_seconds, 3),
            "train_seconds": round(train_seconds, 3),
            "models_trained": n_trained,
            "models_reused": reused,
            "models_per_second": round(n_trained / train_seconds, 4) if train_seconds else None,
            "image_steps_per_second": (
                round(n_trained * cfg.epochs * (cfg.subset_size + 0.5) / train_seconds, 1)
                if train_seconds
                else None
            ),
            "models_per_chunk": k,
            "devices": [str(d) for d in devices],
            "backend": platform,
            "conv": setup.conv,
            "strategy": setup.strategy,
            "results_hash": run_hash,
            "jaxmia_version": __version__,
        }
    )
    _write_products(cfg, dataset, target, run_dir, results, arrays)
    return results


def _broadcast(flags: np.ndarray, n_proc: int) -> np.ndarray:
    """Process 0's array, on every process."""
    if n_proc == 1:
        return flags
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(flags))


def _gather(result: ChunkResult, k: int, n_proc: int) -> list[ChunkResult]:
    """Every process's ChunkResult, in process order, on every process."""
    if n_proc == 1:
        return [result]
    from jax.experimental import multihost_utils

    n = len(result.target_loss)
    packed = {f: np.zeros((k, *getattr(result, f).shape[1:]), np.float32) for f in CHUNK_FIELDS}
    for f in CHUNK_FIELDS:
        packed[f][:n] = getattr(result, f)
    packed["n"] = np.array(n, np.int32)
    everyone = jax.tree.map(np.asarray, multihost_utils.process_allgather(packed))
    return [
        ChunkResult(**{f: everyone[f][p][: int(everyone["n"][p])] for f in CHUNK_FIELDS})
        for p in range(n_proc)
    ]


def _nonfinite(res: dict) -> str | None:
    """Where a job's losses stop being finite, or None when all are finite."""
    epochs = np.asarray(res["epoch_loss"])
    if not np.all(np.isfinite(epochs)):
        return f"in epoch {int(np.argmin(np.isfinite(epochs)))}"
    if not np.isfinite(res["target_loss"]):
        return "on the target"
    return None


def _stop_on_nonfinite(cfg: Config, jobs, done) -> None:
    if cfg.on_nonfinite != "stop":
        return
    for job in jobs:
        where = _nonfinite(done[job])
        if where:
            raise NonFiniteLoss(
                f"non-finite loss {where} for {_describe_job(job)} "
                "(lower lr, or set on_nonfinite: skip to leave such rounds out)"
            )


def _assemble(cfg, dataset, target, done):
    """Stacks per-job results into the loss arrays and computes the statistics."""
    all_jobs = calibration_jobs(cfg.n_iterations) + evaluation_jobs(cfg.eval_pairs)
    _stop_on_nonfinite(cfg, all_jobs, done)  # also catches such jobs read back from disk
    bad = {j for j in all_jobs if _nonfinite(done[j])}
    skipped = [_describe_job(j) for j in sorted(bad)]
    for what in skipped:
        print(f"jaxmia: warning: non-finite loss for {what}; left out", file=sys.stderr)

    def get(stream, n, field, member):
        return np.array([done[Job(stream, r, member)][field] for r in range(n)], np.float64)

    member = get(CALIBRATION, cfg.n_iterations, "target_loss", True)
    nonmember = get(CALIBRATION, cfg.n_iterations, "target_loss", False)
    ok = np.array(
        [
            Job(CALIBRATION, r, True) not in bad and Job(CALIBRATION, r, False) not in bad
            for r in range(cfg.n_iterations)
        ]
    )
    if not ok.any():
        raise NonFiniteLoss("every calibration round has a non-finite loss; nothing to fit")
    summary = stats.summarize(member[ok], nonmember[ok], cfg.alpha)

    eval_member = get(EVALUATION, cfg.eval_pairs, "target_loss", True)
    eval_nonmember = get(EVALUATION, cfg.eval_pairs, "target_loss", False)
    # Interleave IN, OUT per pair so the report reads pair by pair.
    eval_flags = np.tile([True, False], cfg.eval_pairs)
    eval_losses = np.stack([eval_member, eval_nonmember], axis=1).reshape(-1)
    evaluation = (
        stats.evaluate_predictions(eval_flags, eval_losses, summary["threshold"])
        if cfg.eval_pairs
        else None
    )

    train_acc = float(np.mean([done[j]["train_accuracy"] for j in all_jobs]))
    test_acc = float(np.mean([done[j]["test_accuracy"] for j in all_jobs]))

    results = {
        "dataset": cfg.dataset,
        "synthetic": dataset.synthetic,
        "target_index": target,
        "target_label": dataset.class_names[int(dataset.train_labels[target])],
        "n_iterations": cfg.n_iterations,
        "subset_size": cfg.subset_size,
        "epochs": cfg.epochs,
        "alpha": cfg.alpha,
        **summary,
        "evaluation": evaluation,
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "rounds_used": int(ok.sum()),
        "skipped": skipped,
        "seed": cfg.seed,
    }
    arrays = {
        "member_losses": member.astype(np.float32),
        "nonmember_losses": nonmember.astype(np.float32),
        "round_used": ok,
        "eval_member_losses": eval_member.astype(np.float32),
        "eval_nonmember_losses": eval_nonmember.astype(np.float32),
        "train_accuracy": np.array(
            [
                [done[Job(CALIBRATION, r, m)]["train_accuracy"] for m in (True, False)]
                for r in range(cfg.n_iterations)
            ],
            np.float32,
        ),
        "test_accuracy": np.array(
            [
                [done[Job(CALIBRATION, r, m)]["test_accuracy"] for m in (True, False)]
                for r in range(cfg.n_iterations)
            ],
            np.float32,
        ),
    }
    return results, arrays


def _write_products(cfg, dataset, target, run_dir: Path, results: dict, arrays: dict) -> None:
    suffix = " [SYNTHETIC DATA]" if dataset.synthetic else ""
    member, nonmember = arrays["member_losses"], arrays["nonmember_losses"]
    ok = arrays["round_used"]
    try:
        config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        if dataset.synthetic:
            config_text = "# SYNTHETIC DATA: not CIFAR\n" + config_text
        report.atomic_write_text(run_dir / "config.yaml", config_text)
        report.write_npz(run_dir / "losses.npz", synthetic=np.array(dataset.synthetic), **arrays)
        if cfg.save_plots:
            m_fit = stats.fit_gaussian(member[ok])
            n_fit = stats.fit_gaussian(nonmember[ok])
            plots.plot_histograms(
                run_dir / "single_point_mia_histograms.png",
                member[ok],
                nonmember[ok],
                threshold=results["threshold"],
                gaussian_member=m_fit,
                gaussian_nonmember=n_fit,
                title_suffix=suffix,
            )
            plots.plot_roc(
                run_dir / "roc.png", member[ok], nonmember[ok], alpha=cfg.alpha, title_suffix=suffix
            )
            plots.plot_target(
                run_dir / "target.png",
                dataset.train_images[target],
                label_name=results["target_label"],
                index=target,
                title_suffix=suffix,
            )
        report.write_json(run_dir / "results.json", results)
    except OSError as e:
        raise UserError(f"cannot write results to {run_dir}: {e.strerror or e}") from None
