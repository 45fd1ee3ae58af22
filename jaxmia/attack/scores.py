"""Membership scores of a target from a model's logits, one record per score.

Each score is a ``Score`` in ``SCORES``: how to compute it from logits, which
way it points, and how figures and decision rules write it. Adding a score is
adding one entry. The native values are float64, one per model:

* ``loss``:  cross-entropy of the target, ``logsumexp(z) - z_y``; members LOW.
* ``lira``:  LiRA's logit-scaled confidence (Carlini et al. 2022),
  ``φ = log p_y - log(1 - p_y) = z_y - logsumexp_{y' != y} z_y'``; members HIGH.
  Computed from the logits, never from p_y, so it stays exact where p_y rounds
  to 1 (φ = 40 is p_y = 1 - 4e-18).
* ``hinge``: ``z_y - max_{y' != y} z_y'``; members HIGH.

``to_attack`` and ``from_attack`` are the only places that read a score's
direction (see the package docstring for the convention they serve).

scipy is imported inside the functions that use it, so that reading ``SCORES``
(as the configuration does) does not load it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SCORES",
    "Score",
    "check_scores",
    "compute",
    "decision_text",
    "from_attack",
    "from_outputs",
    "get",
    "hinge_from_logits",
    "lira_from_logits",
    "loss_from_logits",
    "to_attack",
]


def check_scores(x, name: str = "scores") -> np.ndarray:
    """Returns ``x`` as float64[n] after checking it is 1-D, non-empty and finite.

    Raises:
      ValueError: naming ``name`` and what is wrong with it.
    """
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be an array of numbers: {e}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s), the first at index {first} "
            f"({arr[first]})"
        )
    return arr


# ---------------------------------------------------------------- from logits


def _logits_and_labels(logits, label) -> tuple[np.ndarray, np.ndarray]:
    """float64[n, C] logits and int64[n] labels (a scalar label is broadcast)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = z[None, :]
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be [n, C] with C >= 2, got shape {np.shape(logits)}")
    if not np.isfinite(z).all():
        raise ValueError("logits contain NaN or inf")
    y = np.broadcast_to(np.asarray(label), (z.shape[0],))
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"label must be an integer class index, got {label!r}")
    if ((y < 0) | (y >= z.shape[1])).any():
        raise ValueError(f"label must be in [0, {z.shape[1]}), got {label!r}")
    return z, y.astype(np.int64)


def _true_and_others(logits, label) -> tuple[np.ndarray, np.ndarray]:
    """(z_y float64[n], the other logits float64[n, C] with z_y replaced by -inf)."""
    z, y = _logits_and_labels(logits, label)
    rows = np.arange(z.shape[0])
    zy = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    return zy, others


def loss_from_logits(logits, label) -> np.ndarray:
    """Cross-entropy of the true class: float64[n] from logits float[n, C], label int or int[n].

    Computed as softplus(-φ) = log(1 + e^-φ) from LiRA's φ (``lira_from_logits``), which is
    the same number as logsumexp(z) - z_y but keeps its precision where the model is sure:
    logsumexp(z) - z_y cancels to 0 once z_y leads the other logits by about 37 (float64)
    or 17 (float32), while log1p(e^-φ) stays positive up to φ of about 745.  So the loss is
    a strictly decreasing function of φ in floating point too, and the two scores rank
    models identically.

    Raises:
      ValueError: logits not [n, C] with C >= 2 or not finite; a label out of range.
    """
    # np.logaddexp(0, x) is log1p(exp(x)) for x <= 0 and x + log1p(exp(-x)) above.
    return np.logaddexp(0.0, -lira_from_logits(logits, label))


def lira_from_logits(logits, label) -> np.ndarray:
    """φ = z_y - logsumexp_{y' != y} z_y' (= log p_y - log(1 - p_y)), float64[n].

    Raises:
      ValueError: as ``loss_from_logits``.
    """
    from scipy.special import logsumexp

    zy, others = _true_and_others(logits, label)
    return zy - logsumexp(others, axis=1)


