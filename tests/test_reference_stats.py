"""The naive reference (tests/reference_stats.py) against brute force and known closed forms.

The loss-only API that jaxmia had before its attack library lives on there as the
reference the library and the runs are cross-checked against; these tests keep it
honest.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from jaxmia.attack.metrics import clopper_pearson
from jaxmia.attack.thresholds import GaussianFit

import reference_stats as ref

# ---------------------------------------------------------------- empirical threshold


@pytest.mark.parametrize("seed", range(60))
def test_empirical_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    mem, non = ref.random_case(rng)
    n = non.size
    alphas = [0.01, 0.05, 0.1, 0.25, 0.5, 0.9, 0.3 / n, 1.0 / n]  # includes alpha*N < 1 and == 1
    if n > 1:
        alphas += [2.0 / n, (n - 1) / n]  # alpha*N integer
    for alpha in alphas:
        if not 0 < alpha < 1:
            continue
        res = ref.empirical_threshold(mem, non, alpha)
        power, fpr, t = ref.naive_best_threshold(mem.tolist(), non.tolist(), alpha)
        assert res.power == pytest.approx(power, abs=1e-12), (alpha, n)
        assert res.fpr == pytest.approx(fpr, abs=1e-12), (alpha, n)
        assert res.threshold == t
        assert res.fpr <= alpha
        assert res.threshold == np.sort(non)[math.floor(alpha * n + 1e-9)]
        assert res.k == math.floor(alpha * n + 1e-9)
        assert (res.n_member, res.n_nonmember) == (mem.size, n)


def test_empirical_threshold_small_cases_by_hand():
    # N = 1: k = 0 for every alpha, t is the only non-member loss, FPR 0.
    res = ref.empirical_threshold([0.1, 0.5, 2.0], [1.0], 0.5)
    assert (res.threshold, res.power, res.fpr, res.k) == (1.0, 2 / 3, 0.0, 0)
    # N = 20, alpha = 0.05: one non-member may be below t = the second smallest.
    non = np.arange(20, dtype=float)
    res = ref.empirical_threshold([0.5, 1.0, 1.5], non, 0.05)
    assert (res.threshold, res.fpr, res.k) == (1.0, 0.05, 1)
    assert res.power == pytest.approx(1 / 3)
    # Ties at the threshold: strict counting leaves the FPR below alpha.
    res = ref.empirical_threshold([0.0], [1.0, 1.0, 1.0, 1.0], 0.5)
    assert (res.threshold, res.fpr, res.k, res.power) == (1.0, 0.0, 2, 1.0)


def test_floor_is_robust_to_float_rounding():
    # 0.29 * 100 == 28.999999999999996; 29 non-members below t still have FPR 0.29 <= alpha.
    non = np.arange(100, dtype=float)
    res = ref.empirical_threshold([0.0], non, 0.29)
    assert res.k == 29
    assert res.fpr == pytest.approx(0.29)
    assert ref.naive_best_threshold([0.0], non.tolist(), 0.29)[1] == pytest.approx(0.29)


def test_tpr_at_fpr_is_the_empirical_power():
    rng = np.random.default_rng(3)
    mem, non = rng.normal(0, 1, 50), rng.normal(1, 1, 80)
    assert ref.tpr_at_fpr(mem, non, 0.1) == ref.empirical_threshold(mem, non, 0.1).power


# ---------------------------------------------------------------- Gaussian


# Phi^-1(0.05) = -1.6448536269514727..., so t = 2 - 1.6448536269514727 = 0.3551463730485273
# and power = Phi(t - 0) = Phi(0.3551463730485273) = 0.6387600313... (normal tables).
T_GAUSS = 2 - 1.6448536269514727


POWER_GAUSS = 0.6387600313


def test_gaussian_threshold_known_answer():
    t, power = ref.gaussian_threshold(GaussianFit(0.0, 1.0), GaussianFit(2.0, 1.0), 0.05)
    assert t == pytest.approx(T_GAUSS, abs=1e-12)
    assert power == pytest.approx(POWER_GAUSS, abs=1e-9)
    # Cross-check the hard-coded power with the error function.
    assert power == pytest.approx(0.5 * (1 + math.erf(T_GAUSS / math.sqrt(2))), abs=1e-12)


def test_large_sample_empirical_threshold_approaches_gaussian():
    # Standard error of the empirical alpha-quantile of N(2, 1) from N = 1e5 draws:
    # sqrt(alpha (1 - alpha) / N) / phi(z_alpha) = 0.000689 / 0.1031 = 0.0067; the
    # tolerance 0.035 is ~5 standard errors. The empirical power then errs by
    # phi(0.355) * 0.0067 = 0.0025 (threshold) plus sqrt(p(1-p)/N) = 0.0015
    # (binomial), so 0.015 is again more than 5 standard errors.
    rng = np.random.default_rng(12345)
    mem = rng.normal(0.0, 1.0, 100_000)
    non = rng.normal(2.0, 1.0, 100_000)
    res = ref.empirical_threshold(mem, non, 0.05)
    assert res.threshold == pytest.approx(T_GAUSS, abs=0.035)
    assert res.power == pytest.approx(POWER_GAUSS, abs=0.015)
    t, power = ref.gaussian_threshold(ref.fit_gaussian(mem), ref.fit_gaussian(non), 0.05)
    assert t == pytest.approx(T_GAUSS, abs=0.035)
    assert power == pytest.approx(POWER_GAUSS, abs=0.015)


def test_fit_gaussian():
    fit = ref.fit_gaussian([1.0, 2.0, 3.0, 4.0])
    assert fit.mean == 2.5
    assert fit.std == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert ref.fit_gaussian([7.0]) == GaussianFit(7.0, 0.0)


def test_gaussian_threshold_degenerate_std():
    # Point-mass non-members: t is that value (FPR 0); point-mass members: power 0 or 1.
    t, power = ref.gaussian_threshold(GaussianFit(0.0, 0.0), GaussianFit(1.0, 0.0), 0.05)
    assert (t, power) == (1.0, 1.0)
    t, power = ref.gaussian_threshold(GaussianFit(1.0, 0.0), GaussianFit(1.0, 0.0), 0.05)
    assert (t, power) == (1.0, 0.0)
    t, power = ref.gaussian_threshold(GaussianFit(0.0, 1.0), GaussianFit(1.0, 0.0), 0.05)
    assert t == 1.0 and power == pytest.approx(sps.norm.cdf(1.0))
    with pytest.raises(ValueError, match="std"):
        ref.gaussian_threshold(GaussianFit(0.0, -1.0), GaussianFit(1.0, 1.0), 0.05)


# ---------------------------------------------------------------- ROC and AUC


@pytest.mark.parametrize("seed", range(30))
def test_auc_matches_double_loop_and_trapezoid(seed):
    rng = np.random.default_rng(100 + seed)
    mem, non = ref.random_case(rng)
    expected = ref.naive_auc(mem.tolist(), non.tolist())
    assert ref.auc(mem, non) == pytest.approx(expected, abs=1e-12)
    fpr, tpr, thresholds = ref.roc_curve(mem, non)
    assert np.trapezoid(tpr, fpr) == pytest.approx(expected, abs=1e-12)
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all(np.diff(thresholds) > 0) and thresholds[-1] == np.inf
    # Each point is the brute-force rate at its threshold.
    for f, t_, thr in zip(fpr, tpr, thresholds, strict=True):
        assert f == np.mean(non < thr) and t_ == np.mean(mem < thr)


def test_auc_extremes():
    assert ref.auc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert ref.auc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert ref.auc([1.0, 1.0], [1.0]) == 0.5


# ---------------------------------------------------------------- summaries


def test_summarize_keys_and_json():
    rng = np.random.default_rng(7)
    mem, non = rng.normal(0, 1, 30), rng.normal(2, 1, 40)
    s = ref.summarize(mem, non, 0.05)
    assert list(s) == [
        "threshold",
        "power",
        "fpr",
        "k",
        "n_member",
        "n_nonmember",
        "gaussian_threshold",
        "gaussian_power",
        "auc",
        "member_loss_mean",
        "member_loss_std",
        "nonmember_loss_mean",
        "nonmember_loss_std",
    ]
    json.dumps(s, allow_nan=False)
    for v in s.values():
        assert type(v) in (int, float)
    emp = ref.empirical_threshold(mem, non, 0.05)
    assert (s["threshold"], s["power"], s["fpr"], s["k"]) == (
        emp.threshold,
        emp.power,
        emp.fpr,
        emp.k,
    )
    assert s["member_loss_std"] == pytest.approx(np.std(mem, ddof=1))
    assert s["auc"] == pytest.approx(ref.naive_auc(mem.tolist(), non.tolist()))
    one = ref.summarize([1.0], [2.0], 0.05)
    assert one["member_loss_std"] == 0.0 and one["power"] == 1.0


def test_evaluate_predictions():
    flags = np.array([True, False, True, False, True, False])
    losses = np.array([0.1, 3.0, 2.5, 0.2, 0.3, 4.0])
    ev = ref.evaluate_predictions(flags, losses, 1.0)
    assert [it["predicted_member"] for it in ev["items"]] == [True, False, False, True, True, False]
    assert [it["correct"] for it in ev["items"]] == [True, True, False, False, True, True]
    assert ev["items"][0] == {
        "member": True,
        "loss": 0.1,
        "predicted_member": True,
        "correct": True,
    }
    assert (ev["n_member"], ev["n_nonmember"], ev["n_correct"]) == (3, 3, 4)
    assert ev["accuracy"] == pytest.approx(4 / 6)
    assert ev["tpr"] == pytest.approx(2 / 3) and ev["fpr"] == pytest.approx(1 / 3)
    assert ev["tpr_ci"] == pytest.approx(list(clopper_pearson(2, 3)))
    assert ev["fpr_ci"] == pytest.approx(list(clopper_pearson(1, 3)))
    json.dumps(ev, allow_nan=False)


def test_evaluate_predictions_one_pair_and_nan():
    ev = ref.evaluate_predictions(np.array([True, False]), [0.5, 2.0], 1.0)
    assert ev["accuracy"] == 1.0
    assert ev["tpr"] is None and ev["fpr_ci"] is None
    # Strict rule: a loss equal to t is predicted non-member.
    ev = ref.evaluate_predictions(np.array([True]), [1.0], 1.0)
    assert ev["items"][0]["predicted_member"] is False
    ev = ref.evaluate_predictions(np.array([True, False]), [float("nan"), np.inf], 1.0)
    assert ev["items"][0]["predicted_member"] is None and ev["n_undecided"] == 1
    assert ev["items"][1]["correct"] is True and ev["accuracy"] == 1.0


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("member", "nonmember", "alpha", "match"),
    [
        ([], [1.0], 0.05, "member losses is empty"),
        ([1.0], [], 0.05, "non-member losses is empty"),
        ([[1.0, 2.0]], [1.0], 0.05, "1-D"),
        ([1.0, np.nan], [1.0], 0.05, "non-finite"),
        ([1.0], [np.inf], 0.05, "non-finite"),
        (["a"], [1.0], 0.05, "numbers"),
        ([1.0], [1.0], 0.0, r"\(0, 1\)"),
        ([1.0], [1.0], 1.0, r"\(0, 1\)"),
        ([1.0], [1.0], True, r"\(0, 1\)"),
        ([1.0], [1.0], "0.1", r"\(0, 1\)"),
    ],
)
def test_input_validation(member, nonmember, alpha, match):
    with pytest.raises(ValueError, match=match):
        ref.empirical_threshold(member, nonmember, alpha)


def test_validation_elsewhere():
    with pytest.raises(ValueError):
        ref.auc([1.0], [])
    with pytest.raises(ValueError):
        ref.roc_curve([np.nan], [1.0])
    with pytest.raises(ValueError):
        ref.fit_gaussian(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="bool"):
        ref.evaluate_predictions(np.array([1, 0]), [0.1, 0.2], 1.0)
    with pytest.raises(ValueError, match="shape"):
        ref.evaluate_predictions(np.array([True, False]), [0.1], 1.0)
