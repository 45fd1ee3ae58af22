"""Threshold rules on the attack statistic s, and what a threshold promises on fresh models.

Every rule ends in a ``Decision``: "member iff statistic > cut" (strict), the
statistic being s (high = member; see the package docstring) for every rule but
``lira``, whose statistic is a log likelihood ratio that is also high for members.

Order-statistic rules. With the l calibration non-member statistics sorted from
the most member-like down, s_(1) >= s_(2) >= ... >= s_(l), a rule picks k and
sets u = s_(k+1): at most k non-members lie strictly beyond u (fewer on ties).
For a fresh non-member model with a continuous statistic, FPR(u) = P(S > u) =
1 - F(s_(k+1)), and F(s_(k+1)) ~ Beta(l-k, k+1), so the held-out FPR is
Beta(k+1, l-k), mean (k+1)/(l+1), whatever the distribution of S (ties only
lower it). The rules differ in k:

* ``empirical``: k = floor(alpha*l): the calibration FPR is at most alpha, the
  most powerful such cut, since power and calibration FPR both grow as u falls
  and any u below s_(k+1) would put k+1 non-members beyond it. Its held-out mean
  (k+1)/(l+1) is above alpha. k is the largest integer with k/l <= alpha, so
  that rounding in alpha*l cannot drop one (0.29 * 100 is 28.999... in floating
  point). With alpha*l < 1, k = 0: no FPR below 1/l can be resolved.
* ``conformal``: k = floor(alpha*(l+1)) - 1, so the held-out mean
  floor(alpha*(l+1))/(l+1) is at most alpha; none when alpha*(l+1) < 1.
* ``confident``: the largest k with P(Beta(k+1, l-k) > alpha) <= 5%; none when
  even k = 0, where that probability is (1-alpha)^l, exceeds 5%.

``gaussian`` fits a normal to the non-member statistics and cuts at its upper
alpha quantile; ``lira`` fits one normal to each side on the native scale
(LiRA's online test, Carlini et al. 2022) and applies the empirical rule to
their log likelihood ratio.  So that its held-out law is exact, ``lira`` splits
the l non-members: the normals are fitted on the members and on the
non-members at odd positions (floor(l/2) of them), and the cut is the order
statistic of the ratio over the other ceil(l/2) = l_c, which the fit never saw:
conditional on the fit, those ratios and a fresh non-member's are i.i.d., so the
held-out FPR is Beta(k+1, l_c-k) with k = floor(alpha*l_c).  (Fitting and
cutting on the same models, as before, was optimistic with few models: with
φ_OUT ~ N(0, 1), φ_IN ~ N(2, 4) and alpha 0.1 its 95% bound failed in 9.7% of
runs at l = 8.)  Its ``variance`` is ``per_example`` (one normal per side, the
member region may be an interval) or ``fixed`` (one σ for both sides, the
members' sample std: the ratio is monotone in the score, so the member region
is a half-line); ``auto`` is fixed below 64 calibration models (attack/lira.py).

scipy is imported inside the functions that use it, so that reading ``RULES``
(as the configuration does) does not load it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from jaxmia.attack import scores

__all__ = [
    "AUTO_PER_EXAMPLE_FROM",
    "CONFIDENT_RISK",
    "HELDOUT_LEVEL",
    "RULES",
    "VARIANCES",
    "Decision",
    "GaussianFit",
    "check_probability",
    "check_rule",
    "choose_threshold",
    "cut_at_order_statistic",
    "expected_heldout_fpr",
    "fit_gaussian",
    "fit_kde",
    "gaussian_heldout_fpr",
    "heldout_fpr_law",
    "likelihood_ratio_region",
    "lira_rule_note",
    "lira_split",
    "log_likelihood_ratio",
    "order_statistic_k",
    "resolve_variance",
]

RULES = ("empirical", "conformal", "confident", "gaussian", "lira")
LR_SCALE = "log likelihood ratio"  # the scale of the lira rule's cut
# Why a rule gives no threshold, for ``Decision.text``.
TOO_FEW = "too few calibration models for this rule at this alpha"
NO_SPREAD = (
    "every calibration model gave the same score (zero spread): no threshold can tell "
    "members from non-members"
)
# How a LiRA fit sets its σ: one per example (and side), one for all, or by the
# number of models (fixed below AUTO_PER_EXAMPLE_FROM); attack/lira.py too.
VARIANCES = ("auto", "per_example", "fixed")
AUTO_PER_EXAMPLE_FROM = 64
CONFIDENT_RISK = 0.05  # the `confident` rule's chance of a held-out FPR above alpha
HELDOUT_LEVEL = 0.95  # the quantile reported as expected_heldout_fpr_upper95


# ---------------------------------------------------------------- checks


def check_probability(value, name: str = "alpha") -> float:
    """``value`` as a float after checking it is a real number in the open interval (0, 1).

    Raises:
      ValueError: naming ``name`` (a bool or a string is refused too).
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    v = float(value)
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {v}")
    return v


