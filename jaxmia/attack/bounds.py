"""What error counts on evaluation models prove: one-sided bounds and the ε lower bound.

Jagielski et al. (2020), "Auditing Differentially Private Machine Learning: How
Private is Private SGD?": an (ε, δ)-DP training algorithm bounds every
membership test by FPR·e^ε + FNR >= 1 - δ, so observed error counts, through
upper confidence bounds on the two error rates, give a lower bound on ε.

Two more ways to read an audit (issue 16):

* **Gaussian DP** (Nasr et al. 2023, "Tight Auditing of Differentially Private
  Machine Learning", §5; Dong, Roth, Su 2019): DP-SGD's trade-off curve is
  close to a Gaussian one, FNR = Φ(Φ⁻¹(1 − FPR) − μ).  The same two upper
  bounds then bound μ from below, μ_lb = Φ⁻¹(1 − FPR_ub) − Φ⁻¹(FNR_ub), and
  μ-GDP's ε at δ (``gdp_epsilon``) turns it into an ε estimate.  It needs far
  fewer pairs than Clopper-Pearson's ε, but holds only as far as the trade-off
  curve is Gaussian: an estimate, not a proof.
* **One run** (Steinke, Nasr, Jagielski 2023, "Privacy Auditing with One (1)
  Training Run"): m canaries, each included independently with probability ½;
  an auditor guesses r of the memberships from one trained model and v of its
  guesses are right.  An (ε, δ)-DP algorithm makes v >= k unlikely:
  P(v >= k) <= P(Bin(r, e^ε / (1 + e^ε)) >= k) + 2mδ · max_i (...)/i (their
  Theorem 5.2), so a large v rejects small ε.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from jaxmia.attack import thresholds

__all__ = [
    "clopper_pearson_upper",
    "epsilon_from_upper_bounds",
    "epsilon_lower_bound",
    "gdp_epsilon",
    "gdp_mu_lower_bound",
    "one_run_epsilon_lower_bound",
    "one_run_p_value",
]


def clopper_pearson_upper(k, n, level: float):
    """One-sided upper Clopper-Pearson bound(s) on a binomial rate from k errors in n trials.

    The p with P(Bin(n, p) <= k) = 1 - level, i.e. Beta^-1(level; k+1, n-k); 1 where
    k = n. Works elementwise on int arrays (broadcasting k and n).

    Returns:
      float64 array shaped like the broadcast of k and n (0-d for scalars).
    """
    k = np.asarray(k)
    n = np.asarray(n)
    with np.errstate(invalid="ignore"):
        ub = sps.beta.ppf(level, k + 1, np.maximum(n - k, 1))
    return np.where(k >= n, 1.0, ub)


def epsilon_from_upper_bounds(fpr_upper, fnr_upper, delta=0.0):
    """log((1 - delta - FNR_ub) / FPR_ub), and 0 where that is not positive (Jagielski et
    al. 2020): the ε lower bound from upper confidence bounds on the two error rates,
    however they were obtained (elementwise over float arrays; 0-d for scalars).

    The caller chooses the bounds' levels so that both hold at once with the confidence
    it reports (two one-sided bounds at 1 - (1 - confidence)/2 each).
    """
    num = 1.0 - float(delta) - np.asarray(fnr_upper, np.float64)
    den = np.asarray(fpr_upper, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.log(np.where(num > 0, num, 1.0)) - np.log(den)
    return np.where(num > 0, np.maximum(e, 0.0), 0.0)


def epsilon_lower_bound(fp, n_nonmember, fn, n_member, *, confidence=0.95, delta=0.0):
    """The empirical ε lower bound(s) of Jagielski et al. (2020) from error counts.

    With one-sided Clopper-Pearson upper bounds FPR_ub, FNR_ub, each at level
    1 - (1 - confidence)/2 (so both hold at once with probability >= confidence):
    eps = log((1 - delta - FNR_ub) / FPR_ub), and 0 where that is not positive.
    The symmetric version also tries the reversed test, log((1 - delta - FPR_ub) /
    FNR_ub), and keeps the larger.

    Args:
      fp, n_nonmember: false positives among the non-member models (ints or int arrays).
      fn, n_member: false negatives among the member models.
      confidence: in (0, 1); delta: in [0, 1).

    Returns:
      (eps, eps_symmetric, fpr_ub, fnr_ub): float64 arrays, elementwise over the
      counts (0-d for scalar input); eps >= 0.

    Raises:
      ValueError: confidence outside (0, 1) or delta outside [0, 1).
    """
    conf = thresholds.check_probability(confidence, "confidence")
    d = float(delta)
    if not 0.0 <= d < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    level = 1.0 - (1.0 - conf) / 2.0
    fpr_ub = clopper_pearson_upper(fp, n_nonmember, level)
    fnr_ub = clopper_pearson_upper(fn, n_member, level)

    eps = epsilon_from_upper_bounds(fpr_ub, fnr_ub, d)
    eps_sym = np.maximum(eps, epsilon_from_upper_bounds(fnr_ub, fpr_ub, d))
    return eps, eps_sym, fpr_ub, fnr_ub


# ---------------------------------------------------------------- Gaussian DP


def gdp_mu_lower_bound(fp, n_nonmember, fn, n_member, *, confidence=0.95):
    """μ_lb = Φ⁻¹(1 − FPR_ub) − Φ⁻¹(FNR_ub), at least 0 (Nasr et al. 2023, §5).

    FPR_ub and FNR_ub are one-sided Clopper-Pearson upper bounds, each at
    1 − (1 − confidence)/2, as in ``epsilon_lower_bound``: if the mechanism is
    μ-GDP, μ >= μ_lb with probability >= confidence.  Elementwise over count
    arrays.

    Returns:
      (mu_lb, fpr_ub, fnr_ub): float64 arrays (0-d for scalars); mu_lb >= 0.

    Raises:
      ValueError: confidence outside (0, 1).
    """
    conf = thresholds.check_probability(confidence, "confidence")
    level = 1.0 - (1.0 - conf) / 2.0
    fpr_ub = clopper_pearson_upper(fp, n_nonmember, level)
    fnr_ub = clopper_pearson_upper(fn, n_member, level)
    mu = sps.norm.isf(fpr_ub) - sps.norm.ppf(fnr_ub)
    # FPR_ub + FNR_ub >= 1 shows nothing: 0, never a negative μ turned positive (the
    # reversed test would need lower bounds on the rates, not these upper ones).
    return np.maximum(np.nan_to_num(mu, nan=0.0, posinf=0.0, neginf=0.0), 0.0), fpr_ub, fnr_ub


def gdp_epsilon(mu: float, delta: float) -> float:
    """The ε at δ of a μ-GDP mechanism (Dong, Roth, Su 2019, Corollary 2.13).

    The ε >= 0 with Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2) = δ (0 when δ already holds
    at ε = 0), solved in the log domain.  μ = 1/σ for the Gaussian mechanism of
    sensitivity 1 and noise σ.

    Raises:
      ValueError: mu < 0 or not finite; delta outside (0, 1).
    """
    from scipy import optimize

    mu, d = float(mu), float(delta)
    if not (mu >= 0 and math.isfinite(mu)):
        raise ValueError(f"mu must be finite and >= 0, got {mu}")
    if not 0 < d < 1:
        raise ValueError(f"delta must be in (0, 1) for Gaussian DP's epsilon, got {delta}")
    if mu == 0:
        return 0.0

    def log_gap(eps):  # log δ(ε) − log δ, decreasing in ε
        a = sps.norm.logcdf(-eps / mu + mu / 2)
        b = eps + sps.norm.logcdf(-eps / mu - mu / 2)
        if b >= a:
            return -math.inf
        return a + math.log1p(-math.exp(b - a)) - math.log(d)

    if log_gap(0.0) <= 0:
        return 0.0
    hi = max(1.0, mu * mu)
    while log_gap(hi) > 0:
        hi *= 2
    return float(optimize.brentq(log_gap, 0.0, hi, xtol=1e-10, rtol=1e-12))


# ---------------------------------------------------------------- one run


def _logistic(eps: float) -> float:
    return 1.0 / (1.0 + math.exp(-eps))


def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float = 0.0) -> float:
    """P(v or more right of r guesses) under (ε, δ)-DP, m canaries (Steinke et al. 2023).

    With f(k) = P(Bin(r, e^ε/(1 + e^ε)) >= k): f(v) for δ = 0, else
    f(v) + 2mδ · max_{i = 1..v} (f(v − i) − f(v)) / i, at most 1 (their
    Theorem 5.2; the same as jax_privacy.auditing's ``_one_run_p_value``).

    Raises:
      ValueError: counts out of range (0 <= v <= r <= m) or delta outside [0, 1).
    """
    m, r, v = int(m), int(r), int(v)
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    q = _logistic(float(eps))
    beta = float(sps.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return beta
    i = np.arange(1, v + 1)
    alpha = float(np.max((sps.binom.sf(v - i - 1, r, q) - beta) / i, initial=0.0))
    return min(beta + alpha * delta * 2 * m, 1.0)


def one_run_epsilon_lower_bound(
    m: int, r: int, v: int, *, confidence: float = 0.95, delta: float = 0.0
) -> float:
    """The largest ε that v right of r guesses reject at ``confidence`` (0 if none).

    The ε with ``one_run_p_value(m, r, v, ε, δ)`` = 1 − confidence (the p-value
    grows with ε); 0 when even ε = 0 is not rejected.  Steinke et al. 2023.

    Raises:
      ValueError: as ``one_run_p_value``; confidence outside (0, 1).
    """
    from scipy import optimize

    conf = thresholds.check_probability(confidence, "confidence")
    significance = 1.0 - conf
    if one_run_p_value(m, r, v, 0.0, delta) > significance:
        return 0.0

    def gap(eps):  # > 0 while ε is still rejected
        return significance - one_run_p_value(m, r, v, eps, delta)

    hi = 1.0
    while gap(hi) > 0:
        if hi > 1e3:  # every guess right on many canaries: nothing bounds it
            return math.inf
        hi *= 2
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-9, rtol=1e-12))
