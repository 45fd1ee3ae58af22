"""What query views cost: the scoring pass of one chunk of models with Q = 1, 2 and 18 queries.

The scoring pass is the compiled evaluation stage of ``ChunkTrainer`` (the scored
images under every view, then the accuracies over the model's training rows and
the test set), timed on freshly initialised models: the arithmetic does not
depend on what the weights are, so no training is needed.  Each Q is compiled
once, then timed ``--repeats`` times, alternating between the Q values so that a
change in the machine's load hits them alike; the median is reported.  The size
on disk is that of the logits a run keeps per model (float32, uncompressed
npz): 4 bytes x C classes x Q queries per scored image.

    python benchmarks/query_cost.py --targets 64 --population 256 --classes 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, nargs="+", default=[1, 2, 18])
    p.add_argument("--targets", type=int, default=64)
    p.add_argument("--population", type=int, default=256)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--models", type=int, default=4, help="models per chunk")
    p.add_argument("--subset", type=int, default=500)
    p.add_argument("--test-samples", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    import jax
    from targets_cost import cpu_name

    from jaxmia.config import Config
    from jaxmia.data import load_dataset
    from jaxmia.kinds.targets.plan import TargetsPlan, draw_targets
    from jaxmia.runs.plan import Job
    from jaxmia.training.chunk import ChunkTrainer
    from jaxmia.training.setup import make_setup

    data = load_dataset("synthetic", "unused", num_classes=args.classes)
    n_train = len(data.train_labels)
    targets = tuple(draw_targets(0, n_train, args.targets).tolist())
    cfg = Config(
        experiment="targets",
        targets=list(targets),
        dataset="synthetic",
        num_classes=args.classes,
        subset_size=args.subset,
        test_samples=args.test_samples,
    )
    platform = jax.devices()[0].platform
    jobs = [Job(0, m, False) for m in range(args.models)]
    runs = {}
    for q in args.queries:
        plan = TargetsPlan(
            0, n_train, targets, args.subset, cfg.batch_size, 0.5, q, args.population
        )
        setup = make_setup(cfg, data, platform, plan)
        trainer = ChunkTrainer(setup, data, plan=plan, models_per_chunk=args.models)
        trainer.compile()
        init_c, _, eval_c = trainer._compiled
        idx, mask, ids = plan.rows(jobs)
        scored = np.zeros((args.models, setup.score_batches * setup.score_batch), np.int32)
        scored[:, : plan.n_scored] = plan.scored_rows(jobs)
        put = jax.device_put
        args_on_device = [put(a, trainer._stacked) for a in (idx, mask, ids, scored)]
        state = init_c(trainer.data, args_on_device[2])
        jax.block_until_ready(eval_c(trainer.data, state, *(args_on_device[i] for i in (0, 1, 3))))

        def once(state=state, eval_c=eval_c, trainer=trainer, a=args_on_device):
            t0 = time.perf_counter()
            jax.block_until_ready(eval_c(trainer.data, state, a[0], a[1], a[3]))
            return time.perf_counter() - t0

        runs[q] = {"once": once, "times": [], "setup": setup, "compile": trainer.compile_seconds}
    for _ in range(args.repeats):  # alternate: the load changes every Q alike
        for q in args.queries:
            runs[q]["times"].append(runs[q]["once"]())

    scored_images = args.targets + args.population
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(
        f"{args.models} models per chunk, {args.targets} targets + {args.population} population "
        f"points, C = {args.classes}, accuracy over {args.subset}+ training rows and "
        f"{args.test_samples} test images; median of {args.repeats}\n"
    )
    print("| Q | scoring pass s (chunk) | per model s | vs Q = 1 | logits on disk per model |")
    print("|---|---|---|---|---|")
    first = statistics.median(runs[args.queries[0]]["times"])
    for q in args.queries:
        t = statistics.median(runs[q]["times"])
        size = 4 * args.classes * q * scored_images
        print(
            f"| {q} | {t:.3f} | {t / args.models:.3f} | {t / first:.2f}x | {size / 1024:.0f} KiB |"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
