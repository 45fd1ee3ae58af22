"""How well a score separates members from non-members, and intervals for rates and means.

The ROC-based metrics take attack statistics, high = member (see the package
docstring): float[n_member] and float[n_nonmember], 1-D, non-empty and finite,
and count "member iff s > u" (strict) over every cut u.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
from scipy import stats as sps

from jaxmia.attack import scores, thresholds

__all__ = [
    "TPR_AT_FPR_LEVELS",
    "auc",
    "auc_interval",
    "average_precision",
    "balanced_accuracy",
    "clopper_pearson",
    "ks_test",
    "precision_recall",
    "rate_over_models",
    "roc",
    "t_interval",
    "tpr_at_fpr",
]

# The low FPRs at which the TPR is reported (LiRA's "TPR at 0.1% FPR", and two above).
TPR_AT_FPR_LEVELS = (0.001, 0.01, 0.1)


def _pair(member_stat, nonmember_stat) -> tuple[np.ndarray, np.ndarray]:
    return (
        scores.check_scores(member_stat, "member statistics"),
        scores.check_scores(nonmember_stat, "non-member statistics"),
    )


# ---------------------------------------------------------------- the ROC and its summaries


def roc(member_stat, nonmember_stat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC of "member iff s > u" over every distinct cut u.

    Returns:
      (fpr, tpr, cuts), float64[n_distinct + 1] each: cuts are the distinct pooled
      values in descending order then -inf, so the curve runs from (0, 0) to (1, 1)
      with fpr and tpr non-decreasing.

    Raises:
      ValueError: either sample not 1-D, non-empty and finite.
    """
    mem, non = _pair(member_stat, nonmember_stat)
    mem, non = np.sort(mem), np.sort(non)
    cuts = np.append(np.unique(np.concatenate([mem, non]))[::-1], -np.inf)
    fpr = (non.size - np.searchsorted(non, cuts, side="right")) / non.size
    tpr = (mem.size - np.searchsorted(mem, cuts, side="right")) / mem.size
    return fpr, tpr, cuts


def auc(member_stat, nonmember_stat) -> float:
    """P(s_member > s_nonmember), ties counted 1/2: Mann-Whitney U / (n_member n_nonmember).

    Equals the trapezoidal area under ``roc``: between two consecutive cuts the
    curve moves by the members and non-members tied at one value, and the
    trapezoid over that step is exactly half of their tied pairs.

    Raises:
      ValueError: either sample not 1-D, non-empty and finite.
    """
    mem, non = _pair(member_stat, nonmember_stat)
    mem = np.sort(mem)
    below = np.searchsorted(mem, non, side="left")
    at_or_below = np.searchsorted(mem, non, side="right")
    wins = (mem.size - at_or_below).sum() + 0.5 * (at_or_below - below).sum()
    return float(wins / (mem.size * non.size))


def balanced_accuracy(member_stat, nonmember_stat) -> float:
    """max over cuts u of (TPR(u) + 1 - FPR(u)) / 2; 0.5 at worst (u = -inf).

    Raises:
      ValueError: either sample not 1-D, non-empty and finite.
    """
    fpr, tpr, _ = roc(member_stat, nonmember_stat)
    return float(np.max((tpr + 1.0 - fpr) / 2.0))


def tpr_at_fpr(member_stat, nonmember_stat, fpr: float) -> float | None:
    """The TPR of the empirical cut at FPR <= ``fpr`` (the empirical rule's power).

    Returns:
      A float, or None when floor(fpr * l) = 0: with l non-members no FPR that low
      can be told from 0, so the number would say nothing.

    Raises:
      ValueError: ``fpr`` outside (0, 1); either sample not 1-D, non-empty and finite.
    """
    f = thresholds.check_probability(fpr, "fpr")
    mem, non = _pair(member_stat, nonmember_stat)
    k = thresholds.order_statistic_k("empirical", int(non.size), f)
    if k == 0:
        return None
    cut = thresholds.cut_at_order_statistic(non, k)
    return float(np.count_nonzero(mem > cut) / mem.size)


