"""DP-SGD on the host side: the ``dp:`` mapping, the mechanism's parameters and the canaries.

The ``dp:`` key of the config is one nested mapping (README, "Auditing DP-SGD"):

    dp:
      noise_multiplier: 1.0        # sigma >= 0, or a list [0.5, 1, 2, 4]: one run, several levels
      l2_clip: 1.0                 # C > 0 (null or .inf: no clipping, only with sigma 0)
      sampling: poisson            # poisson (what the accountant assumes) or shuffle
      delta: null                  # the accountant's delta; null: 1 / (2 n)

``check_dp`` validates it (one line per mistake, an unknown sub-key named with
the closest one) and ``normalize_dp`` gives the one spelling the config keeps,
so that two spellings of one mechanism hash alike.  ``Mechanism`` holds what
the accountant and the training step need: q, the steps, delta, the Poisson
buffer.  ``noise_multipliers`` says which sigma each model trains with: the
models a kind groups together (a single-target round's IN and OUT model, a
many-targets block) share one, and group g trains at level ``g mod L``.

``canary: mislabeled`` gives each target (x, or the T targets) a label other
than its own, drawn from (seed, target) alone by the registered host stream
``CANARY``: a worst-case point for an audit.

Standard library at import; scipy only where the buffer is sized.  No JAX.
"""

from __future__ import annotations

import dataclasses
import difflib
import math

import numpy as np

from jaxmia.errors import UserError, show
from jaxmia.runs.plan import seed_sequence, stream

__all__ = [
    "AUDIT_FIGURE",
    "CANARIES",
    "CANARY",
    "DP_KEYS",
    "SAMPLINGS",
    "SECOND_PASS_PROBABILITY",
    "Mechanism",
    "canary_labels",
    "check_dp",
    "mechanism",
    "mislabel",
    "noise_levels",
    "noise_multipliers",
    "normalize_dp",
    "privacy_block",
    "ratio",
    "trained_labels",
]

AUDIT_FIGURE = "privacy_audit.png"  # drawn by audit_figures.py for a DP-SGD run
SAMPLINGS = ("poisson", "shuffle")
CANARIES = ("none", "mislabeled")
DP_KEYS = ("noise_multiplier", "l2_clip", "sampling", "delta")
MAX_LEVELS = 64  # noise levels in one run: more is a typo, not a sweep
MAX_SIGMA = 1e6
# Per step, the probability that a Poisson sample needs a second pass through the
# fixed-size buffer (never a lost example: training/dp.py loops until every sampled
# example has been seen).  Under vmap every model waits for the slowest, so 1e-6
# keeps the second pass rare for hundreds of models; under lax.map (CPU) a model
# pays only for its own passes, and a smaller buffer that needs a second pass in
# 1% of the steps computes fewer empty slots.
SECOND_PASS_PROBABILITY = {"vmap": 1e-6, "map": 1e-2}

