"""Host-side statistics of the target's losses: threshold, power, Gaussian fits, ROC, intervals.

Everything here takes plain 1-D float arrays (numpy, or anything ``np.asarray``
accepts) and returns Python floats or numpy arrays; JAX stops before this module.

Decision rule used throughout: **say "member" iff loss < t** (strict). Members
were trained on the target, so their loss on it tends to be lower.

Empirical threshold. Let N be the number of non-member losses, ``sorted_non``
them in ascending order, and k = floor(alpha * N) (taken as the largest
integer with k / N <= alpha, so that rounding in the product alpha * N cannot
drop one: 0.29 * 100 is 28.999... in floating point). The threshold is
``t = sorted_non[k]`` (0-indexed), the (k+1)-th smallest non-member loss. Why:
the empirical FPR(t) = #{non-member < t} / N and power(t) = #{member < t} / n_member
both grow (weakly) with t, so the most powerful t whose FPR is at most alpha is
the largest t allowed; and any t above ``sorted_non[k]`` would have the k+1
smallest non-member losses below it, an FPR of (k+1)/N > alpha. Counting is
strict, so when non-member losses tie at ``sorted_non[k]`` fewer than k of them
lie below t and the FPR falls below alpha. If alpha * N < 1 then k = 0 and t is
the smallest non-member loss, with FPR 0: the rule rests on N samples and
cannot resolve FPRs below 1/N.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from scipy import stats as sps

from jaxmia import scores

__all__ = [
    "CONFIDENT_RISK",
    "SCORES",
    "THRESHOLD_RULES",
    "TPR_AT_FPR_LEVELS",
    "Decision",
    "GaussianFit",
    "attack_auc",
    "attack_roc",
    "attack_summaries",
    "attack_summary",
    "attack_tpr_at_fpr",
    "balanced_accuracy",
    "choose_threshold",
    "clopper_pearson_upper",
    "epsilon_lower_bound",
    "evaluate_decision",
    "gaussian_heldout_fpr",
    "heldout_fpr_law",
    "likelihood_ratio_region",
    "log_likelihood_ratio",
    "order_statistic_k",
    "ThresholdResult",
    "auc",
    "check_losses",
    "clopper_pearson",
    "empirical_threshold",
    "evaluate_predictions",
    "fit_gaussian",
    "fit_kde",
    "gaussian_threshold",
    "ks_test",
    "roc_curve",
    "summarize",
    "tpr_at_fpr",
]


# ---------------------------------------------------------------- validation


def check_losses(x, name: str = "losses") -> np.ndarray:
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


def _check_alpha(alpha, name: str = "alpha") -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise ValueError(f"{name} must be a number in (0, 1), got {alpha!r}")
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {a}")
    return a


def _allowed_below(alpha: float, n: int) -> int:
    """k = floor(alpha * n), robust to rounding in ``alpha * n``.

    In floating point 0.29 * 100 is 28.999999999999996; the intended k is the
    largest integer with k / n <= alpha, which is what the FPR check compares.
    """
    k = math.floor(alpha * n)
    while k + 1 <= n and (k + 1) / n <= alpha:
        k += 1
    while k > 0 and k / n > alpha:
        k -= 1
    return k


# ---------------------------------------------------------------- threshold


@dataclass(frozen=True)
class ThresholdResult:
    """The empirical threshold and what it achieves on the data it came from.

    Attributes:
      threshold: t; the rule says "member" iff loss < t.
      power: #{member < t} / n_member.
      fpr: #{non-member < t} / n_nonmember (at most alpha; below it on ties).
      n_member, n_nonmember: sample sizes.
      k: floor(alpha * n_nonmember), the number of non-members allowed below t.
    """

    threshold: float
    power: float
    fpr: float
    n_member: int
    n_nonmember: int
    k: int


def empirical_threshold(member, nonmember, alpha: float) -> ThresholdResult:
    """The most powerful threshold whose empirical FPR is at most ``alpha``.

    Args:
      member: float[n_member], losses of the target under models trained with it.
      nonmember: float[n_nonmember], losses under models trained without it.
      alpha: target FPR, in (0, 1).

    Returns:
      ThresholdResult with ``threshold = sort(nonmember)[k]``, k = floor(alpha * N)
      (see the module docstring for why this is optimal, and for ties and
      alpha * N < 1).
    """
    mem = check_losses(member, "member losses")
    non = check_losses(nonmember, "non-member losses")
    a = _check_alpha(alpha)
    sorted_non = np.sort(non)
    n_non = sorted_non.size
    k = _allowed_below(a, n_non)
    t = float(sorted_non[k])
    return ThresholdResult(
        threshold=t,
        power=float(np.count_nonzero(mem < t) / mem.size),
        fpr=float(np.count_nonzero(sorted_non < t) / n_non),
        n_member=int(mem.size),
        n_nonmember=int(n_non),
        k=int(k),
    )


def tpr_at_fpr(member, nonmember, fpr: float) -> float:
    """Power of the empirical threshold at FPR <= ``fpr`` (a float in [0, 1])."""
    return empirical_threshold(member, nonmember, _check_alpha(fpr, "fpr")).power


# ---------------------------------------------------------------- Gaussian fits


@dataclass(frozen=True)
class GaussianFit:
    """A normal distribution fitted to losses: mean and sample std (ddof=1; 0 for n=1)."""

    mean: float
    std: float


def fit_gaussian(x) -> GaussianFit:
    """Mean and standard deviation (ddof=1, or 0 for a single value) of float[n]."""
    arr = check_losses(x, "losses")
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else 0.0
    return GaussianFit(mean=float(np.mean(arr)), std=std)


def gaussian_threshold(
    member_fit: GaussianFit, nonmember_fit: GaussianFit, alpha: float
) -> tuple[float, float]:
    """Threshold and power when both loss distributions are the fitted normals.

    t = mu_non + sd_non * Phi^-1(alpha), so that P(non-member loss < t) = alpha;
    power = P(member loss < t) = Phi((t - mu_mem) / sd_mem).

    A zero standard deviation means a point mass. For the non-members (all
    losses equal) t = mu_non: no non-member loss is strictly below it (FPR 0
    <= alpha) and no larger t keeps the FPR at most alpha. For the members the
    power is 1.0 if mu_mem < t and 0.0 otherwise, following the strict rule.

    Returns:
      (threshold, power) as Python floats.
    """
    a = _check_alpha(alpha)
    for fit, name in ((member_fit, "member fit"), (nonmember_fit, "non-member fit")):
        if not (math.isfinite(fit.mean) and math.isfinite(fit.std) and fit.std >= 0):
            raise ValueError(f"{name} must have a finite mean and a finite std >= 0, got {fit}")
    if nonmember_fit.std > 0:
        t = nonmember_fit.mean + nonmember_fit.std * float(sps.norm.ppf(a))
    else:
        t = nonmember_fit.mean
    if member_fit.std > 0:
        power = float(sps.norm.cdf((t - member_fit.mean) / member_fit.std))
    else:
        power = 1.0 if member_fit.mean < t else 0.0
    return float(t), power


def fit_kde(x):
    """A ``scipy.stats.gaussian_kde`` of float[n], or None when it cannot be fitted.

    A KDE needs at least two distinct values (otherwise its bandwidth, scaled by
    the sample covariance, is zero).
    """
    arr = check_losses(x, "losses")
    if np.unique(arr).size < 2:
        return None
    try:
        return sps.gaussian_kde(arr)
    except (np.linalg.LinAlgError, ValueError):
        return None


# ---------------------------------------------------------------- ROC and AUC


def roc_curve(member, nonmember) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve of the rule loss < t over every distinct threshold.

    Thresholds are the distinct pooled losses in ascending order followed by
    +inf. At the smallest pooled loss nothing is strictly below, so the curve
    starts at (0, 0); at +inf everything is, so it ends at (1, 1).

    Returns:
      (fpr, tpr, thresholds), each float64[n_distinct + 1], fpr and tpr
      non-decreasing.
    """
    mem = np.sort(check_losses(member, "member losses"))
    non = np.sort(check_losses(nonmember, "non-member losses"))
    thresholds = np.append(np.unique(np.concatenate([mem, non])), np.inf)
    fpr = np.searchsorted(non, thresholds, side="left") / non.size
    tpr = np.searchsorted(mem, thresholds, side="left") / mem.size
    return fpr.astype(np.float64), tpr.astype(np.float64), thresholds