def resolve_variance(variance: str, n_models: int) -> str:
    """``per_example`` or ``fixed``: ``auto`` is fixed below AUTO_PER_EXAMPLE_FROM (64) models
    (IN and OUT together: the calibration models of a rule, the references of an attack).

    Raises:
      ValueError: ``variance`` not in VARIANCES.
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {', '.join(VARIANCES)}; got {variance!r}")
    if variance != "auto":
        return variance
    return "per_example" if n_models >= AUTO_PER_EXAMPLE_FROM else "fixed"


def check_rule(rule: str) -> str:
    """``rule`` after checking it is one of RULES; raises ValueError otherwise."""
    if rule not in RULES:
        raise ValueError(f"threshold_rule must be one of {', '.join(RULES)}; got {rule!r}")
    return rule


# ---------------------------------------------------------------- fits of a score sample


@dataclass(frozen=True)
class GaussianFit:
    """A normal distribution fitted to scores: mean and sample std (ddof=1)."""

    mean: float
    std: float


def fit_gaussian(x) -> GaussianFit:
    """Mean and sample std (ddof=1) of float[n]; the std is exactly 0 when all values are equal.

    np.std of equal values can be 1e-17 (from the rounded mean), which would make a
    point mass look like a very narrow normal; a single value has std 0 too.

    Raises:
      ValueError: ``x`` is not 1-D, non-empty and finite.
    """
    arr = scores.check_scores(x)
    std = float(np.std(arr, ddof=1)) if np.ptp(arr) > 0 else 0.0
    return GaussianFit(mean=float(np.mean(arr)), std=std)


def fit_kde(x):
    """A ``scipy.stats.gaussian_kde`` of float[n] (for figures), or None when it cannot be fitted.

    A KDE needs at least two distinct values (otherwise its bandwidth, scaled by
    the sample covariance, is zero).

    Raises:
      ValueError: ``x`` is not 1-D, non-empty and finite.
    """
    from scipy import stats as sps

    arr = scores.check_scores(x)
    if np.unique(arr).size < 2:
        return None
    try:
        return sps.gaussian_kde(arr)
    except (np.linalg.LinAlgError, ValueError):
        return None


def log_likelihood_ratio(x, member_fit: GaussianFit, nonmember_fit: GaussianFit) -> np.ndarray:
    """log N(x; mu_in, sd_in) - log N(x; mu_out, sd_out), float64 shaped like x (both sd > 0).

    High for members when the fits are the members' and the non-members' (LiRA's
    parametric test, Carlini et al. 2022).
    """
    from scipy import stats as sps

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


# ---------------------------------------------------------------- order statistics


def _largest_count_within(alpha: float, n: int) -> int:
    """The largest integer k with k / n <= alpha: floor(alpha * n), robust to its rounding.

    In floating point 0.29 * 100 is 28.999999999999996; the k meant is 29, the
    one an FPR count of k out of n is compared with.
    """
    k = math.floor(alpha * n)
    while k + 1 <= n and (k + 1) / n <= alpha:
        k += 1
    while k > 0 and k / n > alpha:
        k -= 1
    return k


@functools.lru_cache(maxsize=4096)  # pure in its arguments; many targets repeat them
def order_statistic_k(rule: str, n: int, alpha: float) -> int | None:
    """k of an order-statistic rule: how many non-members may lie strictly beyond the cut.

    Args:
      rule: ``empirical``, ``lira`` (the same k), ``conformal`` or ``confident``.
      n: l, the number of calibration non-member models, a positive int.
      alpha: the FPR asked for, in (0, 1).

    Returns:
      k, an int in [0, l), or None when l is too small for the rule at this alpha
      (conformal: alpha*(l+1) < 1; confident: (1-alpha)^l > 5%). The cut is the
      (k+1)-th most member-like non-member statistic. k depends on (rule, l, alpha)
      only, never on the data, which is what makes the held-out law Beta(k+1, l-k) exact.

    Raises:
      ValueError: alpha outside (0, 1), l not a positive int, or a rule without k.
    """
    a = check_probability(alpha)
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"l must be a positive integer, got {n!r}")
    if rule == "empirical" or rule == "lira":
        return _largest_count_within(a, n)
    if rule == "conformal":
        j = _largest_count_within(a, n + 1)  # largest j with j / (n+1) <= alpha
        return j - 1 if j >= 1 else None
    if rule == "confident":
        from scipy import stats as sps

        ks = np.arange(n)
        risk = sps.beta.sf(a, ks + 1, n - ks)  # P(held-out FPR > alpha), increasing in k
        ok = np.flatnonzero(risk <= CONFIDENT_RISK)
        return int(ok[-1]) if ok.size else None
    raise ValueError(f"{rule!r} is not an order-statistic rule")


def cut_at_order_statistic(stat, k: int) -> float:
    """s_(k+1): the (k+1)-th largest of float[l] (k in [0, l))."""
    stat = np.asarray(stat, dtype=np.float64)
    return float(np.sort(stat)[stat.size - 1 - k])


# ---------------------------------------------------------------- held-out FPR laws


@functools.lru_cache(maxsize=4096)  # pure in its arguments; many targets repeat them
def heldout_fpr_law(k: int, n: int, level: float = HELDOUT_LEVEL) -> tuple[float, float]:
    """(mean, upper ``level`` quantile) of Beta(k+1, l-k): the held-out FPR of the cut s_(k+1).

    n is l, the number of calibration non-member models.
    """
    from scipy import stats as sps

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

    Raises:
      ValueError: alpha outside (0, 1).
    """
    from scipy import stats as sps
    from scipy.optimize import brentq

    a = check_probability(alpha)
    if n < 2:
        return None, None
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


