"""The protocol papers report: every attack on one pool of models, one global ROC per attack.

* **Leave one model out** (LiRA's and RMIA's evaluations): each model of the pool
  in turn is the target model and all the others are its references; every
  (target model, example) pair is one labelled decision, and one threshold is
  swept over all pairs at once.  With fresh models, they are the targets and
  the whole pool their references (``score_targets`` with other reference sets).
* **Metrics** (``pair_metrics``): AUC, TPR at FPR_LEVELS (null where the
  non-member pairs cannot resolve the FPR: fewer than 1/FPR of them), balanced
  accuracy; pairs an attack cannot score (NaN) are left out and counted.
* **Intervals** (``bootstrap_metrics``): the decisions of one target model share
  that model, so they are not independent trials; the unit resampled is the
  target model (percentile bootstrap over B resamples of the K target models,
  every attack on the same resamples).
* **The reference-count curve** (``reference_counts``, ``score_targets`` with
  subsampled reference sets): the same target models attacked with 1, 2, 4, ...
  references.

``standard_attacks`` lists the attacks of lira.py and rmia.py with their
options, as records of one signature (signals.py).  numpy and scipy only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from jaxmia.attack import lira, metrics, rmia, signals, thresholds
from jaxmia.attack.signals import Signals

__all__ = [
    "FPR_LEVELS",
    "Attack",
    "AttackOptions",
    "bootstrap_metrics",
    "leave_one_out_sets",
    "pair_metrics",
    "reference_counts",
    "score_targets",
    "standard_attacks",
]

FPR_LEVELS = (0.0001, 0.001, 0.01, 0.1)  # the TPRs at FPR the field reports


@dataclasses.dataclass(frozen=True)
class Attack:
    """One attack of the protocol.

    Attributes:
      name: its name in results.json and attacks.csv (``lira_online``, ...).
      signal: (logits float[M, N, Q, C], labels int[N], population logits
        float[M, Z, Q, C], population labels int[Z]) -> (float64[M, N, Q],
        float64[M, Z, Q]), what the attack reads of every model.
      score: (keep, reference, target, **prepared) -> float64[K, N], high = member.
      settings: its options, JSON-ready.
      prepare: None, or (keep, reference, target) -> dict of keyword arguments
        for ``score`` chosen from the references alone (RMIA's tuned a), reported
        per target model.
      needs_population: whether it reads population points.
    """

    name: str
    signal: Callable
    score: Callable
    settings: dict
    prepare: Callable | None = None
    needs_population: bool = False


@dataclasses.dataclass(frozen=True)
class AttackOptions:
    """The attacks' options (the config keys lira_variance, lira_center, lira_offline_test,
    rmia_gamma, rmia_temperature, rmia_offline_a)."""

    lira_variance: str = "auto"
    lira_center: str = "median"
    lira_offline_test: str = "one_sided"
    rmia_gamma: float = rmia.GAMMA
    rmia_temperature: float = rmia.TEMPERATURE
    rmia_offline_a: float = rmia.OFFLINE_A

    @classmethod
    def from_config(cls, cfg) -> AttackOptions:
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


def standard_attacks(opts: AttackOptions, *, population: bool) -> tuple[Attack, ...]:
    """loss, lira_online, lira_offline, and with population points rmia_online,
    rmia_offline and rmia_offline_tuned (a chosen per target model)."""
    var, center = opts.lira_variance, opts.lira_center
    lira_settings = {"variance": var, "center": center}
    out = [
        Attack("loss", signals.loss_signal, lira.loss_attack, {}),
        Attack(
            "lira_online",
            signals.phi_signal,
            functools.partial(lira.lira_online, variance=var, center=center),
            lira_settings,
        ),
        Attack(
            "lira_offline",
            signals.phi_signal,
            functools.partial(
                lira.lira_offline, variance=var, center=center, test=opts.lira_offline_test
            ),
            {**lira_settings, "test": opts.lira_offline_test},
        ),
    ]
    if population:
        gamma, temp = opts.rmia_gamma, opts.rmia_temperature
        prob = signals.probability_signal(temp)
        rmia_settings = {"gamma": gamma, "temperature": temp}
        out += [
            Attack(
                "rmia_online",
                prob,
                functools.partial(rmia.rmia_online, gamma=gamma),
                rmia_settings,
                needs_population=True,
            ),
            Attack(
                "rmia_offline",
                prob,
                functools.partial(rmia.rmia_offline, gamma=gamma, a=opts.rmia_offline_a),
                {**rmia_settings, "a": opts.rmia_offline_a},
                needs_population=True,
            ),
            Attack(
                "rmia_offline_tuned",
                prob,
                functools.partial(rmia.rmia_offline, gamma=gamma),
                {**rmia_settings, "a": "tuned per target model"},
                prepare=lambda keep, ref, tgt: {
                    "a": rmia.tuned_offline_a(keep, ref, tgt, gamma=gamma)
                },
                needs_population=True,
            ),
        ]
    return tuple(out)


# ---------------------------------------------------------------- who attacks whom


def leave_one_out_sets(m: int) -> list[np.ndarray]:
    """For each of m models, int64[m-1]: the others, its references."""
    everyone = np.arange(m)
    return [np.delete(everyone, k) for k in range(m)]


def reference_counts(most: int) -> list[int]:
    """1, 2, 4, ... below ``most``, then ``most`` itself: the curve's reference counts."""
    counts = [1 << i for i in range(max(most, 1).bit_length()) if 1 << i < most]
    return counts + [most]