def auc(member, nonmember) -> float:
    """P(member loss < non-member loss), ties counted 1/2 (Mann-Whitney U / (n_m n_n)).

    Equals the trapezoidal area under ``roc_curve``: between two consecutive
    thresholds the curve moves by the members and non-members tied at one
    value, and the trapezoid over that step is exactly half of their tied pairs.
    """
    mem = np.sort(check_losses(member, "member losses"))
    non = check_losses(nonmember, "non-member losses")
    below = np.searchsorted(mem, non, side="left")
    at_or_below = np.searchsorted(mem, non, side="right")
    wins = below.sum() + 0.5 * (at_or_below - below).sum()
    return float(wins / (mem.size * non.size))


# ---------------------------------------------------------------- intervals and tests


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for a binomial proportion k / n.

    lo = Beta^-1((1-level)/2; k, n-k+1), or 0 when k = 0;
    hi = Beta^-1((1+level)/2; k+1, n-k), or 1 when k = n.
    n = 0 gives (nan, nan): there is nothing to estimate from.
    """
    for v, name in ((k, "k"), (n, "n")):
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    k, n = int(k), int(n)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    level = _check_alpha(level, "level")
    if n == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    lo = 0.0 if k == 0 else float(sps.beta.ppf(tail, k, n - k + 1))
    hi = 1.0 if k == n else float(sps.beta.ppf(1.0 - tail, k + 1, n - k))
    return lo, hi


def ks_test(a, b) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test of float[n_a] vs float[n_b]: (statistic, p-value)."""
    x = check_losses(a, "first sample")
    y = check_losses(b, "second sample")
    res = sps.ks_2samp(x, y)
    return float(res.statistic), float(res.pvalue)


# ---------------------------------------------------------------- summaries


def summarize(member, nonmember, alpha: float) -> dict:
    """Every statistic of the calibration losses that goes into results.json.

    Args:
      member: float[n_member]; nonmember: float[n_nonmember]; alpha in (0, 1).

    Returns:
      dict of Python floats and ints with keys threshold, power, fpr, k,
      n_member, n_nonmember, gaussian_threshold, gaussian_power, auc,
      member_loss_mean, member_loss_std, nonmember_loss_mean, nonmember_loss_std.
      The stds use ddof=1 (0 for a single value).
    """
    mem = check_losses(member, "member losses")
    non = check_losses(nonmember, "non-member losses")
    emp = empirical_threshold(mem, non, alpha)
    m_fit, n_fit = fit_gaussian(mem), fit_gaussian(non)
    g_t, g_power = gaussian_threshold(m_fit, n_fit, alpha)
    return {
        "threshold": emp.threshold,
        "power": emp.power,
        "fpr": emp.fpr,
        "k": emp.k,
        "n_member": emp.n_member,
        "n_nonmember": emp.n_nonmember,
        "gaussian_threshold": g_t,
        "gaussian_power": g_power,
        "auc": auc(mem, non),
        "member_loss_mean": m_fit.mean,
        "member_loss_std": m_fit.std,
        "nonmember_loss_mean": n_fit.mean,
        "nonmember_loss_std": n_fit.std,
    }


