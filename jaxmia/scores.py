"""Membership scores of the target x from a model's logits, and their orientation.

Three scores, each a float64 number per model (numpy only; JAX stops before this module):

* ``loss``:  cross-entropy of x, ``logsumexp(z) - z_y``; a member has a LOW value.
* ``lira``:  the logit-scaled confidence of LiRA (Carlini et al. 2022),
  ``phi = log p_y - log(1 - p_y) = z_y - logsumexp_{y' != y} z_y'``; a member has a
  HIGH value. Computed from the logits directly, never from p_y, so it stays exact
  where p_y rounds to 1 (phi = 40 is p_y = 1 - 4e-18).
* ``hinge``: ``z_y - max_{y' != y} z_y'``; a member has a HIGH value.

Orientation lives here and only here: ``to_attack`` turns a score's native values
into an *attack statistic* s where HIGH means member (s = -loss for the loss, s =
the score otherwise), and every threshold rule and metric in ``stats`` works on s
with the one decision rule "member iff s > u" (strict). ``from_attack`` turns a
threshold u back into the score's own scale, and ``decision_text`` says the rule in
those terms ("member iff loss < 1.23").
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

__all__ = [
    "HIGH_IS_MEMBER",
    "SCORES",
    "SYMBOLS",
    "all_scores",
    "compute_score",
    "decision_text",
    "from_attack",
    "hinge_from_logits",
    "lira_from_logits",
    "loss_from_logits",
    "to_attack",
]

SCORES = ("loss", "lira", "hinge")
HIGH_IS_MEMBER = {"loss": False, "lira": True, "hinge": True}
# How each score is written in a decision rule and on an axis.
SYMBOLS = {"loss": "loss", "lira": "φ", "hinge": "hinge"}


def _check_score(score: str) -> str:
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}; got {score!r}")
    return score


def _logits_and_labels(logits, label) -> tuple[np.ndarray, np.ndarray]:
    """float64[n, C] logits and int[n] labels (a scalar label is broadcast)."""
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
    """Cross-entropy of the true class: float64[n] from logits float[n, C], label int or int[n]."""
    z, y = _logits_and_labels(logits, label)
    return logsumexp(z, axis=1) - z[np.arange(z.shape[0]), y]


def lira_from_logits(logits, label) -> np.ndarray:
    """phi = z_y - logsumexp_{y' != y} z_y' (= log p_y - log(1 - p_y)), float64[n]."""
    zy, others = _true_and_others(logits, label)
    return zy - logsumexp(others, axis=1)


def hinge_from_logits(logits, label) -> np.ndarray:
    """z_y - max_{y' != y} z_y', float64[n]."""
    zy, others = _true_and_others(logits, label)
    return zy - others.max(axis=1)


_FROM_LOGITS = {"loss": loss_from_logits, "lira": lira_from_logits, "hinge": hinge_from_logits}


def compute_score(score: str, logits, label) -> np.ndarray:
    """The named score (native scale, float64[n]) from logits float[n, C] and the label."""
    return _FROM_LOGITS[_check_score(score)](logits, label)


def all_scores(logits, label) -> dict[str, np.ndarray]:
    """{"loss": float64[n], "lira": float64[n], "hinge": float64[n]} from one set of logits."""
    return {name: fn(logits, label) for name, fn in _FROM_LOGITS.items()}


def to_attack(values, score: str):
    """Native score values -> attack statistic s (high = member): -loss, phi, hinge."""
    v = np.asarray(values, dtype=np.float64)
    return v if HIGH_IS_MEMBER[_check_score(score)] else -v


def from_attack(u, score: str):
    """A threshold (or values) on the attack scale back to the score's native scale."""
    return to_attack(u, score)  # negation is its own inverse


def decision_text(score: str, threshold: float) -> str:
    """The rule "member iff s > u" on the native scale, e.g. "member iff loss < 0.6931"."""
    op = ">" if HIGH_IS_MEMBER[_check_score(score)] else "<"
    return f"member iff {SYMBOLS[score]} {op} {threshold:.6g}"