def score_targets(
    attack: Attack,
    keep,
    reference: Signals,
    target: Signals,
    reference_sets: Sequence[np.ndarray],
) -> tuple[np.ndarray, list[dict]]:
    """Each target model attacked with its own references.

    Args:
      keep: bool[R, N], the reference pool's memberships; reference: its Signals.
      target: the K target models' Signals.
      reference_sets: K int arrays: the pool indices of each target's references.

    Returns:
      (float64[K, N] scores, K dicts of what ``attack.prepare`` chose, empty without).
    """
    keep = np.asarray(keep, bool)
    scores = np.empty(target.examples.shape[:2])
    chosen = []
    for k, refs in enumerate(reference_sets):
        ref = reference.take(refs)
        one = target.take([k])
        kw = attack.prepare(keep[refs], ref, one) if attack.prepare else {}
        scores[k] = attack.score(keep[refs], ref, one, **kw)[0]
        chosen.append({key: np.asarray(v).tolist() for key, v in kw.items()})
    return scores, chosen


# ---------------------------------------------------------------- metrics over pairs


def pair_metrics(scores, member, levels: Sequence[float] = FPR_LEVELS) -> dict:
    """The metrics of one global threshold over every scorable (target model, example) pair.

    Args:
      scores: float[K, N], high = member, NaN where the attack could not score.
      member: bool[K, N], the pairs' truth.

    Returns:
      {n_pairs, n_scored, n_member, n_nonmember, auc, balanced_accuracy,
       tpr_at_fpr: {"0.0001": ..., ...}}; the metrics are None without scored pairs of
      both kinds, a TPR also where floor(FPR * n_nonmember) = 0.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(member, bool)
    ok = np.isfinite(s)
    mem, non = s[ok & y], s[ok & ~y]
    out = {
        "n_pairs": int(s.size),
        "n_scored": int(ok.sum()),
        "n_member": int(mem.size),
        "n_nonmember": int(non.size),
        "auc": None,
        "balanced_accuracy": None,
        "tpr_at_fpr": {f"{f:g}": None for f in levels},
    }
    if mem.size and non.size:
        out["auc"] = metrics.auc(mem, non)
        out["balanced_accuracy"] = metrics.balanced_accuracy(mem, non)
        out["tpr_at_fpr"] = {f"{f:g}": metrics.tpr_at_fpr(mem, non, f) for f in levels}
    return out


def _sorted_pairs(scores, member):
    """The scorable pairs, most member-like first: (member bool[P], target model int[P],
    group starts int[G]: where each run of equal scores begins)."""
    s = np.asarray(scores, np.float64)
    k_of = np.broadcast_to(np.arange(s.shape[0])[:, None], s.shape)
    ok = np.isfinite(s)
    order = np.argsort(-s[ok], kind="stable")
    vals = s[ok][order]
    starts = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]]) if vals.size else np.zeros(0, int)
    return np.asarray(member, bool)[ok][order], k_of[ok][order], starts


def _weighted_metrics(weights, member, model, starts, levels) -> dict[str, np.ndarray]:
    """The metrics of ``pair_metrics`` with every pair of target model k counted
    weights[b, k] times, for B weightings at once (float64[B] each, NaN: undefined).

    Counts are integers (or halves, for ties in the AUC) until the one division of
    each metric, so unit weights give ``metrics``' values exactly.
    """
    w = np.asarray(weights, np.int64)[:, model]  # [B, P]
    every = np.add.reduceat(w, starts, axis=1)  # [B, G] pairs in each run of tied scores
    tp = np.add.reduceat(w * member, starts, axis=1)  # members among them
    fp = every - tp
    tp_cum, fp_cum = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    n_mem, n_non = tp_cum[:, -1], fp_cum[:, -1]
    bad = (n_mem == 0) | (n_non == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        wins = np.sum(fp * (2 * (tp_cum - tp) + tp), axis=1) / 2.0  # ties count 1/2
        auc = wins / (n_mem * n_non)
        ba = (tp_cum / n_mem[:, None] + 1.0 - fp_cum / n_non[:, None]) / 2.0
        out = {"auc": auc, "balanced_accuracy": np.maximum(ba.max(axis=1), 0.5)}
        for f in levels:
            # k = the largest count with k / n <= f, as thresholds.order_statistic_k.
            k = np.array(
                [thresholds.order_statistic_k("empirical", int(n), f) if n else 0 for n in n_non]
            )
            # The run holding the cut s_(k+1): the first whose cumulative count reaches k+1.
            g = np.minimum((fp_cum < (k + 1)[:, None]).sum(axis=1), fp_cum.shape[1] - 1)
            rows = np.arange(w.shape[0])
            tpr = (tp_cum[rows, g] - tp[rows, g]) / n_mem  # members strictly above the cut
            out[f"{f:g}"] = np.where(k > 0, tpr, np.nan)
    for v in out.values():
        v[bad] = np.nan
    return out


_WEIGHTS_PER_STEP = 1 << 23  # bootstrap weights held at once (64 MiB of float64)


def bootstrap_metrics(
    scores,
    member,
    resamples,
    *,
    confidence: float = 0.95,
    levels: Sequence[float] = FPR_LEVELS,
) -> dict:
    """Percentile intervals of ``pair_metrics``' numbers, resampling the target models.

    Args:
      scores: float[K, N]; member: bool[K, N] (as ``pair_metrics``).
      resamples: int[B, K], each row the target models of one resample (drawn with
        replacement); a model drawn twice counts its pairs twice.
      confidence: level of the two-sided percentile intervals.

    Returns:
      {"auc": [lo, hi] or None, "balanced_accuracy": ..., "tpr_at_fpr": {f: ...}};
      None where any resample leaves the metric undefined (e.g. no member pair, or
      an FPR the resample's non-member pairs cannot resolve).
    """
    resamples = np.asarray(resamples)
    k = np.asarray(scores).shape[0]
    weights = np.stack([np.bincount(r, minlength=k) for r in resamples]) if resamples.size else None
    keys = ["auc", "balanced_accuracy", *(f"{f:g}" for f in levels)]
    empty = {"auc": None, "balanced_accuracy": None, "tpr_at_fpr": {f"{f:g}": None for f in levels}}
    y, model, starts = _sorted_pairs(scores, member)
    if weights is None or starts.size == 0:
        return empty
    step = max(1, _WEIGHTS_PER_STEP // max(y.size, 1))
    parts = [
        _weighted_metrics(weights[i : i + step], y, model, starts, levels)
        for i in range(0, len(weights), step)
    ]
    tail = (1.0 - confidence) / 2.0

    def interval(values):
        if np.isnan(values).any():
            return None
        lo, hi = np.quantile(values, [tail, 1.0 - tail])
        return [float(lo), float(hi)]

    vals = {key: np.concatenate([p[key] for p in parts]) for key in keys}
    return {
        "auc": interval(vals["auc"]),
        "balanced_accuracy": interval(vals["balanced_accuracy"]),
        "tpr_at_fpr": {f"{f:g}": interval(vals[f"{f:g}"]) for f in levels},
    }


def resolvable_fpr(n_nonmember: int) -> float:
    """The lowest FPR whose TPR ``pair_metrics`` reports with this many non-member pairs."""
    return 1.0 / n_nonmember if n_nonmember else math.inf