def evaluate_predictions(member_flags, losses, threshold: float) -> dict:
    """Applies the rule loss < threshold to held-out models and scores it.

    Args:
      member_flags: bool[E], True where the model was trained with the target.
      losses: float[E], the target's loss under each model. A NaN loss (a
        diverged model) gets no prediction: its ``predicted_member`` and
        ``correct`` are None and it is left out of every count. +inf is a valid
        loss (predicted non-member).
      threshold: t from the calibration rounds.

    Returns:
      JSON-ready dict:
        items: list of {member, loss, predicted_member, correct}, in input order;
        n_items, n_member, n_nonmember, n_undecided, n_correct,
        true_positives, false_positives: ints over the decided items;
        accuracy: n_correct / decided items (None if none is decided);
        tpr, tpr_ci, fpr, fpr_ci: rates and their 95% Clopper-Pearson intervals
          when more than one member and more than one non-member were decided,
          else None.
    """
    flags = np.asarray(member_flags)
    if flags.ndim != 1 or flags.dtype != np.bool_:
        raise ValueError(f"member_flags must be a 1-D bool array, got {flags.dtype}{flags.shape}")
    try:
        vals = np.asarray(losses, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"losses must be an array of numbers: {e}") from None
    if vals.shape != flags.shape:
        raise ValueError(f"losses shape {vals.shape} differs from member_flags {flags.shape}")
    t = float(threshold)
    if math.isnan(t):
        raise ValueError("threshold is NaN")

    items = []
    for is_member, loss in zip(flags.tolist(), vals.tolist(), strict=True):
        if math.isnan(loss):
            predicted = correct = None
        else:
            predicted = loss < t
            correct = predicted == is_member
        items.append(
            {"member": is_member, "loss": loss, "predicted_member": predicted, "correct": correct}
        )

    decided = [it for it in items if it["predicted_member"] is not None]
    n_mem = sum(it["member"] for it in decided)
    n_non = len(decided) - n_mem
    tp = sum(it["member"] and it["predicted_member"] for it in decided)
    fp = sum((not it["member"]) and it["predicted_member"] for it in decided)
    n_correct = sum(it["correct"] for it in decided)
    out = {
        "items": items,
        "n_items": len(items),
        "n_member": int(n_mem),
        "n_nonmember": int(n_non),
        "n_undecided": len(items) - len(decided),
        "n_correct": int(n_correct),
        "true_positives": int(tp),
        "false_positives": int(fp),
        "accuracy": n_correct / len(decided) if decided else None,
        "tpr": None,
        "tpr_ci": None,
        "fpr": None,
        "fpr_ci": None,
    }
    if n_mem > 1 and n_non > 1:
        out["tpr"] = tp / n_mem
        out["tpr_ci"] = list(clopper_pearson(int(tp), int(n_mem)))
        out["fpr"] = fp / n_non
        out["fpr_ci"] = list(clopper_pearson(int(fp), int(n_non)))
    return out


# ================================================================ the attack (issue 8)
#
# Everything below works on the *attack statistic* s = scores.to_attack(native, score),
# HIGH = member, with the one decision rule "member iff s > u" (strict). For the loss
# that is exactly the rule above (s = -loss, u = -t: -loss > -t iff loss < t), so the
# empirical rule below gives the same threshold, power and FPR as ``empirical_threshold``.
#
# Order-statistic rules. With the l calibration non-member statistics sorted from the
# most member-like down, s_(1) >= s_(2) >= ... >= s_(l), a rule picks k and sets
# u = s_(k+1): at most k non-members lie strictly beyond u (fewer on ties). For a fresh
# non-member model with a continuous statistic, FPR(u) = P(S > u) = 1 - F(s_(k+1)), and
# F(s_(k+1)) ~ Beta(l-k, k+1), so the held-out FPR ~ Beta(k+1, l-k), mean (k+1)/(l+1),
# whatever the distribution of S (ties only lower it). The rules differ in k:
#   empirical:  k = floor(alpha*l)          (calibration FPR <= alpha; held-out mean
#                                            (k+1)/(l+1), above alpha)
#   conformal:  k = floor(alpha*(l+1)) - 1  (held-out mean floor(alpha(l+1))/(l+1) <= alpha;
#                                            none when alpha*(l+1) < 1)
#   confident:  the largest k with P(Beta(k+1, l-k) > alpha) <= 5%  (none when even k=0,
#                                            P = (1-alpha)^l, exceeds 5%)

SCORES = scores.SCORES
THRESHOLD_RULES = ("empirical", "conformal", "confident", "gaussian", "lira")
TPR_AT_FPR_LEVELS = (0.001, 0.01, 0.1)
CONFIDENT_RISK = 0.05  # the `confident` rule's chance of a held-out FPR above alpha
HELDOUT_LEVEL = 0.95  # the level of expected_heldout_fpr_upper95


@functools.lru_cache(maxsize=4096)  # pure in its arguments; many targets repeat them
def order_statistic_k(rule: str, n: int, alpha: float) -> int | None:
    """k of an order-statistic rule: non-members allowed strictly beyond the threshold.

    n is l, the number of calibration non-member models.

    The threshold is the (k+1)-th most member-like of the l calibration non-member
    statistics. None when l is too small for the rule at this alpha (conformal: alpha *
    (l+1) < 1; confident: (1 - alpha)^l > 5%). Depends on (rule, l, alpha) only, never
    on the data, which is what makes the held-out law Beta(k+1, l-k) exact.
    """
    a = _check_alpha(alpha)
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"l must be a positive integer, got {n!r}")
    if rule == "empirical" or rule == "lira":
        return _allowed_below(a, n)
    if rule == "conformal":
        j = _allowed_below(a, n + 1)  # largest j with j / (n+1) <= alpha
        return j - 1 if j >= 1 else None
    if rule == "confident":
        ks = np.arange(n)
        risk = sps.beta.sf(a, ks + 1, n - ks)  # P(held-out FPR > alpha), increasing in k
        ok = np.flatnonzero(risk <= CONFIDENT_RISK)
        return int(ok[-1]) if ok.size else None
    raise ValueError(f"{rule!r} is not an order-statistic rule")


