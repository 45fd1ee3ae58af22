"""One training epoch of a chunk, per conv formulation, alternating: ms per step of one model.

    python benchmarks/explore/epoch_conv.py [--config configs/bench_cpu.yaml]
        [--convs im2col,winograd,winograd@vmap] [--k 8] [--reps 7]

Each formulation's compiled epoch (bench_cpu.yaml sizes: batch 64, n = 500, 100
classes) runs once to warm up, then the formulations take turns; the median
over reps is printed with the 1-minute load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

from jaxmia.config import load_config
from jaxmia.data import load_dataset
from jaxmia.kinds.single_target.plan import SingleTargetPlan, calibration_jobs
from jaxmia.training.chunk import ChunkTrainer
from jaxmia.training.setup import make_setup


def epoch_runner(cfg, ds, k):
    plan = SingleTargetPlan(
        seed=0,
        n_train=len(ds.train_labels),
        target=0,
        subset_size=cfg.subset_size,
        batch_size=cfg.batch_size,
    )
    setup = make_setup(cfg, ds, jax.default_backend(), plan)
    tr = ChunkTrainer(setup, ds, plan=plan, models_per_chunk=k)
    tr.compile()
    init_c, epoch_c, _ = tr._compiled
    rows = plan.rows(calibration_jobs(-(-k // 2))[:k])
    idx, mask, ids = (jax.device_put(a, tr._stacked) for a in rows)
    ep = jax.device_put(np.zeros((k,), np.int32), tr._stacked)
    box = [init_c(tr.data, ids)]

    def run() -> float:
        t0 = time.perf_counter()
        box[0], loss = epoch_c(tr.data, box[0], idx, mask, ids, ep)
        loss.block_until_ready()
        return (time.perf_counter() - t0) * 1e3 / (k * setup.steps_per_epoch)

    run()
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/bench_cpu.yaml")
    ap.add_argument("--convs", default="im2col,winograd")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    cfg = load_config(args.config)
    ds = load_dataset(cfg.dataset, "./datasets", num_classes=cfg.num_classes)
    k = max(args.k, len(jax.local_devices()))
    # "conv" or "conv@strategy", e.g. winograd,winograd@vmap
    runners = {}
    for c in args.convs.split(","):
        conv, _, strategy = c.partition("@")
        runners[c] = epoch_runner(cfg.replace(conv=conv, strategy=strategy or "auto"), ds, k)
    times = {c: [] for c in runners}
    load0 = os.getloadavg()[0]
    for _ in range(args.reps):
        for c, run in runners.items():
            times[c].append(run())
    load1 = os.getloadavg()[0]
    print(f"devices {len(jax.local_devices())}, k {k}, load {load0:.2f} -> {load1:.2f}")
    for c, t in times.items():
        med = statistics.median(t)
        print(f"{c:10s} {med:6.2f} ms/step  ({64e3 / med:5.0f} img-steps/s; min {min(t):.2f})")


if __name__ == "__main__":
    main()