# ---------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Decision:
    """A chosen membership rule: "member iff statistic(native) > cut" (strict).

    Attributes:
      score: a key of scores.SCORES.
      rule: one of RULES.
      cut: the cut on the rule's statistic: the attack statistic s, or for ``lira``
        with its two fits the log likelihood ratio. +inf: nobody is called a
        member (the data cannot support the rule).
      k: non-members allowed beyond the cut for order-statistic rules, else None.
      member_fit, nonmember_fit: for ``lira``, the Gaussians on the native scale.
      n_cut: the non-members the order statistic was taken over (l; ``lira``: l_c,
        the half the Gaussians were not fitted on), None for the other rules.
      variance: for ``lira``, ``per_example`` or ``fixed``.
      reason: why there is no cut (with cut = +inf), in words for ``text``.
    """

    score: str
    rule: str
    cut: float
    k: int | None = None
    member_fit: GaussianFit | None = None
    nonmember_fit: GaussianFit | None = None
    n_cut: int | None = None
    variance: str | None = None
    reason: str | None = None

    @property
    def on_ratio(self) -> bool:
        """Whether the statistic is the log likelihood ratio of the two fits."""
        return self.rule == "lira" and self.member_fit is not None

    @property
    def scale(self) -> str:
        """The scale ``threshold`` is on: "log likelihood ratio" or the score's name."""
        return LR_SCALE if self.on_ratio else self.score

    def statistic(self, native) -> np.ndarray:
        """The rule's statistic (high = member) of native score values, float64 like them."""
        if self.on_ratio:
            return log_likelihood_ratio(native, self.member_fit, self.nonmember_fit)
        return scores.to_attack(native, self.score)

    def predict(self, native) -> np.ndarray:
        """bool like ``native``: member or not (a NaN score is never a member)."""
        with np.errstate(invalid="ignore"):
            return self.statistic(native) > self.cut

    @property
    def threshold(self) -> float | None:
        """The cut on ``scale``: the score's native scale, or the log LR; None if there is none."""
        if not math.isfinite(self.cut):
            return None
        if self.on_ratio:
            return float(self.cut)
        return float(scores.from_attack(self.cut, self.score))

    def text(self) -> str:
        """The rule in words, on the native scale."""
        if not math.isfinite(self.cut):
            return f"never member ({self.reason or TOO_FEW})"
        if self.on_ratio:
            sym = scores.get(self.score).symbol
            m, n = self.member_fit, self.nonmember_fit
            return (
                f"member iff log N({sym}; {m.mean:.4g}, {m.std:.4g}) - "
                f"log N({sym}; {n.mean:.4g}, {n.std:.4g}) > {self.cut:.6g}"
            )
        return scores.decision_text(self.score, self.threshold)


