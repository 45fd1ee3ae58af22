"""The loss-only statistics jaxmia had before its attack library: a naive reference for tests.

``jaxmia.attack`` works on the attack statistic (high = member) for any score;
this module keeps the older API on the loss alone, written plainly and tested
against brute force and closed forms (``test_reference_stats.py``). Tests use it
to cross-check the library (``attack.summary.summarize`` on the loss reproduces
``summarize``) and a run's results.json (``test_cli.py``). Below the old API,
brute-force versions of the library's rules and metrics (``naive_*``) and the
random cases the tests draw.

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

import math
from dataclasses import dataclass
from numbers import Real

import numpy as np
from scipy import stats as sps

from jaxmia.attack.metrics import clopper_pearson
from jaxmia.attack.scores import check_scores
from jaxmia.attack.thresholds import GaussianFit

__all__ = [
    "GaussianFit",
    "ThresholdResult",
    "auc",
    "check_losses",
    "empirical_threshold",
    "evaluate_predictions",
    "fit_gaussian",
    "gaussian_threshold",
    "roc_curve",
    "summarize",
    "naive_auc",
    "naive_balanced_accuracy",
    "naive_best_threshold",
    "naive_cp_upper",
    "naive_cut",
    "naive_k",
    "plain_json",
    "random_case",
    "tpr_at_fpr",
]


# ---------------------------------------------------------------- validation


def check_losses(x, name: str = "losses") -> np.ndarray:
    """float64[n] after the package's own input check (1-D, non-empty, finite)."""
    return check_scores(x, name)


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


# ================================================================ brute force
#
# One element, one threshold at a time, in Python floats: slow and plainly right.


def naive_best_threshold(member, nonmember, alpha):
    """Scans every candidate t (distinct pooled values and +-inf) by brute force.

    Counts "member iff loss < t" one element at a time and returns (power, fpr, t)
    of the most powerful t with FPR <= alpha. Several t can share that power;
    the largest of them is taken (the implementation's choice, which also has
    the largest FPR among them).
    """
    candidates = sorted(set(member) | set(nonmember)) + [-math.inf, math.inf]
    best = None
    for t in candidates:
        fpr = sum(1 for v in nonmember if v < t) / len(nonmember)
        power = sum(1 for v in member if v < t) / len(member)
        if fpr <= alpha and (best is None or (power, t) > (best[0], best[2])):
            best = (power, fpr, t)
    return best


def naive_auc(member, nonmember):
    """P(member loss < non-member loss), ties 1/2, over every pair."""
    total = 0.0
    for m in member:
        for n in nonmember:
            total += 1.0 if m < n else 0.5 if m == n else 0.0
    return total / (len(member) * len(nonmember))


def random_case(rng):
    """Member and non-member losses of random sizes and shift, half the time heavily tied."""
    n_mem = int(rng.integers(1, 40))
    n_non = int(rng.choice([1, 2, 3, 7, 10, 20, 40, 100]))
    mem = rng.normal(0.0, 1.0, n_mem)
    non = rng.normal(rng.uniform(-0.5, 2.0), rng.uniform(0.3, 2.0), n_non)
    if rng.random() < 0.5:
        # Heavy ties: coarse rounding puts many losses on the same value.
        mem, non = np.round(mem), np.round(non)
    return mem, non


def plain_json(obj):
    """Only JSON types all the way down (no numpy scalars, no NaN/inf)."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return True
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, list):
        return all(plain_json(v) for v in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, str) and plain_json(v) for k, v in obj.items())
    return False


def naive_k(rule, n, alpha):
    """k by scanning every k with exact rational or binomial arithmetic."""
    if rule == "empirical":
        return max(k for k in range(n) if k <= alpha * n + 1e-12)
    if rule == "conformal":
        ok = [k for k in range(n) if (k + 1) / (n + 1) <= alpha + 1e-12]
        return max(ok) if ok else None
    # confident: P(held-out FPR > alpha) = P(Beta(k+1, n-k) > alpha) = P(Bin(n, alpha) <= k).
    ok = [
        k
        for k in range(n)
        if sum(math.comb(n, i) * alpha**i * (1 - alpha) ** (n - i) for i in range(k + 1)) <= 0.05
    ]
    return max(ok) if ok else None


def naive_cut(stat_non, k):
    """The (k+1)-th largest of the non-member statistics."""
    return sorted(stat_non, reverse=True)[k]


def naive_balanced_accuracy(s_mem, s_non):
    """max over every cut u of (TPR + 1 - FPR) / 2, with "member iff s > u"."""
    best = 0.0
    for u in [-math.inf, math.inf] + list(s_mem) + list(s_non):
        tpr = sum(v > u for v in s_mem) / len(s_mem)
        fpr = sum(v > u for v in s_non) / len(s_non)
        best = max(best, (tpr + 1 - fpr) / 2)
    return best


def naive_cp_upper(k, n, level):
    """The p with P(Bin(n, p) <= k) = 1 - level, by bisection on the binomial sum."""
    if k >= n:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        p = (lo + hi) / 2
        cdf = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
        lo, hi = (p, hi) if cdf > 1 - level else (lo, p)
    return (lo + hi) / 2


def naive_loss(logits, labels) -> np.ndarray:
    """Cross-entropy of each row's true class, in Python floats: -log p_y with
    p_y = 1 / sum_c exp(z_c - z_y), summed with math.fsum and taken through log1p
    where the other classes are a small share (float64[n] from float[n, C], int[n])."""
    z = np.asarray(logits, np.float64).reshape(-1, np.shape(logits)[-1])
    y = np.broadcast_to(np.asarray(labels), z.shape[:1])
    out = []
    for row, label in zip(z.tolist(), y.tolist(), strict=True):
        others = math.fsum(math.exp(v - row[label]) for i, v in enumerate(row) if i != label)
        out.append(math.log1p(others))
    return np.array(out).reshape(np.shape(logits)[:-1])