def precision_recall(member_stat, nonmember_stat) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every cut of the ROC that calls someone a member.

    Members are the positives; precision at a cut is TP / (TP + FP) in counts, so it
    holds for unequal sample sizes; recall is the TPR.  Recall is non-decreasing.

    Returns:
      float64[k] each.

    Raises:
      ValueError: either sample not 1-D, non-empty and finite.
    """
    mem, non = _pair(member_stat, nonmember_stat)
    fpr, tpr, _ = roc(mem, non)
    tp, fp = tpr * mem.size, fpr * non.size
    keep = tp + fp > 0
    return tpr[keep], tp[keep] / (tp[keep] + fp[keep])


def average_precision(member_stat, nonmember_stat) -> float:
    """Sum over the cuts of (recall step) x precision (``precision_recall``).

    The step-wise sum of scikit-learn's average_precision_score, without
    interpolation: precision P_n counts on the recall interval (R_{n-1}, R_n].

    Raises:
      ValueError: either sample not 1-D, non-empty and finite.
    """
    recall, precision = precision_recall(member_stat, nonmember_stat)
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


# ---------------------------------------------------------------- intervals and tests


def auc_interval(auc, n_member, n_nonmember, confidence: float = 0.95):
    """Two-sided intervals for AUCs of few models: Clopper-Pearson on a binomial equivalent.

    An AUC from l_in IN and l OUT models is a Mann-Whitney statistic.  It is given the
    interval of a binomial proportion AUC = x/m with m = 3 l_in l / (l_in + l + 1) trials,
    the m for which the binomial variance 1/(4m) equals the Mann-Whitney variance
    (l_in + l + 1) / (12 l_in l) at AUC 1/2 (no leakage).  Towards AUC 0 or 1 the
    Mann-Whitney variance shrinks faster than a binomial one (Hanley and McNeil 1982), so
    the interval is conservative there, and unlike a Wald or DeLong interval it keeps a
    width at complete separation (AUC 1: lower bound tail^(1/m)).  For binormal scores it
    covered 96-100% at 95% for l_in = l from 4 to 64 and true AUC 0.5 to 0.98 (Wald
    intervals from the Hanley-McNeil or DeLong variance covered 35% at l = 8, AUC 0.98),
    at about 1.1x the DeLong width at AUC 0.5.

    Args:
      auc: float[T] AUCs in [0, 1].
      n_member, n_nonmember: int[T] IN and OUT models each AUC came from.
      confidence: two-sided level in (0, 1).

    Returns:
      (lo, hi): float64[T] each; NaN where a side has no model.

    Raises:
      ValueError: confidence outside (0, 1).
    """
    conf = thresholds.check_probability(confidence, "confidence")
    a = np.asarray(auc, np.float64)
    n1 = np.asarray(n_member, np.float64)
    n2 = np.asarray(n_nonmember, np.float64)
    ok = (n1 > 0) & (n2 > 0) & np.isfinite(a)
    m = np.where(ok, 3.0 * n1 * n2 / np.where(ok, n1 + n2 + 1.0, 1.0), 1.0)
    x = np.clip(np.where(ok, a, 0.5), 0.0, 1.0) * m
    tail = (1.0 - conf) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(x > 0, sps.beta.ppf(tail, np.maximum(x, 1e-300), m - x + 1.0), 0.0)
        hi = np.where(x < m, sps.beta.ppf(1.0 - tail, x + 1.0, np.maximum(m - x, 1e-300)), 1.0)
    return np.where(ok, lo, np.nan), np.where(ok, hi, np.nan)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion k / n (Clopper and Pearson 1934).

    lo = Beta^-1((1-level)/2; k, n-k+1), or 0 when k = 0;
    hi = Beta^-1((1+level)/2; k+1, n-k), or 1 when k = n.

    Returns:
      (lo, hi) as floats; (nan, nan) for n = 0, where there is nothing to estimate from.

    Raises:
      ValueError: k or n not an int, not 0 <= k <= n, or level outside (0, 1).
    """
    for v, name in ((k, "k"), (n, "n")):
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    k, n = int(k), int(n)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    level = thresholds.check_probability(level, "level")
    if n == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    lo = 0.0 if k == 0 else float(sps.beta.ppf(tail, k, n - k + 1))
    hi = 1.0 if k == n else float(sps.beta.ppf(1.0 - tail, k + 1, n - k))
    return lo, hi