@functools.lru_cache(maxsize=4096)  # pure in its arguments; many targets repeat them
def heldout_fpr_law(k: int, n: int, level: float = HELDOUT_LEVEL) -> tuple[float, float]:
    """(mean, upper ``level`` quantile) of Beta(k+1, l-k), the held-out FPR of s_(k+1)."""
    return (k + 1) / (n + 1), float(sps.beta.ppf(level, k + 1, n - k))


@functools.lru_cache(maxsize=4096)  # pure in its arguments; many targets repeat them
def gaussian_heldout_fpr(alpha: float, n: int, level: float = HELDOUT_LEVEL):
    """Held-out FPR of the gaussian rule when the non-member statistic really is normal.

    The rule sets u = mean + z * sd (sample mean, sample sd with ddof=1, z = Phi^-1(1 -
    alpha)) on l draws. For a fresh draw X, (X - mean) / (sd * sqrt(1 + 1/l)) is Student t
    with l-1 degrees of freedom, so the expected held-out FPR is exactly
    P(T_{l-1} > z / sqrt(1 + 1/l)) (above alpha for finite l). The FPR given the fit,
    1 - Phi((u - mu) / sigma), is <= p iff a noncentral t with l-1 degrees of freedom and
    noncentrality sqrt(l) * Phi^-1(1 - p) is <= z * sqrt(l); the upper ``level`` bound is
    the p where that probability is ``level``.

    Returns:
      (mean, upper) as floats, or (None, None) for l < 2.
    """
    a = _check_alpha(alpha)
    if n < 2:
        return None, None
    from scipy.optimize import brentq

    z, df = float(sps.norm.isf(a)), n - 1
    mean = float(sps.t.sf(z / math.sqrt(1.0 + 1.0 / n), df))
    q = z * math.sqrt(n)

    def gap(nc):
        cdf = float(sps.nct.cdf(q, df, nc))
        if not math.isfinite(cdf):
            # scipy's noncentral t can return NaN far in its tail; below q the
            # probability there is 1 to double precision, above it 0.
            cdf = 1.0 if nc < q else 0.0
        return cdf - level

    spread = math.sqrt(1.0 + q * q / (2.0 * df))
    lo = q - 10.0 * spread
    while gap(lo) < 0:
        lo -= 10.0 * spread
    nc = brentq(gap, lo, q, xtol=1e-12)
    return mean, float(sps.norm.sf(nc / math.sqrt(n)))


def log_likelihood_ratio(x, member_fit: GaussianFit, nonmember_fit: GaussianFit) -> np.ndarray:
    """log N(x; mu_in, sd_in) - log N(x; mu_out, sd_out), float64 like x (both sd > 0)."""
    v = np.asarray(x, dtype=np.float64)
    return sps.norm.logpdf(v, member_fit.mean, member_fit.std) - sps.norm.logpdf(
        v, nonmember_fit.mean, nonmember_fit.std
    )


def likelihood_ratio_region(member_fit: GaussianFit, nonmember_fit: GaussianFit, c: float):
    """Where log_likelihood_ratio(x) > c, as a list of [lo, hi] (None = unbounded).

    log LR(x) - c = A x^2 + B x + C0 with A = (1/sd_out^2 - 1/sd_in^2) / 2,
    B = mu_in/sd_in^2 - mu_out/sd_out^2,
    C0 = mu_out^2/(2 sd_out^2) - mu_in^2/(2 sd_in^2) + log(sd_out/sd_in) - c:
    a half-line when the sds are equal, two half-lines when the members are wider
    (A > 0), one interval when they are narrower (A < 0).
    """
    mi, si, mo, so = member_fit.mean, member_fit.std, nonmember_fit.mean, nonmember_fit.std
    a = 0.5 * (1.0 / so**2 - 1.0 / si**2)
    b = mi / si**2 - mo / so**2
    c0 = mo**2 / (2 * so**2) - mi**2 / (2 * si**2) + math.log(so / si) - float(c)
    if a == 0.0:
        if b == 0.0:
            return [[None, None]] if c0 > 0 else []
        root = -c0 / b
        return [[root, None]] if b > 0 else [[None, root]]
    disc = b * b - 4.0 * a * c0
    if disc <= 0.0:
        return [[None, None]] if a > 0 else []
    # The stable form of the quadratic formula (no cancellation in -b + sqrt(disc)).
    qq = -0.5 * (b + math.copysign(math.sqrt(disc), b))
    r1, r2 = sorted((qq / a, c0 / qq))
    return [[None, r1], [r2, None]] if a > 0 else [[r1, r2]]


@dataclass(frozen=True)
class Decision:
    """A chosen membership rule: "member iff statistic(native) > cut" (strict).

    Attributes:
      score: one of scores.SCORES.
      rule: one of THRESHOLD_RULES.
      cut: the cut on the rule's statistic: the attack statistic s (high = member) for
        every rule but ``lira``, the log likelihood ratio for ``lira``. +inf: nobody is
        called a member (the data cannot support the rule).
      k: non-members allowed beyond the cut for order-statistic rules, else None.
      member_fit, nonmember_fit: for ``lira``, the Gaussians on the native scale.
    """

    score: str
    rule: str
    cut: float
    k: int | None = None
    member_fit: GaussianFit | None = None
    nonmember_fit: GaussianFit | None = None

    def statistic(self, native) -> np.ndarray:
        """The rule's statistic (high = member) of native score values, float64."""
        if self.rule == "lira" and self.member_fit is not None:
            return log_likelihood_ratio(native, self.member_fit, self.nonmember_fit)
        return scores.to_attack(native, self.score)

    def predict(self, native) -> np.ndarray:
        """bool: member or not, for native score values (NaN -> False)."""
        with np.errstate(invalid="ignore"):
            return self.statistic(native) > self.cut

    @property
    def threshold(self) -> float | None:
        """The cut on the native scale (the log LR for ``lira``); None if there is none."""
        if not math.isfinite(self.cut):
            return None
        if self.rule == "lira":
            return float(self.cut)
        return float(scores.from_attack(self.cut, self.score))

    def text(self) -> str:
        """The rule in words, on the native scale."""
        if not math.isfinite(self.cut):
            return "never member (too few calibration models for this rule at this alpha)"
        if self.rule == "lira":
            sym = scores.SYMBOLS[self.score]
            m, n = self.member_fit, self.nonmember_fit
            return (
                f"member iff log N({sym}; {m.mean:.4g}, {m.std:.4g}) - "
                f"log N({sym}; {n.mean:.4g}, {n.std:.4g}) > {self.cut:.6g}"
            )
        return scores.decision_text(self.score, self.threshold)


