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
    nesterov: bool
    lr_schedule: str  # "constant" | "cosine" | "onecycle"
    warmup_epochs: float
    label_smoothing: float
    augment: str  # one of training.augment.AUGMENTATIONS
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

    @property
    def updates_per_epoch(self) -> int:
        """Optimizer steps per epoch: DP-SGD's Poisson steps, else one per batch of slots."""
        return self.steps_per_epoch if self.dp is None else self.dp.steps_per_epoch


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
        nesterov=cfg.nesterov,
        lr_schedule=cfg.lr_schedule,
        warmup_epochs=float(cfg.warmup_epochs),
        label_smoothing=float(cfg.label_smoothing),
        augment=cfg.augment,
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


def make_optimizer(setup: TrainSetup, lr=None) -> optax.GradientTransformation:
    """SGD as torch.optim.SGD does it: grad + wd * param, then momentum (heavy-ball or Nesterov).

    ``lr`` is this step's learning rate (``step_lr``); None means the constant
    ``setup.lr``.  The state does not depend on it, so one ``init`` serves every step.
    """
    sgd = optax.sgd(
        setup.lr if lr is None else lr,
        momentum=setup.momentum or None,
        nesterov=setup.nesterov,
    )
    if setup.weight_decay:
        return optax.chain(optax.add_decayed_weights(setup.weight_decay), sgd)
    return sgd


def make_schedule(setup: TrainSetup) -> optax.Schedule | None:
    """The learning rate of ``setup`` as a function of the global step (``lr_schedule``)."""
    return lr_schedule(
        setup.lr_schedule, setup.lr, setup.warmup_epochs, setup.epochs, setup.updates_per_epoch
    )


def lr_schedule(
    kind: str, lr: float, warmup_epochs: float, epochs: int, steps_per_epoch: int
) -> optax.Schedule | None:
    """The learning rate as a function of the global step (epoch * steps_per_epoch + batch).

    None for a constant rate without warm-up (the seed's training, which keeps
    its Python-float rate).  Otherwise, with W = warmup_epochs * steps_per_epoch
    steps (rounded) and T = epochs * steps_per_epoch (a model with an empty last batch
    skips that step; the schedule still counts it), from optax:

    * ``constant``: linear warm-up from 0 over W steps, then ``lr``;
    * ``cosine``: ``optax.warmup_cosine_decay_schedule(0, lr, W, T, 0)``: the
      warm-up, then lr * (1 + cos(pi t / (T - W))) / 2 down to 0 at the end;
    * ``onecycle``: ``optax.cosine_onecycle_schedule(T, lr, pct_start)``, the
      1cycle policy of Smith & Topin 2019 with torch's OneCycleLR defaults:
      from lr/25 up to lr over W steps (pct_start = W / T; 0.3 of the steps
      when warmup_epochs is 0), then cosine down to lr/25/1e4 (momentum is
      not cycled).

    A step's rate depends on its position in the training alone, so an IN and
    an OUT model take the same rate at the same step even where one of them
    skips an empty last batch.  The PyTorch baseline takes its rates from here
    too.  Raises ValueError for an unknown ``kind``.
    """
    if kind == "constant" and not warmup_epochs:
        return None
    total = epochs * steps_per_epoch
    warm = min(round(warmup_epochs * steps_per_epoch), total - 1)
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warm, total, end_value=0.0)
    if kind == "onecycle":
        return optax.cosine_onecycle_schedule(total, lr, pct_start=warm / total if warm else 0.3)
    if kind == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warm), optax.constant_schedule(lr)], [warm]
        )
    raise ValueError(f"unknown lr_schedule {kind!r}")


def step_lr(setup: TrainSetup, step):
    """The learning rate of global step ``step`` (int32 scalar), or None for the constant lr."""
    schedule = make_schedule(setup)
    return None if schedule is None else schedule(step)
