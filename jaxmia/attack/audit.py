"""Empirical privacy audits: from attack statistics to ε lower bounds, JSON-ready.

Two designs, each at one noise level of a DP-SGD run (kinds' analyses call
these per level and set the accountant's ε beside them):

* ``multi_run_audit`` (Jagielski et al. 2020): with/without pairs of models are
  neighbouring data sets.  A cut on the attack statistic is chosen on the
  calibration models (the one that maximises the bound there, placed midway
  to the next calibration score), applied once to the evaluation models, and
  their errors give Clopper-Pearson's ε_lb and the Gaussian-DP estimate of
  Nasr et al. 2023 (attack/bounds.py).  Chosen without the evaluation models,
  each cut keeps its bound's confidence.
* ``one_run_audit`` (Steinke, Nasr, Jagielski 2023): each evaluation model of
  the many-targets kind is one training run with T canaries, each IN with
  probability ½ independently.  The model's statistic on each target is
  standardised by that target's non-member calibration models (at the same
  noise level); the k most member-like targets are guessed IN and the k least
  OUT, for k on a fixed grid with a Bonferroni split of the confidence.  Each
  model gets its own ε_lb; models are never pooled (a block's complementary
  models are not independent, and E pooled models bound E·ε).

Attack statistics everywhere: high = member (attack/scores.py).  numpy/scipy only.
"""

from __future__ import annotations

import math

import numpy as np

from jaxmia.attack import bounds, metrics, thresholds

__all__ = ["ONE_RUN_GRID", "calibration_cut", "multi_run_audit", "one_run_audit", "standardise"]

# Shares of the T targets guessed IN (and as many OUT) by the one-run audit.
ONE_RUN_GRID = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)


def calibration_cut(stat_mem, stat_non, objective) -> tuple[float, float]:
    """(cut, its objective): the cut u of "member iff s > u" that maximises
    ``objective(fp, n_nonmember, fn, n_member)`` (vectorised over count arrays) on
    the calibration statistics, ties (a few calibration models often show no
    bound at any cut) broken by the largest TPR − FPR, then moved midway to the
    next higher calibration score so that it counts the same there and sits
    between the two classes.
    """
    fpr, tpr, cuts = metrics.roc(stat_mem, stat_non)
    l_in, n = len(stat_mem), len(stat_non)
    fp = np.rint(fpr * n).astype(np.int64)
    fn = l_in - np.rint(tpr * l_in).astype(np.int64)
    values = np.asarray(objective(fp, n, fn, l_in), np.float64)
    top = values == values.max()
    best = int(np.argmax(np.where(top, tpr - fpr, -np.inf)))
    cut = float(cuts[best])
    if best > 0 and math.isfinite(cut):
        cut = (cut + float(cuts[best - 1])) / 2
    return cut, float(values[best])


def _errors(cut, ev_mem, ev_non):
    fp = int(np.count_nonzero(ev_non > cut))
    fn = int(np.count_nonzero(~(ev_mem > cut)))
    return fp, fn


def multi_run_audit(cal_mem, cal_non, ev_mem, ev_non, *, confidence: float, delta: float) -> dict:
    """The with/without audit of one noise level (Jagielski et al. 2020; Nasr et al. 2023).

    Args:
      cal_mem, cal_non: float64[l_in], float64[l] attack statistics of the
        calibration IN and OUT models (finite, non-empty).
      ev_mem, ev_non: float64[E_in], float64[E_out] those of the evaluation models.
      confidence: in (0, 1); delta: the mechanism's δ, in (0, 1).

    Returns:
      {"clopper_pearson": {...}, "gaussian_dp": {...}}, each with its
      ``epsilon_lb`` (float >= 0; null without evaluation models of both kinds),
      ``cut`` (on the attack statistic), the evaluation counts and upper bounds;
      ``gaussian_dp`` also ``mu_lb``.

    Raises:
      ValueError: confidence or delta out of range; calibration arrays empty.
    """
    conf = thresholds.check_probability(confidence, "confidence")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    cal_mem, cal_non = np.asarray(cal_mem, np.float64), np.asarray(cal_non, np.float64)
    ev_mem, ev_non = np.asarray(ev_mem, np.float64), np.asarray(ev_non, np.float64)

    def cp(fp, nn, fn, nm):
        return bounds.epsilon_lower_bound(fp, nn, fn, nm, confidence=conf, delta=delta)[0]

    def mu(fp, nn, fn, nm):
        return bounds.gdp_mu_lower_bound(fp, nn, fn, nm, confidence=conf)[0]

    have_eval = ev_mem.size > 0 and ev_non.size > 0
    out = {}
    for name, objective in (("clopper_pearson", cp), ("gaussian_dp", mu)):
        cut, on_calibration = calibration_cut(cal_mem, cal_non, objective)
        entry = {
            "epsilon_lb": None,
            "cut": cut if math.isfinite(cut) else None,
            "calibration_value": on_calibration,
            "n_member": int(ev_mem.size),
            "n_nonmember": int(ev_non.size),
            "false_positives": None,
            "false_negatives": None,
            "fpr_upper": None,
            "fnr_upper": None,
        }
        if name == "gaussian_dp":
            entry["mu_lb"] = None
        if have_eval:
            fp, fn = _errors(cut, ev_mem, ev_non)
            entry.update(false_positives=fp, false_negatives=fn)
            if name == "clopper_pearson":
                e, _, f_ub, n_ub = bounds.epsilon_lower_bound(
                    fp, ev_non.size, fn, ev_mem.size, confidence=conf, delta=delta
                )
                entry["epsilon_lb"] = float(e)
            else:
                m, f_ub, n_ub = bounds.gdp_mu_lower_bound(
                    fp, ev_non.size, fn, ev_mem.size, confidence=conf
                )
                entry["mu_lb"] = float(m)
                entry["epsilon_lb"] = bounds.gdp_epsilon(float(m), delta)
            entry.update(fpr_upper=float(f_ub), fnr_upper=float(n_ub))
        out[name] = entry
    return out


