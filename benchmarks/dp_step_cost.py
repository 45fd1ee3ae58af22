"""DP-SGD's cost per model and step: jaxmia's private step against its non-private one,
against Opacus's DP-SGD and against plain PyTorch, on the same CNN, batch and CPU.

    python benchmarks/dp_step_cost.py [--n 500] [--batch 64] [--classes 100] [--rounds 7]

Each implementation trains one model for one epoch of ceil(n / B) steps (jaxmia:
its own ``train_epoch``, compiled once, exactly as a run calls it; DP-SGD with
Poisson sampling at q = B / (n + 1), clipping C = 1, sigma = 1; PyTorch: the
tuned baseline's step, and Opacus's ``GradSampleModule`` + ``DPOptimizer`` on
the same Poisson samples' sizes).  The four are timed in turn, round after
round, in a rotating order, so that a change of the machine's load falls on all
of them alike; the table gives each one's median milliseconds per step and its
ratio to jaxmia's non-private step.  The whole harness comparison (whole runs,
every model) is ``harness.py --config configs/bench_dp_cpu.yaml --modes
opacus,tuned --variant nodp:dp=null``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _dataset(n_train: int, classes: int):
    from jaxmia.data import Dataset

    rng = np.random.default_rng(0)
    labels = (np.arange(n_train) % classes).astype(np.int32)
    images = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    flat = images.reshape(-1, 3) / 255.0
    return Dataset(
        name="synthetic",
        train_images=images,
        train_labels=labels,
        test_images=images[:64],
        test_labels=labels[:64],
        class_names=tuple(str(c) for c in range(classes)),
        synthetic=True,
        fingerprint="dp-step-cost",
        mean=flat.mean(0).astype(np.float32),
        std=flat.std(0).astype(np.float32),
    )


def jaxmia_epochs(n: int, batch: int, classes: int):
    """(non-private epoch, private epoch, steps of each): callables that train one epoch."""
    import jax
    import jax.numpy as jnp

    from jaxmia.config import Config
    from jaxmia.kinds.single_target.plan import SingleTargetPlan, calibration_jobs
    from jaxmia.training.one_model import init_state, put_data, train_epoch
    from jaxmia.training.setup import make_setup

    ds = _dataset(n + 64, classes)
    out = []
    for dp in (None, {"noise_multiplier": 1.0, "l2_clip": 1.0}):
        cfg = Config(
            dataset="synthetic",
            num_classes=classes,
            subset_size=n,
            batch_size=batch,
            epochs=1,
            lr=0.01,
            momentum=0.9,
            test_samples=64,
            target_index=0,
            dp=dp,
        )
        plan = SingleTargetPlan(0, n + 64, 0, n, batch)
        setup = make_setup(cfg, ds, "cpu", plan)
        mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("models",))
        data = put_data(ds, setup, mesh)
        idx, mask, ids = plan.rows(calibration_jobs(1)[:1])
        state = init_state(setup, jnp.asarray(ids[0]), jnp.float32(1.0))
        epoch = jax.jit(train_epoch, static_argnums=0)
        args = (data, idx[0], mask[0], jnp.asarray(ids[0]))
        holder = {"state": state, "e": 0}

        def run(setup=setup, epoch=epoch, args=args, holder=holder):
            d, i, m, k = args
            holder["state"], loss = epoch(
                setup, d, holder["state"], i, m, k, jnp.int32(holder["e"])
            )
            holder["e"] += 1
            loss.block_until_ready()

        run()  # compile
        steps = setup.dp.steps_per_epoch if setup.dp else setup.steps_per_epoch
        out.append((run, steps, setup))
    return out


def torch_epochs(n: int, batch: int, classes: int):
    """(tuned epoch, Opacus epoch): one epoch each on the same data and step count."""
    import torch
    import torch.nn.functional as F
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pytorch_baseline import build_cnn

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + 1, 3, 32, 32, generator=g)
    y = torch.arange(n + 1) % classes
    steps = -(-(n + 1) // batch)
    q = batch / (n + 1)

    plain = build_cnn(classes).to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)

    def tuned():
        order = torch.randperm(n + 1, generator=g)
        for s in range(0, n + 1, batch):
            b = order[s : s + batch]
            loss = F.cross_entropy(plain(xc[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    gsm = GradSampleModule(build_cnn(classes), loss_reduction="mean")
    dp_opt = DPOptimizer(
        torch.optim.SGD(gsm.parameters(), lr=0.01, momentum=0.9),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=batch,
        loss_reduction="mean",
    )

    def opacus():
        for _ in range(steps):
            b = torch.nonzero(torch.rand(n + 1, generator=g) < q).flatten()
            if len(b) == 0:
                continue
            loss = F.cross_entropy(gsm(x[b]), y[b])
            dp_opt.zero_grad(set_to_none=True)
            loss.backward()
            dp_opt.step()

    tuned()
    opacus()  # warm up
    return (tuned, steps), (opacus, steps)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=500, help="training examples per model (x's OUT set)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--rounds", type=int, default=7)
    opts = p.parse_args(argv)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    (plain, s_plain, _), (private, s_private, setup) = jaxmia_epochs(
        opts.n, opts.batch, opts.classes
    )
    (tuned, s_tuned), (opacus, s_opacus) = torch_epochs(opts.n, opts.batch, opts.classes)
    impls = {
        "jaxmia non-private": (plain, s_plain),
        "jaxmia DP-SGD": (private, s_private),
        "pytorch-tuned (non-private)": (tuned, s_tuned),
        "pytorch-opacus (DP-SGD)": (opacus, s_opacus),
    }
    times = {k: [] for k in impls}
    names = list(impls)
    for r in range(opts.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, steps = impls[name]
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / steps * 1000)
    base = statistics.median(times["jaxmia non-private"])
    print(
        f"n = {opts.n}, B = {opts.batch}, {opts.classes} classes, {opts.rounds} rounds; "
        f"jaxmia's DP buffer {setup.dp.buffer} slots (q = {setup.dp.sampling_rate:.4f}); "
        f"load {os.getloadavg()}"
    )
    print("| implementation | ms per step and model (median) | min–max | vs jaxmia non-private |")
    print("|---|---|---|---|")
    for name in names:
        t = times[name]
        print(
            f"| {name} | {statistics.median(t):.0f} | {min(t):.0f}–{max(t):.0f} | "
            f"{statistics.median(t) / base:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
