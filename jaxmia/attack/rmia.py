"""RMIA, the relative membership inference attack (Zarifzadeh et al. 2024), on reference models.

The signal is Pr(x | θ) = softmax(z / T)_y (``signals.probability_signal``).
For a target model θ, an example x and a population point z (trained on by no
model):

    LR(x, z) = [Pr(x | θ) / Pr(x)] / [Pr(z | θ) / Pr(z)]
    score(x) = the share of population points z with LR(x, z) > γ

Pr(x) is the mean of Pr(x | θ') over the reference models θ': online over all of
them; offline over the OUT ones, corrected as the paper does for the missing
IN models, Pr(x) = (1 + a)/2 · mean_OUT + (1 - a)/2.  Every reference is OUT
for a population point, so Pr(z) is the mean over all references online and
the same correction of it offline (as ml_privacy_meter's ``run_rmia``).  With
Q queries each is tested on its own and the pair (x, z) counts when a strict
majority of the queries say LR > γ (the paper's code: ``torch.mode`` of the
boolean tests, a tie being False).  The defaults are the paper code's: γ = 2,
T = 2, a = 0.3.

``tune_offline_a`` picks a as Privacy Meter does (``tune_offline_a``): the
reference models of one membership block (whose memberships complement each
other), never the target model's own block, are attacked by the remaining
references for every a in 0, 0.1, ..., 1, and the a of the largest AUC wins
(the smallest on a tie).

scipy (through metrics) is imported only by the function that uses it, so that
the configuration can read the defaults without loading it.
"""

from __future__ import annotations

import numpy as np

from jaxmia.attack.signals import Signals, check_attack_inputs

__all__ = [
    "A_GRID",
    "GAMMA",
    "OFFLINE_A",
    "TEMPERATURE",
    "relative_scores",
    "rmia_offline",
    "rmia_online",
    "tune_offline_a",
    "tuned_offline_a",
]

GAMMA = 2.0
TEMPERATURE = 2.0
OFFLINE_A = 0.3
A_GRID = tuple(round(0.1 * i, 1) for i in range(11))  # Privacy Meter's grid of a
_PAIRS_PER_STEP = 1 << 22  # (x, z) tests held at once: 4 MiB of booleans per query