def _grid(t: int) -> list[int]:
    return sorted({min(max(1, math.ceil(f * t)), t // 2) for f in ONE_RUN_GRID} - {0})


def standardise(stat, reference, reference_membership):
    """float64[E, T]: each target's statistic minus the mean of its OUT reference models,
    over their standard deviation (1 where fewer than two or a spread of 0)."""
    ref = np.where(reference_membership, np.nan, reference)
    n_out = np.sum(~reference_membership, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_out > 0, np.nanmean(np.where(n_out > 0, ref, 0.0), axis=0), 0.0)
        std = np.where(n_out > 1, np.nanstd(np.where(n_out > 1, ref, 0.0), axis=0, ddof=1), 1.0)
    std = np.where((std > 0) & np.isfinite(std), std, 1.0)
    return (np.asarray(stat, np.float64) - mean) / std


def one_run_audit(
    stat, membership, reference, reference_membership, *, confidence: float, delta: float
) -> dict:
    """Steinke et al.'s one-run ε_lb of each evaluation model, at one noise level.

    Args:
      stat: float64[E, T] the evaluation models' attack statistics on the T targets.
      membership: bool[E, T] which targets each evaluation model trained on.
      reference: float64[M, T], reference_membership: bool[M, T]: the calibration
        models at the same noise level, which standardise each target.
      confidence: of each model's bound, in (0, 1); delta: in [0, 1).

    Returns:
      {"per_model": [{"epsilon_lb", "guesses", "correct", "k"} per evaluation
      model], "median", "max", "max_simultaneous" (the largest model's bound at
      confidence 1 − (1 − confidence)/E: all E hold at once), "grid", "confidence"}.

    Raises:
      ValueError: shapes that disagree; confidence or delta out of range.
    """
    conf = thresholds.check_probability(confidence, "confidence")
    stat = np.asarray(stat, np.float64)
    membership = np.asarray(membership, bool)
    if stat.shape != membership.shape or stat.ndim != 2:
        raise ValueError(f"stat and membership must both be [E, T], got {stat.shape}")
    e, t = stat.shape
    z = standardise(stat, np.asarray(reference, np.float64), np.asarray(reference_membership, bool))
    grid = _grid(t)

    def bound(row, member, level):
        best = {"epsilon_lb": 0.0, "guesses": 0, "correct": 0, "k": None}
        if not grid:
            return best
        order = np.argsort(-row, kind="stable")
        split = 1.0 - (1.0 - level) / len(grid)  # Bonferroni over the grid
        for k in grid:
            right = int(member[order[:k]].sum() + (~member[order[t - k :]]).sum())
            # The p-value only grows with delta: a k that cannot reject the best epsilon
            # so far even at delta = 0 cannot beat it (jax_privacy's shortcut too).
            if bounds.one_run_p_value(t, 2 * k, right, best["epsilon_lb"]) > 1.0 - split:
                continue
            eps = bounds.one_run_epsilon_lower_bound(t, 2 * k, right, confidence=split, delta=delta)
            if eps > best["epsilon_lb"]:
                best = {"epsilon_lb": eps, "guesses": 2 * k, "correct": right, "k": k}
        return best

    per_model = [bound(z[i], membership[i], conf) for i in range(e)]
    simultaneous = [p["epsilon_lb"] for p in per_model]
    if e > 1:
        simultaneous = [
            bound(z[i], membership[i], 1.0 - (1.0 - conf) / e)["epsilon_lb"] for i in range(e)
        ]
    values = [p["epsilon_lb"] for p in per_model]
    return {
        "per_model": per_model,
        "median": float(np.median(values)) if values else None,
        "max": float(np.max(values)) if values else None,
        "max_simultaneous": float(np.max(simultaneous)) if simultaneous else None,
        "grid": grid,
        "confidence": conf,
    }
