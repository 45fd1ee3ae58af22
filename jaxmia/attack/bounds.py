"""What error counts on evaluation models prove: one-sided bounds and the ε lower bound.

Jagielski et al. (2020), "Auditing Differentially Private Machine Learning: How
Private is Private SGD?": an (ε, δ)-DP training algorithm bounds every
membership test by FPR·e^ε + FNR >= 1 - δ, so observed error counts, through
upper confidence bounds on the two error rates, give a lower bound on ε.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from jaxmia.attack import thresholds

__all__ = ["clopper_pearson_upper", "epsilon_from_upper_bounds", "epsilon_lower_bound"]


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