def relative_scores(ratio_x, ratio_z, gamma: float) -> np.ndarray:
    """The share of population points z with ratio_x / ratio_z > γ in a strict majority of
    the queries.

    Args:
      ratio_x: float64[K, N, Q], Pr(x | θ) / Pr(x) of each target model and example.
      ratio_z: float64[K, Z, Q], the same of each population point (Z >= 1).
      gamma: γ > 0.

    Returns:
      float64[K, N], in [0, 1]; NaN where ratio_x is NaN in any query.
    """
    k, n, q = ratio_x.shape
    z = ratio_z.shape[1]
    out = np.empty((k, n))
    step = max(1, _PAIRS_PER_STEP // max(z, 1))
    for m in range(k):
        for lo in range(0, n, step):
            x = ratio_x[m, lo : lo + step]  # [n', Q]
            votes = np.zeros((x.shape[0], z), np.int32)
            for i in range(q):
                votes += x[:, i, None] / ratio_z[m, None, :, i] > gamma
            out[m, lo : lo + step] = np.mean(2 * votes > q, axis=1)
    out[np.isnan(ratio_x).any(axis=2)] = np.nan
    return out


def reference_mean(values, take=None) -> np.ndarray:
    """The mean over axis 0 of ``values`` (float64[R, ...]), of the rows ``take`` marks
    (bool[R, ...], broadcast; None: all), taken as min + mean(value - min), so that equal
    values give that value bit for bit, whatever their count: a plain sum / count of 3
    equal values can round one ulp away from them and from the mean of 4, and then
    identical models would score members and non-members differently.

    Returns: float64[...]; NaN where ``take`` marks no row.
    """
    values = np.asarray(values, np.float64)
    take = np.ones(values.shape, bool) if take is None else np.broadcast_to(take, values.shape)
    low = np.where(take, values, np.inf).min(axis=0)
    low = np.where(np.isfinite(low), low, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return low + np.where(take, values - low, 0.0).sum(axis=0) / take.sum(axis=0)


def _population(reference: Signals) -> np.ndarray:
    if reference.population.shape[1] == 0:
        raise ValueError("RMIA needs population points (population_size > 0)")
    return reference.population


def rmia_online(keep, reference: Signals, target: Signals, *, gamma: float = GAMMA) -> np.ndarray:
    """RMIA with Pr(x) and Pr(z) the mean over every reference model.

    Returns: float64[K, N] in [0, 1].

    Raises:
      ValueError: shapes that disagree; no population points.
    """
    check_attack_inputs(keep, reference, target)
    p_x = reference_mean(reference.examples)  # [N, Q]
    p_z = reference_mean(_population(reference))  # [Z, Q]
    return relative_scores(target.examples / p_x, target.population / p_z, gamma)


def rmia_offline(
    keep, reference: Signals, target: Signals, *, gamma: float = GAMMA, a=OFFLINE_A
) -> np.ndarray:
    """RMIA from the OUT references: Pr(x) = (1 + a)/2 · mean_OUT Pr(x | θ') + (1 - a)/2.

    ``a`` is one float in [0, 1], or float[K], one per target model
    (``tuned_offline_a``).

    Returns:
      float64[K, N] in [0, 1]; NaN for an example without an OUT reference.

    Raises:
      ValueError: shapes that disagree; no population points; a outside [0, 1].
    """
    keep = check_attack_inputs(keep, reference, target)
    a = np.asarray(a, np.float64)
    if a.ndim > 1 or (a.ndim == 1 and a.shape != (target.n_models,)):
        raise ValueError(f"a must be a float or float[{target.n_models}], got shape {a.shape}")
    if ((a < 0) | (a > 1)).any():
        raise ValueError(f"a must be in [0, 1], got {a}")
    a = a.reshape(-1, 1, 1)  # one per target model, or one for all
    mean_out = reference_mean(reference.examples, ~keep[:, :, None])  # NaN without an OUT
    p_x = (1 + a) / 2 * mean_out + (1 - a) / 2  # [K or 1, N, Q]
    p_z = (1 + a) / 2 * reference_mean(_population(reference)) + (1 - a) / 2
    ratio_x = np.broadcast_to(target.examples / p_x, target.examples.shape)
    ratio_z = np.broadcast_to(target.population / p_z, target.population.shape)
    return relative_scores(ratio_x, ratio_z, gamma)


def tune_offline_a(keep, reference: Signals, tuning_keep, tuning: Signals, *, gamma=GAMMA):
    """The a of A_GRID under which the references best attack the tuning models.

    Args:
      keep, reference: the references that attack (bool[R, N], Signals).
      tuning_keep: bool[B, N], the tuning models' memberships (reference models
        themselves: the attacker knows them); tuning: their Signals.

    Returns:
      (a, aucs): the first a of largest AUC over the tuning models' scorable
      pairs (OFFLINE_A when no a has one), and {a: AUC or None} for the whole
      grid (None: no scorable pairs of both kinds).
    """
    from jaxmia.attack import metrics

    tuning_keep = np.asarray(tuning_keep, bool)
    aucs = {}
    for a in A_GRID:
        s = rmia_offline(keep, reference, tuning, gamma=gamma, a=a)
        ok = np.isfinite(s)
        mem, non = s[ok & tuning_keep], s[ok & ~tuning_keep]
        aucs[a] = metrics.auc(mem, non) if mem.size and non.size else None
    best, best_auc = OFFLINE_A, None
    for a, v in aucs.items():  # the grid ascends: a strict > keeps the smallest of a tie
        if v is not None and (best_auc is None or v > best_auc):
            best, best_auc = a, v
    return best, aucs


def _tuning_models(reference: Signals, target_block) -> np.ndarray:
    """bool[R]: the references that tune a for a target model of ``target_block``: those of
    the smallest block id other than its own.  Never its own block: a block-mate's
    membership is the complement of the target's, so the a that best attacks it is
    chosen with the target's own answers in hand (with identical models, leave-one-out
    AUC 0.39 instead of 0.5).  Another block's memberships are drawn independently."""
    other = reference.block[reference.block != target_block]
    if other.size == 0:  # every reference is a block-mate: nothing independent tunes a
        return np.zeros(len(reference.block), bool)
    return reference.block == other.min()


def tuned_offline_a(keep, reference: Signals, target: Signals, *, gamma: float = GAMMA):
    """float64[K]: the a ``tune_offline_a`` picks for each target model.

    The tuning models of a target model are the references of its block
    (``_tuning_models``), attacked by the other references; the target's own
    membership plays no part.
    """
    keep = check_attack_inputs(keep, reference, target)
    chosen = np.empty(target.n_models)
    for k in range(target.n_models):
        tune = _tuning_models(reference, target.block[k])
        rest = ~tune
        if not rest.any() or not tune.any():  # no tuning models, or nothing attacks them
            chosen[k] = OFFLINE_A
            continue
        chosen[k], _ = tune_offline_a(
            keep[rest], reference.take(rest), keep[tune], reference.take(tune), gamma=gamma
        )
    return chosen