def hinge_from_logits(logits, label) -> np.ndarray:
    """z_y - max_{y' != y} z_y', float64[n].

    Raises:
      ValueError: as ``loss_from_logits``.
    """
    zy, others = _true_and_others(logits, label)
    return zy - others.max(axis=1)


# ---------------------------------------------------------------- the records


@dataclass(frozen=True)
class Score:
    """One membership score.

    Attributes:
      name: its name in the configuration (``score:``) and in results.json.
      from_logits: (logits float[n, C], label int or int[n]) -> float64[n], native scale.
      high_is_member: whether members tend to have the higher native values.
      symbol: how a decision rule writes it ("member iff φ > 2").
      axis_label: how a figure's axis names it (matplotlib mathtext allowed).
    """

    name: str
    from_logits: Callable[..., np.ndarray]
    high_is_member: bool
    symbol: str
    axis_label: str


SCORES: dict[str, Score] = {
    s.name: s
    for s in (
        Score("loss", loss_from_logits, False, "loss", "cross-entropy loss"),
        Score(
            "lira",
            lira_from_logits,
            True,
            "φ",
            r"$\varphi = z_y - \log\sum_{y' \neq y} e^{z_{y'}}$  (logit-scaled confidence)",
        ),
        Score(
            "hinge", hinge_from_logits, True, "hinge", r"hinge $= z_y - \max_{y' \neq y} z_{y'}$"
        ),
    )
}


def get(score: str) -> Score:
    """The record of the score named ``score``.

    Raises:
      ValueError: ``score`` is not a key of SCORES (a bug: the config checks user input).
    """
    try:
        return SCORES[score]
    except (KeyError, TypeError):
        raise ValueError(f"score must be one of {', '.join(SCORES)}; got {score!r}") from None


def compute(score: str, logits, label) -> np.ndarray:
    """The named score, native scale: float64[n] from logits float[n, C] and the label(s)."""
    return get(score).from_logits(logits, label)


_LOGITS_PER_STEP = 1 << 22  # logits turned into scores at once (32 MiB of float64)


def from_outputs(score: str, logits, labels, *, temperature: float = 1.0) -> np.ndarray:
    """The named score of every saved output of a run, native scale, float64[...].

    Every score, the loss included, comes from the saved logits in float64: the
    float32 loss the device computed rounds to 0 for confident models, where the
    logits still tell them apart (``loss_from_logits``).

    Args:
      logits: float[..., C], any stack of saved logits (models, targets, queries, ...).
      labels: int, broadcastable to ``logits.shape[:-1]``: each output's class.
      temperature: T > 0: the score of the logits divided by T, in float64
        (RMIA's softmax(z / T), Zarifzadeh et al. 2024).

    The logits are converted to float64 a block at a time, so that a run with
    many models and targets never holds a float64 copy of all of them.
    """
    get(score)
    z = np.asarray(logits)
    lead, c = z.shape[:-1], z.shape[-1]
    flat = z.reshape(-1, c)
    y = np.broadcast_to(np.asarray(labels), lead).reshape(-1)
    out = np.empty(flat.shape[0], np.float64)
    step = max(1, _LOGITS_PER_STEP // max(c, 1))
    for i in range(0, flat.shape[0], step):
        block = flat[i : i + step].astype(np.float64)
        if temperature != 1.0:
            block = block / temperature
        out[i : i + step] = compute(score, block, y[i : i + step])
    return out.reshape(lead)


# ---------------------------------------------------------------- orientation


def to_attack(values, score: str):
    """Native score values (float[...]) -> the attack statistic s, float64, high = member."""
    v = np.asarray(values, dtype=np.float64)
    return v if get(score).high_is_member else -v


def from_attack(u, score: str):
    """A cut u (or values) on the attack scale back to the score's native scale, float64."""
    return to_attack(u, score)  # negation is its own inverse


def decision_text(score: str, threshold: float) -> str:
    """The rule "member iff s > u" on the native scale, e.g. "member iff loss < 0.6931"."""
    record = get(score)
    op = ">" if record.high_is_member else "<"
    return f"member iff {record.symbol} {op} {threshold:.6g}"
