"""Where one CPU training step goes: jaxmia's compiled epoch against tuned PyTorch, per layer.

    python benchmarks/explore/layer_profile.py [--config configs/bench_cpu.yaml]

jaxmia: a jax.profiler trace of a few compiled epochs of one chunk, each XLA op
assigned to a layer through its HLO metadata (``transpose(...)`` ops are the
backward pass).  PyTorch: torch.profiler over the tuned baseline's step
(channels_last, all cores, the same batch size and optimizer), grouped by aten op.
Both are reported in milliseconds per training step of one model.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from jaxmia.config import load_config
from jaxmia.data import load_dataset
from jaxmia.kinds.single_target.plan import SingleTargetPlan, calibration_jobs
from jaxmia.training.chunk import ChunkTrainer
from jaxmia.training.setup import make_setup

LAYERS = ("conv1", "conv2", "fc1", "fc2")


def _layer(op_name: str) -> str:
    for name in LAYERS:
        if f"/{name}/" in op_name:
            return name
    if "SmallCNN" in op_name:
        return "relu/pool/flatten"
    if "cross_entropy" in op_name or "log_softmax" in op_name or "_masked" in op_name:
        return "loss"
    return "optimizer/data/other"


def profile_jaxmia(cfg, epochs: int = 3) -> tuple[float, dict[str, float]]:
    ds = load_dataset(cfg.dataset, "./datasets", num_classes=cfg.num_classes)
    k = len(jax.local_devices())
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
    jobs = calibration_jobs(-(-k // 2))[:k]
    rows = plan.rows(jobs)
    idx, mask, ids = (jax.device_put(a, tr._stacked) for a in rows)
    state = init_c(tr.data, ids)
    ep = jax.device_put(np.zeros((k,), np.int32), tr._stacked)
    state, loss = epoch_c(tr.data, state, idx, mask, ids, ep)
    loss.block_until_ready()
    op_names = dict(re.findall(r"%?([\w.\-]+) = [^\n]*?op_name=\"([^\"]+)\"", epoch_c.as_text()))
    t0 = time.perf_counter()
    for _ in range(epochs):
        state, loss = epoch_c(tr.data, state, idx, mask, ids, ep)
        loss.block_until_ready()
    steps = epochs * k * setup.steps_per_epoch
    wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(epochs):
                state, loss = epoch_c(tr.data, state, idx, mask, ids, ep)
                loss.block_until_ready()
        path = glob.glob(f"{d}/**/*perfetto_trace.json.gz", recursive=True)[0]
        events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    per_layer: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e["name"] in op_names:
            op = op_names[e["name"]]
            key = f"{_layer(op)} {'backward' if 'transpose(' in op else 'forward'}"
            per_layer[key] += e["dur"] / 1e3 / steps
    return wall_ms, dict(per_layer)


def profile_torch(cfg, n: int = 40) -> tuple[float, dict[str, float]]:
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pytorch_baseline import init_model, make_sgd

    torch.set_num_threads(os.cpu_count())
    model = init_model(cfg.num_classes, 0).to(memory_format=torch.channels_last)
    opt = make_sgd(cfg, model.parameters())
    x = torch.randn(512, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, cfg.num_classes, (512,))
    g = torch.Generator().manual_seed(0)

    def step():
        b = torch.randint(0, 512, (cfg.batch_size,), generator=g)
        loss = F.cross_entropy(model(x[b]), y[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(10):
        step()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    wall_ms = (time.perf_counter() - t0) * 1e3 / n
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    ops = {e.key: e.self_cpu_time_total / 1e3 / n for e in prof.key_averages()}
    return wall_ms, dict(sorted(ops.items(), key=lambda kv: -kv[1])[:14])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/bench_cpu.yaml")
    ap.add_argument("--no-torch", action="store_true")
    a = ap.parse_args()
    cfg = load_config(a.config)
    wall, layers = profile_jaxmia(cfg)
    print(
        f"jaxmia: {wall:.2f} ms per step unprofiled ({cfg.batch_size / wall * 1e3:.0f} img-steps/s)"
    )
    print(f"  traced ops, sum {sum(layers.values()):.2f} ms per step:")
    for key, ms in sorted(layers.items(), key=lambda kv: -kv[1]):
        print(f"    {key:32s} {ms:6.2f}")
    if not a.no_torch:
        wall, ops = profile_torch(cfg)
        print(
            f"pytorch-tuned: {wall:.2f} ms per step ({cfg.batch_size / wall * 1e3:.0f} img-steps/s)"
        )
        print("  top aten ops (self time), ms per step:")
        for key, ms in ops.items():
            print(f"    {key:40s} {ms:6.2f}")


if __name__ == "__main__":
    main()