def _fit(values: np.ndarray) -> GaussianFit:
    # Equal values have std exactly 0 (np.std can return 1e-17 from the rounded mean).
    std = float(np.std(values, ddof=1)) if np.ptp(values) > 0 else 0.0
    return GaussianFit(mean=float(np.mean(values)), std=std)


def _cut_at_k(stat_non: np.ndarray, k: int) -> float:
    """s_(k+1): the (k+1)-th largest of float[l]."""
    return float(np.sort(stat_non)[stat_non.size - 1 - k])


def _check_rule(rule: str) -> str:
    if rule not in THRESHOLD_RULES:
        raise ValueError(
            f"threshold_rule must be one of {', '.join(THRESHOLD_RULES)}; got {rule!r}"
        )
    return rule


def choose_threshold(
    member, nonmember, *, alpha: float, rule: str = "empirical", score: str = "loss"
) -> tuple[Decision, list[str]]:
    """The membership rule ``rule`` fitted on calibration scores at level ``alpha``.

    Args:
      member, nonmember: float[l_in], float[l] native scores of the calibration IN and
        OUT models (finite).
      alpha: the FPR asked for, in (0, 1).
      rule: one of THRESHOLD_RULES (see the module comments and the README).
      score: one of scores.SCORES: says which way the native values point.

    Returns:
      (Decision, warnings): warnings are one-line strings saying what the data cannot
      support (then the Decision may call nobody a member).
    """
    mem = check_losses(member, "member scores")
    non = check_losses(nonmember, "non-member scores")
    a = _check_alpha(alpha)
    _check_rule(rule)
    s_non = scores.to_attack(non, score)
    n = non.size
    warnings: list[str] = []
    never = math.inf
    if rule in ("empirical", "conformal", "confident"):
        k = order_statistic_k(rule, n, a)
        if k is None:
            if rule == "conformal":
                need = math.ceil(1.0 / a - 1.0 - 1e-12)
                warnings.append(
                    f"conformal: l={n} non-member models cannot give an expected held-out FPR "
                    f"<= alpha={a:g} (needs l >= {need}); no threshold, nobody is called a member"
                )
            else:
                need = math.ceil(math.log(CONFIDENT_RISK) / math.log1p(-a) - 1e-12)
                warnings.append(
                    f"confident: l={n} non-member models cannot keep the held-out FPR <= "
                    f"alpha={a:g} with 95% probability (needs l >= {need}); no threshold, "
                    "nobody is called a member"
                )
            return Decision(score, rule, never), warnings
        return Decision(score, rule, _cut_at_k(s_non, k), k=k), warnings
    if rule == "gaussian":
        fit = _fit(s_non)
        if fit.std > 0:
            cut = fit.mean + fit.std * float(sps.norm.isf(a))
        else:
            cut = fit.mean  # a point mass: nothing strictly beyond it
            warnings.append(
                "gaussian: the non-member scores have std 0; the threshold is their common "
                "value and its FPR cannot be estimated"
            )
        return Decision(score, rule, float(cut)), warnings
    # rule == "lira": likelihood ratio of the two fitted Gaussians, cut at alpha.
    m_fit, n_fit = _fit(mem), _fit(non)
    if m_fit.std <= 0 or n_fit.std <= 0:
        warnings.append(
            "lira: a likelihood ratio needs a non-zero std of both member and non-member "
            f"scores (got {m_fit.std:.3g} and {n_fit.std:.3g}); no threshold, nobody is "
            "called a member"
        )
        return Decision(score, rule, never), warnings
    lr_non = log_likelihood_ratio(non, m_fit, n_fit)
    k = order_statistic_k("lira", n, a)
    return Decision(score, rule, _cut_at_k(lr_non, k), k, m_fit, n_fit), warnings


# ---------------------------------------------------------------- metrics on s


