"""The run folder: what identifies a run, and the finished chunks it has kept.

Layout of ``<output-dir>/<run-name>/``::

    run.json            the run's identity: results hash, config, data fingerprint
    chunks/             one .npz per finished chunk, written atomically
    config.yaml, results.json, losses.npz, *.png   the products (report.py)

A chunk file holds, per job, (stream, round, member) and that model's results.
Because every job depends on (seed, stream, round, member) alone, finished jobs
are reused whatever chunking or device count produced them, and growing
n_iterations or eval_pairs only trains the jobs not yet on disk.  A chunk file
that cannot be read back whole (killed mid-write, truncated, from another run)
is set aside and its jobs are trained again.  Nothing here imports JAX.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

from jaxmia.errors import UserError
from jaxmia.plan import Job

CHUNK_FIELDS = ("target_loss", "train_accuracy", "test_accuracy", "epoch_loss")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class RunStore:
    """One run folder.  ``open`` checks it belongs to this run before anything is written."""

    def __init__(self, run_dir: Path, run_hash: str):
        self.run_dir = Path(run_dir)
        self.run_hash = run_hash
        self.chunk_dir = self.run_dir / "chunks"

    @classmethod
    def open(cls, run_dir, run_hash: str, identity: dict, *, fresh: bool = False) -> RunStore:
        """Creates or re-opens a run folder; refuses one that holds another run's results."""
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"output path {run_dir} exists and is not a folder")
        parent = run_dir.parent
        if parent.exists() and not parent.is_dir():
            raise UserError(f"output path {parent} exists and is not a folder")
        meta_path = run_dir / "run.json"
        if meta_path.exists() and not fresh:
            try:
                old = json.loads(meta_path.read_text())
                old_hash = old["results_hash"]
            except (OSError, ValueError, KeyError, TypeError):
                raise UserError(
                    f"{meta_path} is unreadable; rerun with --fresh to start this run over"
                ) from None
            if old_hash != run_hash:
                raise UserError(
                    f"{run_dir} holds a run with a different configuration (hash {old_hash}, "
                    f"this one {run_hash}); choose another --run-name or --output-dir, "
                    f"or pass --fresh to replace it"
                )
        store = cls(run_dir, run_hash)
        try:
            if fresh and run_dir.exists():
                shutil.rmtree(run_dir)
            store.chunk_dir.mkdir(parents=True, exist_ok=True)
            for stale in store.chunk_dir.glob(".*.tmp-*"):
                stale.unlink(missing_ok=True)
            body = {"results_hash": run_hash, **identity}
            _atomic_write(meta_path, (json.dumps(body, indent=2) + "\n").encode())
        except OSError as e:
            raise UserError(f"cannot write to {run_dir}: {e.strerror or e}") from None
        return store

    # ------------------------------------------------------------------ chunks

    def save_chunk(self, jobs: list[Job], result) -> Path:
        """Writes one finished chunk (a train.ChunkResult for these jobs) atomically."""
        first, last = jobs[0], jobs[-1]
        name = (
            f"chunk-s{first.stream}-r{first.round:07d}m{int(first.member)}"
            f"-r{last.round:07d}m{int(last.member)}.npz"
        )
        arrays = {
            "run_hash": np.array(self.run_hash),
            "stream": np.array([j.stream for j in jobs], np.int32),
            "round": np.array([j.round for j in jobs], np.int64),
            "member": np.array([j.member for j in jobs], bool),
        }
        for field in CHUNK_FIELDS:
            arrays[field] = np.asarray(getattr(result, field))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path = self.chunk_dir / name
        try:
            _atomic_write(path, buf.getvalue())
        except OSError as e:
            raise UserError(f"cannot write chunk to {self.chunk_dir}: {e.strerror or e}") from None
        return path

    def load_jobs(self) -> dict[Job, dict[str, np.ndarray]]:
        """Every job finished on disk -> its results; unreadable chunk files are set aside."""
        done: dict[Job, dict[str, np.ndarray]] = {}
        for path in sorted(self.chunk_dir.glob("chunk-*.npz")):
            try:
                with np.load(path, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                if str(arrays["run_hash"]) != self.run_hash:
                    raise ValueError("written by a different run")
                n = len(arrays["round"])
                for field in ("stream", "member", *CHUNK_FIELDS):
                    if arrays[field].shape[:1] != (n,):
                        raise ValueError(f"field {field} has the wrong length")
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                bad = path.with_name(path.name + ".corrupt")
                print(
                    f"jaxmia: warning: {path} is damaged ({e}); its models are trained again",
                    file=sys.stderr,
                )
                os.replace(path, bad)
                continue
            for i in range(n):
                job = Job(
                    int(arrays["stream"][i]), int(arrays["round"][i]), bool(arrays["member"][i])
                )
                done[job] = {field: arrays[field][i] for field in CHUNK_FIELDS}
        return done