# (target,): the label a mislabeled canary gets.
CANARY = stream(16, "canary", 1)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _as_float(v):
    """A YAML number, or a string YAML 1.1 leaves unparsed (1e-5), as a float; else v."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return float(v) if _number(v) else v


def check_dp(name: str, v) -> None:
    """The check of the ``dp`` key: null, or a mapping of DP_KEYS; UserError with one line."""
    if v is None:
        return
    if not isinstance(v, dict):
        raise UserError(
            f"{name} must be a mapping (noise_multiplier, l2_clip, sampling, delta) or null, "
            f"got {show(v)}"
        )
    for key in v:
        if key not in DP_KEYS:
            close = difflib.get_close_matches(show(key), DP_KEYS, n=1, cutoff=0.0)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{name}: unknown key {show(key)}{hint}")
    if "noise_multiplier" not in v:
        raise UserError(f"{name}.noise_multiplier is required (sigma >= 0, or a list of them)")
    sigma = v["noise_multiplier"]
    levels = sigma if isinstance(sigma, list) else [sigma]
    what = f"a number in [0, {MAX_SIGMA:g}] or a non-empty list of them (at most {MAX_LEVELS})"
    if not levels or len(levels) > MAX_LEVELS:
        raise UserError(f"{name}.noise_multiplier must be {what}, got {show(sigma)}")
    for s in levels:
        s = _as_float(s)
        if not _number(s) or not 0 <= s <= MAX_SIGMA:
            raise UserError(f"{name}.noise_multiplier must be {what}, got {show(sigma)}")
    floats = [_as_float(s) for s in levels]
    if len(set(floats)) != len(floats):
        raise UserError(f"{name}.noise_multiplier must not repeat a level, got {show(sigma)}")
    clip = _as_float(v.get("l2_clip", 1.0))
    if clip is not None and (not _number(clip) or math.isnan(clip) or clip <= 0):
        raise UserError(
            f"{name}.l2_clip must be a number > 0 (null or .inf: no clipping), got "
            f"{show(v.get('l2_clip'))}"
        )
    if (clip is None or math.isinf(clip)) and any(s > 0 for s in floats):
        raise UserError(
            f"{name}.l2_clip must be finite when noise_multiplier > 0 (the noise is "
            f"sigma * C), got {show(v.get('l2_clip'))}"
        )
    sampling = v.get("sampling", "poisson")
    if sampling not in SAMPLINGS:
        raise UserError(
            f"{name}.sampling must be one of {', '.join(SAMPLINGS)}; got {show(sampling)}"
        )
    delta = _as_float(v.get("delta"))
    if delta is not None and (not _number(delta) or not 0 < delta < 1):
        raise UserError(
            f"{name}.delta must be in (0, 1) or null (1/(2n)), got {show(v.get('delta'))}"
        )


def normalize_dp(v):
    """The one spelling of a checked ``dp`` mapping: every key, floats, and C = ∞ as null.

    A single level stays a float and a list stays a list (in its order, which
    decides which models get which level).
    """
    if v is None:
        return None
    sigma = v["noise_multiplier"]
    clip = _as_float(v.get("l2_clip", 1.0))
    delta = _as_float(v.get("delta"))
    return {
        "noise_multiplier": [_as_float(s) for s in sigma]
        if isinstance(sigma, list)
        else _as_float(sigma),
        "l2_clip": None if clip is None or math.isinf(clip) else clip,
        "sampling": v.get("sampling", "poisson"),
        "delta": delta,
    }


def noise_levels(dp: dict) -> tuple[float, ...]:
    """The noise multipliers of a normalized ``dp`` mapping, in its order."""
    sigma = dp["noise_multiplier"]
    return tuple(sigma) if isinstance(sigma, list) else (sigma,)


def noise_multipliers(cfg, jobs) -> np.ndarray:
    """float32[K]: the sigma each job's model trains with (0 without ``dp``).

    The kind says which models form one group (``Kind.noise_group``: a
    single-target round, a many-targets block of b models); group g trains at
    level g mod L of the L levels, so a group's models share sigma, and the
    levels take turns whatever the number of models.
    """
    if cfg.dp is None:
        return np.zeros(len(jobs), np.float32)
    levels = noise_levels(cfg.dp)
    kind = cfg.kind
    return np.array(
        [levels[kind.noise_group(cfg, j) % len(levels)] for j in jobs], np.float32
    ).reshape(len(jobs))


@dataclasses.dataclass(frozen=True)
class Mechanism:
    """The DP-SGD mechanism of a run, as the accountant and the training step see it.

    Attributes:
      noise_multipliers: the L levels sigma (the noise is N(0, sigma² C² I) per step).
      l2_clip: C, the per-example gradient norm bound (inf: no clipping).
      sampling: "poisson" (each example joins a step's batch with probability q,
        independently: what the accountant assumes) or "shuffle" (fixed batches of
        a random order, the non-private path's; the accountant's numbers are then
        not a guarantee).
      dataset_size: n, the training examples of the largest neighbouring data set.
      batch_size: B = q·n, the expected batch size the noisy sum is divided by.
      epochs: passes; a Poisson epoch is ceil(n / B) steps.
      delta: the accountant's δ (the config's, else 1/(2n)).
    """

    noise_multipliers: tuple[float, ...]
    l2_clip: float
    sampling: str
    dataset_size: int
    batch_size: int
    epochs: int
    delta: float

    @property
    def sampling_rate(self) -> float:
        """q = B / n."""
        return self.batch_size / self.dataset_size

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.dataset_size // self.batch_size)

    @property
    def steps(self) -> int:
        """Noisy steps of one model: epochs · ceil(n / B)."""
        return self.epochs * self.steps_per_epoch

    def buffer_size(self, max_examples: int, strategy: str = "vmap") -> int:
        """Slots of the fixed-shape batch buffer of a Poisson step (a multiple of 8).

        The smallest b with P(Bin(max_examples, q) > b) <= p, p =
        SECOND_PASS_PROBABILITY[strategy], so that a model with at most
        ``max_examples`` real examples needs a second pass through the buffer in
        at most that share of its steps; at least the batch size, at most
        ``max_examples`` rounded up.
        """
        from scipy import stats as sps

        q = min(self.sampling_rate, 1.0)
        b = int(sps.binom.isf(SECOND_PASS_PROBABILITY[strategy], max_examples, q))
        b = min(max(b, self.batch_size), max_examples)
        return max(8, -(-b // 8) * 8)


def dataset_size(cfg) -> int:
    """n: the training examples of the larger of two neighbouring data sets of a model.

    The kind's mean training-set size rounded up: a single-target IN model's
    n + 1, a many-targets model's base points plus its expected share of the
    targets, a population model's members.
    """
    return math.ceil(cfg.kind.examples_per_model(cfg))


def mechanism(cfg) -> Mechanism | None:
    """The DP-SGD mechanism of ``cfg`` (None without ``dp``)."""
    if cfg.dp is None:
        return None
    n = dataset_size(cfg)
    clip = cfg.dp["l2_clip"]
    delta = cfg.dp["delta"]
    return Mechanism(
        noise_multipliers=noise_levels(cfg.dp),
        l2_clip=math.inf if clip is None else float(clip),
        sampling=cfg.dp["sampling"],
        dataset_size=n,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        delta=float(delta) if delta is not None else 1.0 / (2 * n),
    )


# ---------------------------------------------------------------- canaries


def canary_labels(seed: int, targets, labels, num_classes: int) -> np.ndarray:
    """int32[T]: for each target a label other than its own, drawn from (seed, target) alone.

    Uniform over the num_classes - 1 other classes (stream ``CANARY``), so a
    target's canary label does not depend on which other targets the run has.
    """
    out = np.empty(len(targets), np.int32)
    for i, (t, y) in enumerate(
        zip(np.asarray(targets).tolist(), np.asarray(labels).tolist(), strict=True)
    ):
        rng = np.random.default_rng(seed_sequence(seed, CANARY, t))
        out[i] = (int(y) + 1 + int(rng.integers(num_classes - 1))) % num_classes
    return out


def trained_labels(cfg, targets, labels, num_classes: int) -> np.ndarray:
    """int32[T]: the labels the targets are trained and scored with under ``cfg.canary``.

    ``labels`` are their own labels; ``mislabeled`` replaces them by ``canary_labels``.
    """
    labels = np.asarray(labels, np.int32)
    if cfg.canary == "mislabeled":
        return canary_labels(cfg.seed, targets, labels, num_classes)
    return labels.copy()


def mislabel(cfg, dataset):
    """The data set the models of ``cfg`` train on: ``dataset`` with the kind's canaries
    (``Kind.canaries``) relabelled as ``cfg.canary`` says (unchanged for ``none``).

    The images and every other label stay as they are, and so does the data's
    fingerprint (the ``canary`` key is in the run hash).
    """
    if cfg.canary == "none":
        return dataset
    targets = np.asarray(cfg.kind.canaries(cfg), np.int64)
    labels = np.array(dataset.train_labels, np.int32, copy=True)
    labels[targets] = trained_labels(cfg, targets, labels[targets], len(dataset.class_names))
    labels.flags.writeable = False
    return dataclasses.replace(dataset, train_labels=labels)


# ---------------------------------------------------------------- results.json's privacy block

MECHANISM_TEXT = (
    "DP-SGD (Abadi et al. 2016): per-example gradients clipped to L2 norm C, summed, "
    "N(0, sigma^2 C^2 I) added, divided by the expected batch size q*n"
)


def privacy_block(mech: Mechanism, confidence: float) -> tuple[dict, list[str]]:
    """results.json's ``privacy`` block without the empirical bounds, and its warnings.

    Per noise level the accountant's ε at the run's δ (attack/accounting.py, RDP
    and PLD); the kinds' analyses add their empirical bounds to each level
    (``add_bounds``).
    """
    from jaxmia.attack.accounting import dp_sgd_epsilon

    warnings = []
    if mech.sampling != "poisson":
        warnings.append(
            "dp.sampling is shuffle: the accountant's epsilon assumes Poisson sampling and is "
            "not a guarantee for these models"
        )
    levels = []
    for sigma in mech.noise_multipliers:
        eps = dp_sgd_epsilon(min(mech.sampling_rate, 1.0), sigma, mech.steps, mech.delta)
        if sigma == 0:
            warnings.append(
                "noise_multiplier 0: no noise, so no finite epsilon (the accountant's is null)"
            )
        levels.append({"noise_multiplier": sigma, "epsilon": eps})
    block = {
        "mechanism": MECHANISM_TEXT,
        "sampling": mech.sampling,
        "noise_multipliers": list(mech.noise_multipliers),
        "l2_clip": mech.l2_clip if math.isfinite(mech.l2_clip) else None,
        "sampling_rate": mech.sampling_rate,
        "dataset_size": mech.dataset_size,
        "expected_batch_size": mech.batch_size,
        "epochs": mech.epochs,
        "steps": mech.steps,
        "delta": mech.delta,
        "accountant": "dp-accounting: RDP (integer orders 2-1024) and PLD (discretisation 1e-4), "
        "Poisson-subsampled Gaussian composed over the steps",
        "confidence": confidence,
        "levels": levels,
    }
    return block, warnings


def ratio(epsilon_lb, epsilon) -> float | None:
    """ε_lb / ε (the accountant's PLD ε): how much of the claimed ε the audit shows."""
    if epsilon_lb is None or epsilon is None or epsilon <= 0:
        return None
    return float(epsilon_lb) / float(epsilon)
