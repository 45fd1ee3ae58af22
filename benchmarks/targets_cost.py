"""What many targets cost: the same M models scoring T = 1, 64 and 1,024 targets.

Each run is ``python -m jaxmia.run`` in its own process on the synthetic data
set (no download), with a warm compile cache after a first untimed run, and
reports its wall time and the run's own compile and training seconds.  A
model trains on the n base points plus about inclusion * T targets, so the
training work grows by inclusion * T / n; the scoring adds one forward pass of
T images per model.

    python benchmarks/targets_cost.py --models 8 --subset 2000 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from machine import cpu_name


def run_once(cfg: dict, workdir: Path, name: str) -> dict:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "jaxmia.run", "--no-progress", "--config", str(path)]
    cmd += ["--output-dir", str(workdir / "out"), "--fresh"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{name} failed: {proc.stderr.strip()[-500:]}")
    res = json.loads((workdir / "out" / name / "results.json").read_text())
    return {"wall": wall, "compile": res["compile_seconds"], "train": res["train_seconds"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--models", type=int, default=8)
    p.add_argument("--subset", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args()
    base = {
        "experiment": "targets",
        "dataset": "synthetic",
        "num_classes": 10,
        "n_models": args.models,
        "inclusion": 0.5,
        "eval_models": 0,
        "subset_size": args.subset,
        "epochs": args.epochs,
        "batch_size": 64,
        "lr": 0.01,
        "test_samples": 64,
        "save_plots": False,
        "seed": 0,
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ.setdefault("JAXMIA_CACHE_DIR", str(workdir / "xla"))
        rows = []
        for t in args.targets:
            cfg = {**base, "n_targets": t}
            run_once(cfg, workdir, f"t{t}")  # compiles; the timed run below reuses the cache
            rows.append((t, run_once(cfg, workdir, f"t{t}")))
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(f"M = {args.models} models, n = {args.subset} base points, {args.epochs} epoch(s)\n")
    print("| targets T | wall s | compile s | train + score s | vs T = 1 |")
    print("|---|---|---|---|---|")
    first = rows[0][1]["train"]
    for t, r in rows:
        ratio = r["train"] / first if first else float("nan")
        print(f"| {t:,} | {r['wall']:.1f} | {r['compile']:.1f} | {r['train']:.1f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