def attack_roc(member_stat, nonmember_stat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of "member iff s > u" over every distinct u, for statistics with high = member.

    Returns:
      (fpr, tpr, cuts), float64[n_distinct + 1]: cuts are the distinct pooled values in
      descending order then -inf, so the curve runs from (0, 0) to (1, 1).
    """
    mem = np.sort(np.asarray(member_stat, dtype=np.float64))
    non = np.sort(np.asarray(nonmember_stat, dtype=np.float64))
    cuts = np.append(np.unique(np.concatenate([mem, non]))[::-1], -np.inf)
    fpr = (non.size - np.searchsorted(non, cuts, side="right")) / non.size
    tpr = (mem.size - np.searchsorted(mem, cuts, side="right")) / mem.size
    return fpr, tpr, cuts


def attack_auc(member_stat, nonmember_stat) -> float:
    """P(s_member > s_nonmember), ties counted 1/2."""
    mem = np.sort(np.asarray(member_stat, dtype=np.float64))
    non = np.asarray(nonmember_stat, dtype=np.float64)
    below = np.searchsorted(mem, non, side="left")
    at_or_below = np.searchsorted(mem, non, side="right")
    wins = (mem.size - at_or_below).sum() + 0.5 * (at_or_below - below).sum()
    return float(wins / (mem.size * non.size))


def balanced_accuracy(member_stat, nonmember_stat) -> float:
    """max over cuts u of (TPR(u) + 1 - FPR(u)) / 2 (0.5 at worst: u = +-inf)."""
    fpr, tpr, _ = attack_roc(member_stat, nonmember_stat)
    return float(np.max((tpr + 1.0 - fpr) / 2.0))


def attack_tpr_at_fpr(member_stat, nonmember_stat, fpr: float) -> float | None:
    """TPR of the empirical cut at FPR <= ``fpr``; None when floor(fpr * l) = 0 (unresolvable)."""
    non = np.asarray(nonmember_stat, dtype=np.float64)
    k = _allowed_below(_check_alpha(fpr, "fpr"), non.size)
    if k == 0:
        return None
    cut = _cut_at_k(non, k)
    return float(np.count_nonzero(np.asarray(member_stat) > cut) / np.size(member_stat))


def clopper_pearson_upper(k, n, level: float):
    """One-sided upper Clopper-Pearson bound(s): P(Bin(n, p) <= k) = 1 - level; 1 where k = n."""
    k = np.asarray(k)
    n = np.asarray(n)
    with np.errstate(invalid="ignore"):
        ub = sps.beta.ppf(level, k + 1, np.maximum(n - k, 1))
    return np.where(k >= n, 1.0, ub)


def epsilon_lower_bound(fp, n_nonmember, fn, n_member, *, confidence=0.95, delta=0.0):
    """Jagielski et al. (2020) empirical epsilon lower bound(s) from error counts.

    With one-sided Clopper-Pearson upper bounds FPR_ub, FNR_ub, each at level
    1 - (1 - confidence)/2 (so both hold at once with probability >= confidence):
    eps = log((1 - delta - FNR_ub) / FPR_ub), and 0 where that is not positive.
    The symmetric version also tries the reversed test, log((1 - delta - FPR_ub) /
    FNR_ub), and keeps the larger. Works elementwise on arrays of counts.

    Returns:
      (eps, eps_symmetric, fpr_ub, fnr_ub): float64 arrays (0-d for scalar input).
    """
    conf = _check_alpha(confidence, "confidence")
    d = float(delta)
    if not 0.0 <= d < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    level = 1.0 - (1.0 - conf) / 2.0
    fpr_ub = clopper_pearson_upper(fp, n_nonmember, level)
    fnr_ub = clopper_pearson_upper(fn, n_member, level)

    def bound(num_ub, den_ub):
        num = 1.0 - d - num_ub
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.log(np.where(num > 0, num, 1.0)) - np.log(den_ub)
        return np.where(num > 0, np.maximum(e, 0.0), 0.0)

    eps = bound(fnr_ub, fpr_ub)
    eps_sym = np.maximum(eps, bound(fpr_ub, fnr_ub))
    return eps, eps_sym, fpr_ub, fnr_ub


# ---------------------------------------------------------------- the summary


def _eval_array(x, name: str) -> np.ndarray:
    if x is None:
        return np.zeros(0)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def evaluate_decision(
    decision: Decision, eval_member, eval_nonmember, *, confidence: float = 0.95, items=True
) -> dict | None:
    """Applies ``decision`` to the evaluation models' native scores and scores it.

    Args:
      eval_member: float[E_in]; eval_nonmember: float[E_out] (NaN: no prediction).
      confidence: level of the two-sided Clopper-Pearson intervals.
      items: include the per-model list.

    Returns:
      None when there is no evaluation model, else a JSON-ready dict: n_member,
      n_nonmember, n_undecided, true_positives, false_negatives, false_positives,
      true_negatives, tpr, tpr_ci, fpr, fpr_ci (None without models of that kind),
      accuracy, confidence, and items: [{member, score, predicted_member, correct}]
      (also ``loss`` for the loss score), IN and OUT interleaved pair by pair.
    """
    em = _eval_array(eval_member, "eval member scores")
    en = _eval_array(eval_nonmember, "eval non-member scores")
    if em.size + en.size == 0:
        return None
    conf = _check_alpha(confidence, "confidence")
    pm, pn = decision.predict(em), decision.predict(en)
    dm, dn = ~np.isnan(em), ~np.isnan(en)
    tp, fn = int(np.count_nonzero(pm & dm)), int(np.count_nonzero(~pm & dm))
    fp, tn = int(np.count_nonzero(pn & dn)), int(np.count_nonzero(~pn & dn))
    n_mem, n_non = tp + fn, fp + tn
    out = {
        "n_member": n_mem,
        "n_nonmember": n_non,
        "n_undecided": int(em.size + en.size - n_mem - n_non),
        "true_positives": tp,
        "false_negatives": fn,
        "false_positives": fp,
        "true_negatives": tn,
        "tpr": tp / n_mem if n_mem else None,
        "tpr_ci": list(clopper_pearson(tp, n_mem, conf)) if n_mem else None,
        "fpr": fp / n_non if n_non else None,
        "fpr_ci": list(clopper_pearson(fp, n_non, conf)) if n_non else None,
        "accuracy": (tp + tn) / (n_mem + n_non) if n_mem + n_non else None,
        "confidence": conf,
    }
    if items:
        rows = []
        for is_member, vals, preds in ((True, em, pm), (False, en, pn)):
            for i, (v, p) in enumerate(zip(vals.tolist(), preds.tolist(), strict=True)):
                decided = not math.isnan(v)
                row = {
                    "member": is_member,
                    "score": v if decided else None,
                    "predicted_member": bool(p) if decided else None,
                    "correct": (bool(p) == is_member) if decided else None,
                }
                if decision.score == "loss":
                    row["loss"] = row["score"]
                rows.append((i, not is_member, row))
        out["items"] = [row for _, _, row in sorted(rows, key=lambda t: (t[0], t[1]))]
    return out


def _shapiro_p(values: np.ndarray) -> float | None:
    if values.size < 3 or np.ptp(values) == 0:
        return None
    return float(sps.shapiro(values).pvalue)


def attack_summary(
    member,
    nonmember,
    *,
    eval_member=None,
    eval_nonmember=None,
    alpha: float,
    rule: str = "empirical",
    score: str = "loss",
    delta: float = 0.0,
    confidence: float = 0.95,
    items: bool = True,
) -> dict:
    """Every number of the attack on one target, JSON-ready, for results.json.

    Args:
      member, nonmember: float[l_in], float[l] native scores (``score``'s own scale) of
        the calibration IN and OUT models; finite.
      eval_member, eval_nonmember: float[E_in], float[E_out] native scores of the
        evaluation models (None or empty: none; NaN: no prediction for that model).
      alpha: the FPR asked for, in (0, 1).
      rule: one of THRESHOLD_RULES; score: one of scores.SCORES.
      delta, confidence: of the epsilon lower bound (and the evaluation intervals).
      items: include the per-model evaluation list (off for many-target runs).

    Returns:
      dict of floats, ints, None, strings, lists and dicts (no numpy, no NaN). See the
      README's method section for every key; ``warnings`` lists in one line each what
      the data cannot support.
    """
    scores._check_score(score)
    _check_rule(rule)
    a = _check_alpha(alpha)
    conf = _check_alpha(confidence, "confidence")
    mem = check_losses(member, "member scores")
    non = check_losses(nonmember, "non-member scores")
    s_mem, s_non = scores.to_attack(mem, score), scores.to_attack(non, score)
    n = int(non.size)
    warnings: list[str] = []
    if mem.size == 1 or n == 1:
        warnings.append(
            f"only {min(mem.size, n)} calibration model(s) on one side (n_iterations: 1?): "
            "power, AUC and std carry no information"
        )
    if _allowed_below(a, n) == 0:
        warnings.append(
            f"floor(alpha*l) = 0 (alpha={a:g}, l={n}): no FPR below 1/l={1.0 / n:.3g} can be "
            "measured on these models"
            + (
                "; the threshold is the most member-like non-member score"
                if rule in ("empirical", "lira")
                else ""
            )
        )

    decision, rule_warnings = choose_threshold(mem, non, alpha=a, rule=rule, score=score)
    warnings += rule_warnings
    stat_mem, stat_non = decision.statistic(mem), decision.statistic(non)
    with np.errstate(invalid="ignore"):
        power = float(np.count_nonzero(stat_mem > decision.cut) / mem.size)
        cal_fpr = float(np.count_nonzero(stat_non > decision.cut) / n)

    # What the threshold promises on fresh models.
    method = None
    if not math.isfinite(decision.cut):
        exp_fpr, exp_upper = 0.0, 0.0
        method = "no member is ever called: the FPR is 0"
    elif decision.k is not None:
        exp_fpr, exp_upper = heldout_fpr_law(decision.k, n)
        method = (
            "order statistic: held-out FPR ~ Beta(k+1, l-k) = "
            f"Beta({decision.k + 1}, {n - decision.k})"
        )
        if rule == "lira":
            method += " (approximate: the ratio is fitted on these same models)"
        if rule == "empirical" and exp_fpr > a:
            warnings.append(
                f"empirical: expected FPR on fresh models is (k+1)/(l+1) = {exp_fpr:.3g} > "
                f"alpha={a:g}; threshold_rule conformal or confident controls it"
            )
    else:  # gaussian
        exp_fpr, exp_upper = gaussian_heldout_fpr(a, n) if np.std(non) > 0 else (None, None)
        method = "normal model of the non-member scores: Student t (mean), noncentral t (upper)"

    # Metrics of the score itself (its ROC), on the calibration models.
    tpr_at = {}
    for f in TPR_AT_FPR_LEVELS:
        v = attack_tpr_at_fpr(s_mem, s_non, f)
        tpr_at[f"{f:g}"] = v
        if v is None:
            warnings.append(
                f"TPR at FPR {f:g} not resolvable: needs l >= {math.ceil(1.0 / f - 1e-9)} "
                f"non-member models, have {n}"
            )

    m_fit, n_fit = _fit(mem), _fit(non)
    for fit, who in ((m_fit, "member"), (n_fit, "non-member")):
        if fit.std == 0 and (mem.size > 1 and n > 1):
            warnings.append(f"the {who} {score} scores have std 0: every model gave the same value")
    g_decision, _ = choose_threshold(mem, non, alpha=a, rule="gaussian", score=score)
    s_m_fit = _fit(s_mem)
    if s_m_fit.std > 0:
        g_power = float(sps.norm.sf((g_decision.cut - s_m_fit.mean) / s_m_fit.std))
    else:
        g_power = 1.0 if s_m_fit.mean > g_decision.cut else 0.0
    if rule == "gaussian" and score == "loss" and (decision.threshold or 0.0) < 0:
        warnings.append(
            f"gaussian: the fitted threshold is a negative loss ({decision.threshold:.3g}): "
            "losses are skewed and >= 0, so no model is called a member; fit on score lira"
        )
    shapiro = {"member": _shapiro_p(mem), "nonmember": _shapiro_p(non)}
    if rule in ("gaussian", "lira") and shapiro["nonmember"] is not None:
        if shapiro["nonmember"] < 0.01:
            warnings.append(
                f"{rule}: the non-member {score} scores do not look normal (Shapiro-Wilk p = "
                f"{shapiro['nonmember']:.2g}); the Gaussian threshold's FPR is unreliable"
            )

    # Evaluation models and the epsilon lower bound.
    evaluation = evaluate_decision(
        decision, eval_member, eval_nonmember, confidence=conf, items=items
    )
    eps = {
        "value": None,
        "symmetric": None,
        "confidence": conf,
        "delta": float(delta),
        "method": "Clopper-Pearson (Jagielski et al. 2020): log((1 - delta - FNR_ub) / FPR_ub) "
        "on the evaluation models, each bound one-sided at 1 - (1 - confidence)/2",
        "fpr_upper": None,
        "fnr_upper": None,
        "max_over_calibration_thresholds": None,
    }
    ev_ok = evaluation is not None and evaluation["n_member"] and evaluation["n_nonmember"]
    if ev_ok:
        e, e_sym, fpr_ub, fnr_ub = epsilon_lower_bound(
            evaluation["false_positives"],
            evaluation["n_nonmember"],
            evaluation["false_negatives"],
            evaluation["n_member"],
            confidence=conf,
            delta=delta,
        )
        eps.update(value=float(e), symmetric=float(e_sym), fpr_upper=float(fpr_ub))
        eps["fnr_upper"] = float(fnr_ub)
        eps["max_over_calibration_thresholds"] = _epsilon_best_calibration_cut(
            decision, stat_mem, stat_non, eval_member, eval_nonmember, conf, float(delta)
        )
    else:
        epsilon_lower_bound(0, 1, 0, 1, confidence=conf, delta=delta)  # validates delta
        warnings.append(
            "no evaluation models of both kinds: realised TPR/FPR and the epsilon lower "
            "bound need eval_pairs >= 1"
        )

    out = {
        "score": score,
        "threshold_rule": rule,
        "alpha": a,
        "decision": decision.text(),
        "threshold": decision.threshold,
        "threshold_scale": "log likelihood ratio" if rule == "lira" else score,
        "member_region": (
            likelihood_ratio_region(decision.member_fit, decision.nonmember_fit, decision.cut)
            if rule == "lira" and decision.member_fit is not None
            else None
        ),
        "calibration_fpr": cal_fpr,
        "fpr": cal_fpr,
        "power": power,
        "k": decision.k,
        "n_member": int(mem.size),
        "n_nonmember": n,
        "expected_heldout_fpr": exp_fpr,
        "expected_heldout_fpr_upper95": exp_upper,
        "expected_heldout_fpr_method": method,
        "auc": attack_auc(s_mem, s_non),
        "balanced_accuracy": balanced_accuracy(s_mem, s_non),
        "tpr_at_fpr": tpr_at,
        "evaluation": evaluation,
        "epsilon_lower_bound": eps,
        "gaussian_fits": {
            "scale": score,
            "member": {"mean": m_fit.mean, "std": m_fit.std, "shapiro_p": shapiro["member"]},
            "nonmember": {"mean": n_fit.mean, "std": n_fit.std, "shapiro_p": shapiro["nonmember"]},
        },
        "gaussian_threshold": g_decision.threshold,
        "gaussian_power": g_power,
        "member_score_mean": m_fit.mean,
        "member_score_std": m_fit.std,
        "nonmember_score_mean": n_fit.mean,
        "nonmember_score_std": n_fit.std,
    }
    if score == "loss":
        out.update(
            member_loss_mean=m_fit.mean,
            member_loss_std=m_fit.std,
            nonmember_loss_mean=n_fit.mean,
            nonmember_loss_std=n_fit.std,
        )
    out["warnings"] = warnings
    return out


def _epsilon_best_calibration_cut(
    decision, stat_mem, stat_non, eval_member, eval_nonmember, conf, delta
) -> dict:
    """The cut that maximises the (one-sided) bound on the calibration models, applied once
    to the evaluation models: chosen without them, so its bound keeps its confidence."""
    fpr, tpr, cuts = attack_roc(stat_mem, stat_non)
    l_in, n = stat_mem.size, stat_non.size
    fp = np.rint(fpr * n).astype(np.int64)
    fn = l_in - np.rint(tpr * l_in).astype(np.int64)
    cal_eps, _, _, _ = epsilon_lower_bound(fp, n, fn, l_in, confidence=conf, delta=delta)
    best = int(np.argmax(cal_eps))
    cut = float(cuts[best])
    best_decision = Decision(
        decision.score, decision.rule, cut, None, decision.member_fit, decision.nonmember_fit
    )
    em, en = _eval_array(eval_member, ""), _eval_array(eval_nonmember, "")
    em, en = em[~np.isnan(em)], en[~np.isnan(en)]
    e_fp = int(np.count_nonzero(best_decision.predict(en)))
    e_fn = int(np.count_nonzero(~best_decision.predict(em)))
    e, _, _, _ = epsilon_lower_bound(e_fp, en.size, e_fn, em.size, confidence=conf, delta=delta)
    return {
        "value": float(e),
        "threshold": best_decision.threshold,
        "calibration_value": float(cal_eps[best]),
    }


def attack_summaries(member, nonmember, *, eval_member=None, eval_nonmember=None, **kw):
    """``attack_summary`` for each of T targets: member float[T, l_in], nonmember float[T, l],
    eval_* float[T, E] (or None). Returns a list of T dicts; keyword arguments as there."""
    mem = np.asarray(member, dtype=np.float64)
    non = np.asarray(nonmember, dtype=np.float64)
    if mem.ndim != 2 or non.ndim != 2 or mem.shape[0] != non.shape[0]:
        raise ValueError(f"need [T, l] arrays with the same T, got {mem.shape} and {non.shape}")
    out = []
    for t in range(mem.shape[0]):
        out.append(
            attack_summary(
                mem[t],
                non[t],
                eval_member=None if eval_member is None else np.asarray(eval_member)[t],
                eval_nonmember=None if eval_nonmember is None else np.asarray(eval_nonmember)[t],
                **kw,
            )
        )
    return out
