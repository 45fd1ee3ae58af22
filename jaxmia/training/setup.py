"""The static side of training: ``TrainSetup``, fixed before anything is compiled.

Everything in a ``TrainSetup`` is a Python value (it is hashable and keys the
compile), made once per run by ``make_setup`` from the config, the data set
(its image shape and test-set size) and the plan (the shapes of the rows every
model trains on).  Arrays never enter it.
"""

from __future__ import annotations

import dataclasses

import optax

from jaxmia import privacy
from jaxmia.config import Config
from jaxmia.data import Dataset
from jaxmia.errors import UserError
from jaxmia.models import MODELS
from jaxmia.runs.plan import Plan
from jaxmia.training.dp import DPStep


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """Everything static about one model's training (hashable: it keys the compile)."""

    model: str  # a name in jaxmia.models.MODELS
    image_shape: tuple[int, int, int]  # (H, W, C) of the data set's images
    num_classes: int
    batch_size: int
    steps_per_epoch: int
    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    conv: str  # "xla" | "im2col" | "winograd"
    strategy: str  # "vmap" | "map"
    compute_dtype: str  # "float32" | "bfloat16"
    eval_batch: int  # images per forward pass when counting accuracies
    eval_batches: int  # test batches of eval_batch (the last one padded and masked)
    test_samples: int  # test images the test accuracy counts, exactly
    full_steps: int  # the first full_steps batches of an epoch always hold a real example
    score_batch: int  # scored images go through the network score_batch at a time
    score_batches: int  # S scored images padded to score_batches * score_batch
    dp: DPStep | None = None  # DP-SGD's step (training/dp.py); None: non-private training
    queries: int = 1  # views of each scored image (queries.py); 1: the plain image only

    @property
    def slots(self) -> int:
        return self.steps_per_epoch * self.batch_size


def resolve_backend_choices(cfg: Config, platform: str) -> tuple[str, str]:
    """(conv, strategy) for 'auto': the formulation measured fastest on that backend.

    CPU: Winograd for conv2 and im2col for conv1, mapped (benchmarks/README.md:
    1,362 against im2col's 1,112 image-steps/s side by side in one harness run).
    GPU: vmapped lax.conv until benchmarks/gpu_check.sh has measured it against
    vmapped im2col.
    """
    conv = cfg.conv
    strategy = cfg.strategy
    if conv == "auto":
        conv = "winograd" if platform == "cpu" else "xla"
    if strategy == "auto":
        strategy = "map" if platform == "cpu" else "vmap"
    return conv, strategy


# Scored images per forward pass: all of them up to this many (one pass for a
# single target or a few hundred targets), else batches of it.
MAX_SCORE_BATCH = 512
# Accuracy passes over the training rows and the test set: under lax.map one
# model is in memory at a time, and large batches make large, efficient GEMMs
# (the PyTorch baseline evaluates 500 at a time too); under vmap the whole
# chunk's activations are live at once, so they keep the training batch.
MAX_EVAL_BATCH = 512


def make_setup(cfg: Config, dataset: Dataset, platform: str, plan: Plan) -> TrainSetup:
    """The static training setup of ``cfg`` on ``dataset`` and ``platform``, for ``plan``'s rows.

    ``plan`` gives the row shapes (slots, the fewest real slots, images scored);
    ``dataset`` the image shape and the test-set size.  Raises UserError when
    the model of ``cfg.model`` takes another image shape than the data set has.
    """
    spec = MODELS[cfg.model]
    image_shape = dataset.image_shape
    if image_shape != spec.input_shape:
        raise UserError(
            f"model {cfg.model} takes {'x'.join(map(str, spec.input_shape))} images, the data "
            f"set {dataset.name} has {'x'.join(map(str, image_shape))} (H x W x C)"
        )
    if spec.has_batch_stats:
        raise ValueError(
            f"model {cfg.model} keeps batch statistics, which the training step does not update yet"
        )
    conv, strategy = resolve_backend_choices(cfg, platform)
    n_test = len(dataset.test_labels)
    n_eval = n_test if cfg.test_samples is None else cfg.test_samples
    b = cfg.batch_size
    slots, min_real, n_scored = plan.slots, plan.min_real, plan.n_scored
    score_batch = min(n_scored, MAX_SCORE_BATCH)
    eval_batch = b if strategy == "vmap" else max(b, min(MAX_EVAL_BATCH, slots, n_eval))
    return TrainSetup(
        model=cfg.model,
        image_shape=image_shape,
        num_classes=cfg.num_classes,
        batch_size=b,
        steps_per_epoch=slots // b,
        epochs=cfg.epochs,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        conv=conv,
        strategy=strategy,
        compute_dtype=cfg.compute_dtype,
        eval_batch=eval_batch,
        eval_batches=-(-n_eval // eval_batch),
        test_samples=n_eval,
        full_steps=-(-min_real // b),
        score_batch=score_batch,
        score_batches=-(-n_scored // score_batch),
        dp=_dp_step(cfg, slots, strategy),
        # A plan that scores augmented views says how many (the many-targets
        # plan's ``queries``); the others score the plain image.
        queries=getattr(plan, "queries", 1),
    )


def _dp_step(cfg: Config, slots: int, strategy: str) -> DPStep | None:
    """The DP-SGD step of ``cfg`` (privacy.mechanism), for rows of ``slots`` slots."""
    mech = privacy.mechanism(cfg)
    if mech is None:
        return None
    if mech.sampling == "poisson":
        return DPStep(
            l2_clip=mech.l2_clip,
            sampling="poisson",
            sampling_rate=mech.sampling_rate,
            steps_per_epoch=mech.steps_per_epoch,
            # No model has more real examples than slots: the buffer holds its sample
            # in one pass but for at most privacy.SECOND_PASS_PROBABILITY of the steps.
            buffer=mech.buffer_size(slots, strategy),
            expected_batch=float(mech.batch_size),
        )
    return DPStep(
        l2_clip=mech.l2_clip,
        sampling="shuffle",
        sampling_rate=mech.sampling_rate,
        steps_per_epoch=slots // cfg.batch_size,
        buffer=cfg.batch_size,
        expected_batch=None,
    )


def make_optimizer(setup: TrainSetup) -> optax.GradientTransformation:
    """SGD as torch.optim.SGD does it: grad + wd * param, then heavy-ball momentum."""
    sgd = optax.sgd(setup.lr, momentum=setup.momentum or None)
    if setup.weight_decay:
        return optax.chain(optax.add_decayed_weights(setup.weight_decay), sgd)
    return sgd
