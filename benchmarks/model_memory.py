"""Memory per model of each network: jaxmia's estimate and a compiled chunk's measurement.

    python benchmarks/model_memory.py [--models cnn,wrn28_2,resnet9] [--batch 64] [--measure]

For each model it prints ``training.memory.model_footprint_bytes`` (from
``jax.eval_shape``: parameters, optimizer state, batch statistics, gradients,
the VJP's residuals of one batch, the batch) at batch 64 and 256, in float32 and
bfloat16: what ``models_per_chunk: auto`` divides a GPU's memory by.  With
``--measure`` it also compiles a vmapped chunk's training epoch (lax.conv) for
k = 1 and k = 3 models at ``--batch`` and reports the per-model growth of XLA's
``memory_analysis()`` (arguments + outputs + temporaries - donated aliases; the
replicated data set cancels out), the figure tests/test_formulations.py checks
the estimate against.  Synthetic data, 10 classes (100 for the CNN).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import jax

from jaxmia.config import Config
from jaxmia.data import load_dataset
from jaxmia.kinds.single_target.plan import SingleTargetPlan
from jaxmia.models import MODELS
from jaxmia.training.chunk import ChunkTrainer
from jaxmia.training.memory import model_footprint_bytes
from jaxmia.training.setup import make_setup

MIB = 2**20


def setup_for(model: str, batch: int, dtype: str, dataset):
    classes = 100 if model == "cnn" else 10
    cfg = Config(
        dataset="synthetic",
        num_classes=classes,
        model=model,
        batch_size=batch,
        subset_size=4 * batch - 1,
        compute_dtype=dtype,
        strategy="vmap",
        conv="xla",
        test_samples=batch,
    )
    plan = SingleTargetPlan(0, len(dataset.train_labels), 0, cfg.subset_size, batch)
    return cfg, plan, make_setup(cfg, dataset, "gpu", plan)


def measured_bytes(setup, dataset, plan) -> float:
    """Per-model growth of a compiled vmapped epoch from 1 to 3 models (bytes)."""
    total = {}
    setup = dataclasses.replace(setup, strategy="vmap")
    for k in (1, 3):
        trainer = ChunkTrainer(
            setup, dataset, plan=plan, models_per_chunk=k, devices=jax.local_devices()[:1]
        )
        trainer.compile()
        ma = trainer._compiled[1].memory_analysis()
        total[k] = (
            ma.argument_size_in_bytes
            + ma.output_size_in_bytes
            + ma.temp_size_in_bytes
            - ma.alias_size_in_bytes
        )
    return (total[3] - total[1]) / 2


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch", type=int, default=64, help="batch of the --measure compile")
    p.add_argument("--measure", action="store_true", help="also compile and measure (slow)")
    args = p.parse_args(argv)
    dataset = load_dataset("synthetic", "./datasets", num_classes=10)
    print("| model | parameters | estimate b64 f32 | b64 bf16 | b256 f32 | b256 bf16 (MiB) |")
    print("|---|---|---|---|---|---|")
    for model in args.models.split(","):
        cells = []
        for batch in (64, 256):
            for dtype in ("float32", "bfloat16"):
                _, _, setup = setup_for(model, batch, dtype, dataset)
                cells.append(f"{model_footprint_bytes(setup) / MIB:.0f}")
        classes = 100 if model == "cnn" else 10
        print(
            f"| {model} | {MODELS[model].parameter_count(classes):,} | " + " | ".join(cells) + " |"
        )
        sys.stdout.flush()
    if args.measure:
        print("\n| model | batch | estimate MiB | compiled vmapped epoch, per model MiB |")
        print("|---|---|---|---|")
        for model in args.models.split(","):
            _, plan, setup = setup_for(model, args.batch, "float32", dataset)
            measured = measured_bytes(setup, dataset, plan)
            estimate = model_footprint_bytes(setup)
            print(f"| {model} | {args.batch} | {estimate / MIB:.0f} | {measured / MIB:.0f} |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