def lira_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(cut, fit): the positions of l = n non-members the ``lira`` rule sets its cut on
    (0, 2, 4, ...: ceil(l/2)) and fits its Gaussian on (1, 3, ...: floor(l/2))."""
    everyone = np.arange(n)
    return everyone[0::2], everyone[1::2]


def choose_threshold(
    member,
    nonmember,
    *,
    alpha: float,
    rule: str = "empirical",
    score: str = "loss",
    variance: str = "auto",
) -> tuple[Decision, list[str]]:
    """The membership rule ``rule`` fitted on calibration scores at level ``alpha``.

    Args:
      member, nonmember: float[l_in], float[l] native scores of the calibration IN and
        OUT models (finite).
      alpha: the FPR asked for, in (0, 1).
      rule: one of RULES (see the module docstring).
      score: a key of scores.SCORES: says which way the native values point.
      variance: the ``lira`` rule's (``auto``, ``per_example``, ``fixed``; the
        module docstring); the other rules ignore it.

    Returns:
      (Decision, warnings): warnings are one-line strings saying what the data cannot
      support (then the Decision may call nobody a member).

    Raises:
      ValueError: scores not 1-D, non-empty and finite; alpha, rule or score invalid.
    """
    from scipy import stats as sps

    mem = scores.check_scores(member, "member scores")
    non = scores.check_scores(nonmember, "non-member scores")
    a = check_probability(alpha)
    check_rule(rule)
    s_non = scores.to_attack(non, score)
    n = non.size
    warnings: list[str] = []
    never = math.inf
    if max(np.ptp(mem), np.ptp(non)) == 0 and mem[0] == non[0]:
        # One value for every model: whatever the rule, "s > u" cannot be true of members
        # and false of non-members, and a cut placed at (a rounded mean of) that value
        # could call all of them members.
        warnings.append(f"{rule}: {NO_SPREAD}; nobody is called a member")
        return Decision(score, rule, never, reason=NO_SPREAD), warnings
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
            return Decision(score, rule, never, reason=TOO_FEW), warnings
        return Decision(score, rule, cut_at_order_statistic(s_non, k), k=k), warnings
    if rule == "gaussian":
        fit = fit_gaussian(s_non)
        if fit.std == 0:
            # A point mass has no width to extrapolate an alpha tail from, and a cut at
            # its (rounded) mean can fall one ulp below the value itself.
            why = "the non-member scores have zero spread: a normal fit has no width to cut at"
            warnings.append(f"gaussian: {why}; no threshold, nobody is called a member")
            return Decision(score, rule, never, reason=why), warnings
        return Decision(score, rule, fit.mean + fit.std * float(sps.norm.isf(a))), warnings
    # rule == "lira": the likelihood ratio of Gaussians fitted on the members and one
    # half of the non-members, cut at alpha on the other half.
    var = resolve_variance(variance, int(mem.size + n))
    if n < 2:
        warnings.append(
            f"lira: l={n} non-member model(s); the rule needs 2 (one to fit its Gaussian, one "
            "to set its cut on); no threshold, nobody is called a member"
        )
        return Decision(score, rule, never, variance=var, reason=TOO_FEW), warnings
    cut_at, fit_at = lira_split(n)
    m_fit, n_fit = fit_gaussian(mem), fit_gaussian(non[fit_at])
    if var == "fixed":
        # One σ for both sides: the members' (the reference code's choice of side).
        n_fit = GaussianFit(n_fit.mean, m_fit.std)
    if m_fit.std <= 0 or n_fit.std <= 0:
        side = " and ".join(
            who for who, fit in (("member", m_fit), ("fitted non-member", n_fit)) if fit.std <= 0
        )
        why = f"the {side} scores have zero spread: a likelihood ratio needs both spreads"
        warnings.append(f"lira ({var} variance): {why}; no threshold, nobody is called a member")
        return Decision(score, rule, never, variance=var, reason=why), warnings
    lr_cut = log_likelihood_ratio(non[cut_at], m_fit, n_fit)
    k = order_statistic_k("lira", cut_at.size, a)
    cut = cut_at_order_statistic(lr_cut, k)
    return Decision(score, rule, cut, k, m_fit, n_fit, int(cut_at.size), var), warnings


def expected_heldout_fpr(decision: Decision, nonmember, alpha: float):
    """What ``decision`` promises on fresh non-members: (mean, upper 95% quantile) of its FPR.

    The one place both the single-target summary and the population analysis get
    this from.

    Args:
      decision: from ``choose_threshold`` on these non-member scores at this alpha.
      nonmember: float[l] native scores of the calibration non-members.
      alpha: the FPR the decision was chosen for, in (0, 1).

    Returns:
      (mean, upper), floats or None:
      * (0.0, 0.0) when the decision calls nobody a member;
      * the Beta(k+1, l-k) law (``heldout_fpr_law``) for the order-statistic rules,
        l = ``decision.n_cut`` (for ``lira`` the non-members its Gaussians were not
        fitted on: exact too);
      * for ``gaussian``, the Student t / noncentral t law (``gaussian_heldout_fpr``),
        or (None, None) for l < 2 (a point mass of non-members gives no cut at all).

    Raises:
      ValueError: ``nonmember`` not 1-D, non-empty and finite; alpha outside (0, 1).
    """
    non = scores.check_scores(nonmember, "non-member scores")
    if not math.isfinite(decision.cut):
        return 0.0, 0.0
    if decision.k is not None:
        return heldout_fpr_law(decision.k, decision.n_cut or int(non.size))
    return gaussian_heldout_fpr(alpha, int(non.size))


def lira_rule_note(decision: Decision, n: int) -> str:
    """The ``lira`` rule's fit and cut in words (n non-members in all), for the held-out
    FPR method of the summaries."""
    fit = n - (decision.n_cut or 0)
    return (
        f" over the {decision.n_cut} non-members the Gaussians ({decision.variance} variance) "
        f"were not fitted on (exact: they are fitted on the members and the other {fit})"
    )