def rate_over_models(k, n, confidence: float = 0.95):
    """A rate pooled over models, with an interval that takes the model as the unit.

    One model's decisions about many targets share that model (its training run, its
    initialisation): they are not independent trials, and a binomial interval on the
    pooled counts covers the true rate far less often than it says (22% instead of 95%
    in issue 17's simulation at 1,024 targets x 32 evaluation models).  The models
    are independent, so the interval is built over them:

    * the pooled rate p = K / N (K = sum k_e, N = sum n_e), a ratio estimator, with its
      cluster-robust (sandwich) variance V = E/(E-1) * sum_e (k_e - p n_e)^2 / N^2 over
      the E models that made a decision of the kind; the interval is
      expit(logit(p) ± t_{E-1} sqrt(V) / (p (1-p))), the sandwich on the logit scale
      (delta method), with Student t's E-1 degrees of freedom since V comes from E
      models.  On the logit scale the bounds follow the skew of a rate near 0 or 1: on
      the linear scale the upper bound of an FPR near 0.09 missed 5.5% of the time
      instead of 2.5%, on the logit scale 3.5%;
    * never narrower than Clopper-Pearson on the pooled counts (the interval if the
      decisions were independent): without any spread between models (equal rates)
      the sandwich has none to show;
    * at p = 0 (or 1) no model shows an event (or a non-event) and there is no spread
      to estimate from; the bound there is exact with the model as the unit, for any
      dependence inside a model: a model's rate r in [0, 1] with mean mu has
      P(r = 0) <= 1 - mu, so P(no event in E models) <= (1 - mu)^E, which gives
      1 - tail^(1/E) (and tail^(1/E) as the lower bound at p = 1).

    Issue 17's simulation (a per-model random effect that makes two decisions of a model
    correlate by 0.082) measured 0.93-0.97 coverage for a sandwich interval;
    tests/test_attack_metrics.py repeats it at that scale (1,024 targets, 32 models).
    Still asymptotic in E: for rates below ~2% the per-model counts are skewed and
    the upper bound missed 4-6% of the time at E = 16-32 (2.5% nominal).  With fewer
    than ~16 models the interval is wide and its coverage rough; with one model it
    is [0, 1].

    Args:
      k: int[E], the events (true positives, false positives, ...) of each model.
      n: int[E], the decisions of that kind each model made (0 <= k <= n).
      confidence: two-sided level in (0, 1); each bound is one-sided at
        1 - (1 - confidence)/2.

    Returns:
      (rate, lo, hi) floats, or (None, None, None) when no model made such a decision.

    Raises:
      ValueError: k and n not 1-D integer arrays of one length with 0 <= k <= n;
        confidence outside (0, 1).
    """
    conf = thresholds.check_probability(confidence, "confidence")
    k = np.asarray(k)
    n = np.asarray(n)
    if k.ndim != 1 or n.shape != k.shape or (k.size and not np.issubdtype(k.dtype, np.integer)):
        raise ValueError(
            f"k and n must be 1-D integer arrays of one length, got {k.shape}, {n.shape}"
        )
    k, n = k.astype(np.int64), n.astype(np.int64)
    if ((k < 0) | (k > n)).any():
        raise ValueError("need 0 <= k <= n for every model")
    k, n = k[n > 0], n[n > 0]
    e = int(k.size)
    if e == 0:
        return None, None, None
    big_k, big_n = int(k.sum()), int(n.sum())
    rate = big_k / big_n
    if e == 1:
        return rate, 0.0, 1.0
    tail = (1.0 - conf) / 2.0
    lo, hi = clopper_pearson(big_k, big_n, conf)
    if big_k == 0:
        hi = max(hi, 1.0 - tail ** (1.0 / e))
    elif big_k == big_n:
        lo = min(lo, tail ** (1.0 / e))
    else:
        from scipy.special import expit, logit

        se = math.sqrt(e / (e - 1) * float(np.sum((k - rate * n) ** 2))) / big_n
        half = float(sps.t.ppf(1.0 - tail, e - 1)) * se / (rate * (1.0 - rate))
        centre = float(logit(rate))
        lo = min(lo, float(expit(centre - half)))
        hi = max(hi, float(expit(centre + half)))
    return rate, lo, hi


def t_interval(values, confidence: float = 0.95, *, bounds=None) -> dict:
    """Mean, sample std and Student-t interval of the mean of R values (None: undefined).

    Args:
      values: R floats or None (None: the quantity is undefined in that repetition).
      confidence: level of the two-sided interval, in (0, 1).
      bounds: (lo, hi) to clip the interval to (a rate's [0, 1]), or None.

    Returns:
      {mean, std, ci: [lo, hi] or None, n: values used, note: why something is null or
      what it rests on, or None}. The interval is mean ± t_{(1+confidence)/2, m-1} s/sqrt(m)
      over the m defined values; it needs m >= 2.

    Raises:
      ValueError: confidence outside (0, 1).
    """
    conf = float(confidence)
    if not 0.0 < conf < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    vals = [float(v) for v in values if v is not None]
    undefined = len(values) - len(vals)
    if not vals:
        return {
            "mean": None,
            "std": None,
            "ci": None,
            "n": 0,
            "note": "undefined in every repetition",
        }
    arr = np.asarray(vals, np.float64)
    # Equal values have exactly their value as mean (np.mean of three 0.7 is 0.6999...98).
    mean = float(np.mean(arr)) if np.ptp(arr) > 0 else float(arr[0])
    note = f"over the {len(vals)} repetitions where it is defined" if undefined else None
    if arr.size < 2:
        why = "one repetition: no spread to build an interval from (repetitions >= 2)"
        return {"mean": mean, "std": None, "ci": None, "n": 1, "note": why}
    std = float(np.std(arr, ddof=1)) if np.ptp(arr) > 0 else 0.0
    half = float(sps.t.ppf(0.5 + conf / 2.0, arr.size - 1)) * std / math.sqrt(arr.size)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "std": std, "ci": [lo, hi], "n": int(arr.size), "note": note}


def ks_test(a, b) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test of float[n_a] against float[n_b]: (statistic, p).

    Whether two samples of scores could come from one distribution (the benchmark
    asks it of jaxmia's losses and the PyTorch baseline's).

    Raises:
      ValueError: either sample not 1-D, non-empty and finite.
    """
    x = scores.check_scores(a, "first sample")
    y = scores.check_scores(b, "second sample")
    res = sps.ks_2samp(x, y)
    return float(res.statistic), float(res.pvalue)
