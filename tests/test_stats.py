"""Tests for jaxmia.stats against brute-force references and known closed forms."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from jaxmia import stats

# ---------------------------------------------------------------- naive references


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
    total = 0.0
    for m in member:
        for n in nonmember:
            total += 1.0 if m < n else 0.5 if m == n else 0.0
    return total / (len(member) * len(nonmember))


def _random_case(rng):
    n_mem = int(rng.integers(1, 40))
    n_non = int(rng.choice([1, 2, 3, 7, 10, 20, 40, 100]))
    mem = rng.normal(0.0, 1.0, n_mem)
    non = rng.normal(rng.uniform(-0.5, 2.0), rng.uniform(0.3, 2.0), n_non)
    if rng.random() < 0.5:
        # Heavy ties: coarse rounding puts many losses on the same value.
        mem, non = np.round(mem), np.round(non)
    return mem, non


# ---------------------------------------------------------------- empirical threshold


@pytest.mark.parametrize("seed", range(60))
def test_empirical_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    mem, non = _random_case(rng)
    n = non.size
    alphas = [0.01, 0.05, 0.1, 0.25, 0.5, 0.9, 0.3 / n, 1.0 / n]  # includes alpha*N < 1 and == 1
    if n > 1:
        alphas += [2.0 / n, (n - 1) / n]  # alpha*N integer
    for alpha in alphas:
        if not 0 < alpha < 1:
            continue
        res = stats.empirical_threshold(mem, non, alpha)
        power, fpr, t = naive_best_threshold(mem.tolist(), non.tolist(), alpha)
        assert res.power == pytest.approx(power, abs=1e-12), (alpha, n)
        assert res.fpr == pytest.approx(fpr, abs=1e-12), (alpha, n)
        assert res.threshold == t
        assert res.fpr <= alpha
        assert res.threshold == np.sort(non)[math.floor(alpha * n + 1e-9)]
        assert res.k == math.floor(alpha * n + 1e-9)
        assert (res.n_member, res.n_nonmember) == (mem.size, n)


def test_empirical_threshold_small_cases_by_hand():
    # N = 1: k = 0 for every alpha, t is the only non-member loss, FPR 0.
    res = stats.empirical_threshold([0.1, 0.5, 2.0], [1.0], 0.5)
    assert (res.threshold, res.power, res.fpr, res.k) == (1.0, 2 / 3, 0.0, 0)
    # N = 20, alpha = 0.05: one non-member may be below t = the second smallest.
    non = np.arange(20, dtype=float)
    res = stats.empirical_threshold([0.5, 1.0, 1.5], non, 0.05)
    assert (res.threshold, res.fpr, res.k) == (1.0, 0.05, 1)
    assert res.power == pytest.approx(1 / 3)
    # Ties at the threshold: strict counting leaves the FPR below alpha.
    res = stats.empirical_threshold([0.0], [1.0, 1.0, 1.0, 1.0], 0.5)
    assert (res.threshold, res.fpr, res.k, res.power) == (1.0, 0.0, 2, 1.0)


def test_floor_is_robust_to_float_rounding():
    # 0.29 * 100 == 28.999999999999996; 29 non-members below t still have FPR 0.29 <= alpha.
    non = np.arange(100, dtype=float)
    res = stats.empirical_threshold([0.0], non, 0.29)
    assert res.k == 29
    assert res.fpr == pytest.approx(0.29)
    assert naive_best_threshold([0.0], non.tolist(), 0.29)[1] == pytest.approx(0.29)


def test_tpr_at_fpr_is_the_empirical_power():
    rng = np.random.default_rng(3)
    mem, non = rng.normal(0, 1, 50), rng.normal(1, 1, 80)
    assert stats.tpr_at_fpr(mem, non, 0.1) == stats.empirical_threshold(mem, non, 0.1).power


# ---------------------------------------------------------------- Gaussian


# Phi^-1(0.05) = -1.6448536269514727..., so t = 2 - 1.6448536269514727 = 0.3551463730485273
# and power = Phi(t - 0) = Phi(0.3551463730485273) = 0.6387600313... (normal tables).
T_GAUSS = 2 - 1.6448536269514727
POWER_GAUSS = 0.6387600313


def test_gaussian_threshold_known_answer():
    t, power = stats.gaussian_threshold(
        stats.GaussianFit(0.0, 1.0), stats.GaussianFit(2.0, 1.0), 0.05
    )
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
    res = stats.empirical_threshold(mem, non, 0.05)
    assert res.threshold == pytest.approx(T_GAUSS, abs=0.035)
    assert res.power == pytest.approx(POWER_GAUSS, abs=0.015)
    t, power = stats.gaussian_threshold(stats.fit_gaussian(mem), stats.fit_gaussian(non), 0.05)
    assert t == pytest.approx(T_GAUSS, abs=0.035)
    assert power == pytest.approx(POWER_GAUSS, abs=0.015)


def test_fit_gaussian():
    fit = stats.fit_gaussian([1.0, 2.0, 3.0, 4.0])
    assert fit.mean == 2.5
    assert fit.std == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert stats.fit_gaussian([7.0]) == stats.GaussianFit(7.0, 0.0)


def test_gaussian_threshold_degenerate_std():
    # Point-mass non-members: t is that value (FPR 0); point-mass members: power 0 or 1.
    t, power = stats.gaussian_threshold(
        stats.GaussianFit(0.0, 0.0), stats.GaussianFit(1.0, 0.0), 0.05
    )
    assert (t, power) == (1.0, 1.0)
    t, power = stats.gaussian_threshold(
        stats.GaussianFit(1.0, 0.0), stats.GaussianFit(1.0, 0.0), 0.05
    )
    assert (t, power) == (1.0, 0.0)
    t, power = stats.gaussian_threshold(
        stats.GaussianFit(0.0, 1.0), stats.GaussianFit(1.0, 0.0), 0.05
    )
    assert t == 1.0 and power == pytest.approx(sps.norm.cdf(1.0))
    with pytest.raises(ValueError, match="std"):
        stats.gaussian_threshold(stats.GaussianFit(0.0, -1.0), stats.GaussianFit(1.0, 1.0), 0.05)


def test_fit_kde():
    assert stats.fit_kde([1.0, 1.0, 1.0]) is None
    assert stats.fit_kde([2.0]) is None
    kde = stats.fit_kde([0.0, 1.0, 2.0, 2.5])
    grid = np.linspace(-5, 8, 2001)
    assert np.trapezoid(kde(grid), grid) == pytest.approx(1.0, abs=1e-3)


# ---------------------------------------------------------------- ROC and AUC


@pytest.mark.parametrize("seed", range(30))
def test_auc_matches_double_loop_and_trapezoid(seed):
    rng = np.random.default_rng(100 + seed)
    mem, non = _random_case(rng)
    expected = naive_auc(mem.tolist(), non.tolist())
    assert stats.auc(mem, non) == pytest.approx(expected, abs=1e-12)
    fpr, tpr, thresholds = stats.roc_curve(mem, non)
    assert np.trapezoid(tpr, fpr) == pytest.approx(expected, abs=1e-12)
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all(np.diff(thresholds) > 0) and thresholds[-1] == np.inf
    # Each point is the brute-force rate at its threshold.
    for f, t_, thr in zip(fpr, tpr, thresholds, strict=True):
        assert f == np.mean(non < thr) and t_ == np.mean(mem < thr)


def test_auc_extremes():
    assert stats.auc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert stats.auc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert stats.auc([1.0, 1.0], [1.0]) == 0.5


# ---------------------------------------------------------------- intervals and tests


def test_clopper_pearson_known_values():
    lo, hi = stats.clopper_pearson(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-12)
    lo, hi = stats.clopper_pearson(10, 10)
    assert lo == pytest.approx(0.025 ** (1 / 10), abs=1e-12) and hi == 1.0
    lo, hi = stats.clopper_pearson(5, 10)
    assert lo == pytest.approx(0.18709, abs=1e-5)
    assert hi == pytest.approx(0.81291, abs=1e-5)
    lo, hi = stats.clopper_pearson(0, 0)
    assert math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError):
        stats.clopper_pearson(3, 2)
    with pytest.raises(ValueError):
        stats.clopper_pearson(1.5, 2)
    with pytest.raises(ValueError):
        stats.clopper_pearson(1, 2, level=1.0)


def test_ks_test():
    stat, p = stats.ks_test([0.0, 1.0, 2.0], [0.0, 1.0, 2.0])
    assert stat == 0.0 and p == 1.0
    rng = np.random.default_rng(0)
    stat, p = stats.ks_test(rng.normal(0, 1, 500), rng.normal(1, 1, 500))
    assert stat > 0.3 and p < 1e-10


# ---------------------------------------------------------------- summaries


def test_summarize_keys_and_json():
    rng = np.random.default_rng(7)
    mem, non = rng.normal(0, 1, 30), rng.normal(2, 1, 40)
    s = stats.summarize(mem, non, 0.05)
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
    emp = stats.empirical_threshold(mem, non, 0.05)
    assert (s["threshold"], s["power"], s["fpr"], s["k"]) == (
        emp.threshold,
        emp.power,
        emp.fpr,
        emp.k,
    )
    assert s["member_loss_std"] == pytest.approx(np.std(mem, ddof=1))
    assert s["auc"] == pytest.approx(naive_auc(mem.tolist(), non.tolist()))
    one = stats.summarize([1.0], [2.0], 0.05)
    assert one["member_loss_std"] == 0.0 and one["power"] == 1.0


def test_evaluate_predictions():
    flags = np.array([True, False, True, False, True, False])
    losses = np.array([0.1, 3.0, 2.5, 0.2, 0.3, 4.0])
    ev = stats.evaluate_predictions(flags, losses, 1.0)
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
    assert ev["tpr_ci"] == pytest.approx(list(stats.clopper_pearson(2, 3)))
    assert ev["fpr_ci"] == pytest.approx(list(stats.clopper_pearson(1, 3)))
    json.dumps(ev, allow_nan=False)


def test_evaluate_predictions_one_pair_and_nan():
    ev = stats.evaluate_predictions(np.array([True, False]), [0.5, 2.0], 1.0)
    assert ev["accuracy"] == 1.0
    assert ev["tpr"] is None and ev["fpr_ci"] is None
    # Strict rule: a loss equal to t is predicted non-member.
    ev = stats.evaluate_predictions(np.array([True]), [1.0], 1.0)
    assert ev["items"][0]["predicted_member"] is False
    ev = stats.evaluate_predictions(np.array([True, False]), [float("nan"), np.inf], 1.0)
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
        stats.empirical_threshold(member, nonmember, alpha)


def test_validation_elsewhere():
    with pytest.raises(ValueError):
        stats.auc([1.0], [])
    with pytest.raises(ValueError):
        stats.roc_curve([np.nan], [1.0])
    with pytest.raises(ValueError):
        stats.fit_gaussian(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="bool"):
        stats.evaluate_predictions(np.array([1, 0]), [0.1, 0.2], 1.0)
    with pytest.raises(ValueError, match="shape"):
        stats.evaluate_predictions(np.array([True, False]), [0.1], 1.0)


# ================================================================ issue 8: scores, rules, metrics

from jaxmia import scores  # noqa: E402


def _plain_json(obj):
    """Only JSON types all the way down (no numpy scalars, no NaN/inf)."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return True
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, list):
        return all(_plain_json(v) for v in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in obj.items())
    return False


def naive_scores(z, y):
    """Per-row loops in Python floats: softmax probabilities, then the three scores."""
    out = {"loss": [], "lira": [], "hinge": []}
    for row in z:
        row = [float(v) for v in row]
        m = max(row)
        e = [math.exp(v - m) for v in row]
        p = e[y] / sum(e)
        out["loss"].append(-math.log(p))
        out["lira"].append(math.log(p) - math.log(1.0 - p))
        out["hinge"].append(row[y] - max(v for i, v in enumerate(row) if i != y))
    return {k: np.array(v) for k, v in out.items()}


def test_scores_match_naive_softmax():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (50, 10)).astype(np.float32)
    got = scores.all_scores(z, 3)
    want = naive_scores(z, 3)
    for name in scores.SCORES:
        assert got[name].dtype == np.float64
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)
    # Per-row labels too.
    y = rng.integers(0, 10, 50)
    np.testing.assert_allclose(
        scores.compute_score("loss", z, y),
        [naive_scores(z[i : i + 1], int(y[i]))["loss"][0] for i in range(50)],
        rtol=1e-10,
    )


def test_scores_known_values():
    # Equal logits over C classes: p_y = 1/C, loss = log C, phi = log(1/(C-1)), hinge 0.
    z = np.zeros((1, 100), np.float32)
    assert scores.loss_from_logits(z, 7)[0] == pytest.approx(math.log(100), abs=1e-12)
    assert scores.lira_from_logits(z, 7)[0] == pytest.approx(-math.log(99), abs=1e-12)
    assert scores.hinge_from_logits(z, 7)[0] == 0.0
    # A confident member: z_y = 60, the other 9 logits 0. p_y rounds to 1 in float64,
    # so log p - log(1 - p) is inf; phi = 60 - log 9 exactly from the logits.
    z = np.zeros((1, 10))
    z[0, 2] = 60.0
    with np.errstate(divide="ignore"):
        p = np.exp(60.0) / (np.exp(60.0) + 9.0)
        assert np.isinf(np.log(p) - np.log1p(-p))
    assert scores.lira_from_logits(z, 2)[0] == pytest.approx(60.0 - math.log(9.0), abs=1e-12)
    assert scores.hinge_from_logits(z, 2)[0] == 60.0
    assert scores.loss_from_logits(z, 2)[0] == pytest.approx(9.0 * math.exp(-60.0), rel=1e-9)
    # And a confident non-member: z_y = -60.
    z[0, 2] = -60.0
    assert scores.lira_from_logits(z, 2)[0] == pytest.approx(-60.0 - math.log(9.0), abs=1e-12)


def test_orientation_and_decision_text():
    assert scores.HIGH_IS_MEMBER == {"loss": False, "lira": True, "hinge": True}
    np.testing.assert_array_equal(scores.to_attack([1.0, 2.0], "loss"), [-1.0, -2.0])
    np.testing.assert_array_equal(scores.to_attack([1.0, 2.0], "lira"), [1.0, 2.0])
    assert scores.from_attack(-0.5, "loss") == 0.5
    assert scores.decision_text("loss", 0.5) == "member iff loss < 0.5"
    assert scores.decision_text("lira", 2.0) == "member iff φ > 2"
    assert scores.decision_text("hinge", 1.25) == "member iff hinge > 1.25"
    assert stats.SCORES is scores.SCORES
    for bad in ("nll", ""):
        with pytest.raises(ValueError, match="score must be one of"):
            scores.compute_score(bad, np.zeros((1, 3)), 0)
    with pytest.raises(ValueError, match="label"):
        scores.loss_from_logits(np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match="label"):
        scores.loss_from_logits(np.zeros((2, 3)), 0.5)
    with pytest.raises(ValueError, match="C >= 2"):
        scores.loss_from_logits(np.zeros((2, 1)), 0)
    with pytest.raises(ValueError, match="NaN"):
        scores.loss_from_logits(np.array([[0.0, np.nan]]), 0)


# ---------------------------------------------------------------- order-statistic rules


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


@pytest.mark.parametrize("rule", ["empirical", "conformal", "confident"])
def test_order_statistic_k_matches_naive(rule):
    for n in (1, 2, 5, 9, 10, 19, 20, 58, 59, 60, 100, 150):
        for alpha in (0.01, 0.05, 0.1, 0.29, 0.5):
            assert stats.order_statistic_k(rule, n, alpha) == naive_k(rule, n, alpha), (n, alpha)


def test_order_statistic_k_known_answers():
    # conformal: l = 19, alpha = 0.1 -> floor(2.0) - 1 = 1; l = 8 -> floor(0.9) = 0: none.
    assert stats.order_statistic_k("conformal", 19, 0.1) == 1
    assert stats.order_statistic_k("conformal", 8, 0.1) is None
    # confident at alpha 0.05: 0.95^59 = 0.0485 <= 5% but 0.95^58 = 0.0510 > 5%.
    assert stats.order_statistic_k("confident", 59, 0.05) == 0
    assert stats.order_statistic_k("confident", 58, 0.05) is None
    assert stats.heldout_fpr_law(3, 60) == (4 / 61, pytest.approx(sps.beta.ppf(0.95, 4, 57)))


def naive_cut(stat_non, k):
    return sorted(stat_non, reverse=True)[k]


@pytest.mark.parametrize("score", scores.SCORES)
@pytest.mark.parametrize("rule", ["empirical", "conformal", "confident"])
def test_order_rules_on_every_score(score, rule):
    rng = np.random.default_rng(hash((score, rule)) % 2**32)
    mem = rng.normal(1.0, 1.0, 70)
    non = rng.normal(0.0, 1.0, 80)
    if score == "loss":  # losses: low = member, positive
        mem, non = np.exp(-mem), np.exp(-non)
    res = stats.attack_summary(mem, non, alpha=0.1, rule=rule, score=score)
    s_mem, s_non = scores.to_attack(mem, score), scores.to_attack(non, score)
    k = naive_k(rule, 80, 0.1)
    assert res["k"] == k
    cut = naive_cut(s_non.tolist(), k)
    assert res["threshold"] == scores.from_attack(cut, score)
    assert res["power"] == sum(v > cut for v in s_mem) / 70
    assert res["calibration_fpr"] == sum(v > cut for v in s_non) / 80 <= 0.1
    assert res["expected_heldout_fpr"] == (k + 1) / 81
    assert res["expected_heldout_fpr_upper95"] == pytest.approx(sps.beta.ppf(0.95, k + 1, 80 - k))
    op = "<" if score == "loss" else ">"
    assert res["decision"].startswith(f"member iff {scores.SYMBOLS[score]} {op} ")
    assert _plain_json(res)


def test_attack_summary_reproduces_todays_empirical_rule():
    for seed in range(20):
        rng = np.random.default_rng(500 + seed)
        mem, non = _random_case(rng)
        mem, non = np.abs(mem), np.abs(non)
        for alpha in (0.05, 0.1, 0.29):
            old = stats.summarize(mem, non, alpha)
            new = stats.attack_summary(mem, non, alpha=alpha)
            for key in ("threshold", "power", "fpr", "k", "n_member", "n_nonmember", "auc"):
                assert new[key] == old[key], key
            for key in ("member_loss_mean", "member_loss_std", "nonmember_loss_std"):
                assert new[key] == old[key]
            assert new["gaussian_threshold"] == pytest.approx(old["gaussian_threshold"], abs=1e-12)
            assert new["gaussian_power"] == pytest.approx(old["gaussian_power"], abs=1e-12)


def test_conformal_and_confident_too_few_models_say_so():
    res = stats.attack_summary([0.1] * 8, np.arange(1.0, 9.0), alpha=0.1, rule="conformal")
    assert res["threshold"] is None and res["power"] == 0.0 and res["k"] is None
    assert res["decision"].startswith("never member")
    assert any("conformal: l=8" in w and "needs l >= 9" in w for w in res["warnings"])
    res = stats.attack_summary([0.1] * 58, np.arange(1.0, 59.0), alpha=0.05, rule="confident")
    assert res["threshold"] is None and res["expected_heldout_fpr"] == 0.0
    assert any("needs l >= 59" in w for w in res["warnings"])


# ---------------------------------------------------------------- gaussian and lira rules


def _exact_moments(rng, n, mean, sd):
    x = rng.normal(0, 1, n)
    return mean + sd * (x - x.mean()) / x.std(ddof=1)


def test_gaussian_rule_known_answer():
    rng = np.random.default_rng(4)
    # phi: member iff phi > mu + sd * Phi^-1(0.95) = -3 + 2 * 1.6448536269514722.
    non = _exact_moments(rng, 50, -3.0, 2.0)
    mem = _exact_moments(rng, 50, 4.0, 1.0)
    res = stats.attack_summary(mem, non, alpha=0.05, rule="gaussian", score="lira")
    t = -3.0 + 2.0 * 1.6448536269514722
    assert res["threshold"] == pytest.approx(t, abs=1e-12)
    assert res["gaussian_threshold"] == pytest.approx(t, abs=1e-12)
    assert res["gaussian_power"] == pytest.approx(sps.norm.sf(t - 4.0), abs=1e-12)
    assert res["power"] == np.mean(mem > t) and res["calibration_fpr"] == np.mean(non > t)
    assert res["k"] is None
    # On skewed losses the normal fit can put the threshold below 0: said, not hidden.
    skewed = stats.attack_summary(
        rng.exponential(0.05, 60), rng.exponential(1.0, 60) * 0.3 + 0.05, alpha=0.05,
        rule="gaussian",
    )  # fmt: skip
    assert skewed["threshold"] < 0 and skewed["power"] == 0.0
    assert any("negative loss" in w for w in skewed["warnings"])
    # loss: member iff loss < mu - sd * 1.6448...
    res = stats.attack_summary(np.abs(mem) / 10, non + 10, alpha=0.05, rule="gaussian")
    assert res["threshold"] == pytest.approx(7.0 - 2.0 * 1.6448536269514722, abs=1e-12)
    assert res["decision"].startswith("member iff loss < ")


def test_gaussian_heldout_fpr_known_and_monte_carlo():
    # Mean: P(T_9 > 1.6448536 / sqrt(1.1)) for l = 10.
    mean, upper = stats.gaussian_heldout_fpr(0.05, 10)
    assert mean == pytest.approx(sps.t.sf(1.6448536269514722 / math.sqrt(1.1), 9), abs=1e-12)
    assert stats.gaussian_heldout_fpr(0.05, 1) == (None, None)
    # Monte Carlo: 200,000 fits of N(0, 1) from 10 draws; FPR = P(X > u) = sf(u).
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1, (200_000, 10))
    u = x.mean(1) + x.std(1, ddof=1) * sps.norm.isf(0.05)
    fpr = sps.norm.sf(u)
    se = fpr.std() / math.sqrt(fpr.size)
    assert fpr.mean() == pytest.approx(mean, abs=4 * se)
    assert np.mean(fpr > upper) == pytest.approx(0.05, abs=4 * math.sqrt(0.05 * 0.95 / fpr.size))
    # Large l: both approach alpha.
    mean, upper = stats.gaussian_heldout_fpr(0.05, 100_000)
    assert mean == pytest.approx(0.05, abs=2e-4) and 0.05 < upper < 0.052


def test_likelihood_ratio_region_matches_grid():
    grid = np.linspace(-30, 30, 60_001)
    cases = [((2.0, 1.0), (0.0, 1.0)), ((2.0, 3.0), (0.0, 1.0)), ((2.0, 0.5), (0.0, 1.0))]
    for (mi, si), (mo, so) in cases:
        m, n = stats.GaussianFit(mi, si), stats.GaussianFit(mo, so)
        lr = stats.log_likelihood_ratio(grid, m, n)
        for c in (-5.0, -1.0, 0.0, 0.7, 3.0):
            region = stats.likelihood_ratio_region(m, n, c)
            inside = np.zeros(grid.size, bool)
            for lo, hi in region:
                lo = -np.inf if lo is None else lo
                hi = np.inf if hi is None else hi
                inside |= (grid > lo) & (grid < hi)
            near_edge = np.zeros(grid.size, bool)
            for lo, hi in region:
                for e in (lo, hi):
                    if e is not None:
                        near_edge |= np.abs(grid - e) < 1e-3
            assert np.array_equal(inside[~near_edge], (lr > c)[~near_edge]), (mi, si, c)
    # Equal sds: a half-line, x > (mi + mo)/2 + c * sd^2 / (mi - mo).
    region = stats.likelihood_ratio_region(stats.GaussianFit(2, 1), stats.GaussianFit(0, 1), 1.0)
    assert region == [[pytest.approx(1.5), None]]


def test_lira_rule():
    rng = np.random.default_rng(5)
    mem, non = rng.normal(3.0, 1.5, 100), rng.normal(0.0, 1.0, 100)
    res = stats.attack_summary(mem, non, alpha=0.1, rule="lira", score="lira")
    m, n = (
        stats.GaussianFit(mem.mean(), mem.std(ddof=1)),
        stats.GaussianFit(non.mean(), non.std(ddof=1)),
    )
    lr_non = stats.log_likelihood_ratio(non, m, n)
    lr_mem = stats.log_likelihood_ratio(mem, m, n)
    c = naive_cut(lr_non.tolist(), 10)
    assert res["threshold"] == c and res["threshold_scale"] == "log likelihood ratio"
    assert res["calibration_fpr"] == np.mean(lr_non > c) <= 0.1
    assert res["power"] == np.mean(lr_mem > c)
    assert "log N(φ;" in res["decision"]
    # Members are wider than non-members: the member region is two half-lines.
    assert len(res["member_region"]) == 2
    # A zero std cannot give a ratio: a limited result with a warning.
    res = stats.attack_summary(
        [1.0, 1.0, 1.0], [0.0, 0.5, 0.2], alpha=0.4, rule="lira", score="lira"
    )
    assert res["threshold"] is None and any("non-zero std" in w for w in res["warnings"])


# ---------------------------------------------------------------- metrics


def naive_balanced_accuracy(s_mem, s_non):
    best = 0.0
    for u in [-math.inf, math.inf] + list(s_mem) + list(s_non):
        tpr = sum(v > u for v in s_mem) / len(s_mem)
        fpr = sum(v > u for v in s_non) / len(s_non)
        best = max(best, (tpr + 1 - fpr) / 2)
    return best


@pytest.mark.parametrize("seed", range(15))
def test_metrics_match_naive(seed):
    rng = np.random.default_rng(900 + seed)
    mem, non = _random_case(rng)
    # On the attack scale (high = member) the AUC counts s_mem > s_non.
    assert stats.attack_auc(mem, non) == pytest.approx(1 - naive_auc(mem.tolist(), non.tolist()))
    assert stats.attack_auc(-mem, -non) == pytest.approx(naive_auc(mem.tolist(), non.tolist()))
    assert stats.balanced_accuracy(mem, non) == pytest.approx(
        naive_balanced_accuracy(mem.tolist(), non.tolist())
    )
    fpr, tpr, cuts = stats.attack_roc(mem, non)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    for f, t, u in zip(fpr, tpr, cuts, strict=True):
        assert f == np.mean(non > u) and t == np.mean(mem > u)
    # TPR at FPR: the empirical rule's power, or None below 1/l.
    for f in (0.001, 0.01, 0.1, 0.5):
        got = stats.attack_tpr_at_fpr(-mem, -non, f)
        if f * non.size < 1:
            assert got is None
        else:
            assert got == stats.empirical_threshold(mem, non, f).power


def test_balanced_accuracy_and_auc_known():
    assert stats.balanced_accuracy([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert stats.balanced_accuracy([1.0], [1.0]) == 0.5
    # N(1,1) vs N(0,1): best cut at 0.5, balanced accuracy Phi(0.5); AUC Phi(1/sqrt 2).
    rng = np.random.default_rng(8)
    mem, non = rng.normal(1, 1, 200_000), rng.normal(0, 1, 200_000)
    assert stats.balanced_accuracy(mem, non) == pytest.approx(sps.norm.cdf(0.5), abs=4e-3)
    assert stats.attack_auc(mem, non) == pytest.approx(sps.norm.cdf(1 / math.sqrt(2)), abs=3e-3)


# ---------------------------------------------------------------- epsilon lower bound


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


def test_epsilon_lower_bound_formula():
    for fp, nn, fn, nm, delta in [(0, 10, 0, 10, 0.0), (2, 50, 5, 40, 0.0), (1, 30, 3, 30, 1e-3)]:
        eps, sym, fpr_ub, fnr_ub = stats.epsilon_lower_bound(fp, nn, fn, nm, delta=delta)
        f_ub, n_ub = naive_cp_upper(fp, nn, 0.975), naive_cp_upper(fn, nm, 0.975)
        assert float(fpr_ub) == pytest.approx(f_ub, abs=1e-9)
        assert float(fnr_ub) == pytest.approx(n_ub, abs=1e-9)
        want = max(0.0, math.log((1 - delta - n_ub) / f_ub))
        assert float(eps) == pytest.approx(want, abs=1e-8)
        want_sym = max(want, math.log((1 - delta - f_ub) / n_ub))
        assert float(sym) == pytest.approx(want_sym, abs=1e-8)
    # Every prediction right on E pairs: FPR_ub = FNR_ub = 1 - 0.025^(1/E).
    for e in (1, 10, 100, 1000):
        b = 1 - 0.025 ** (1 / e)
        assert float(stats.epsilon_lower_bound(0, e, 0, e)[0]) == pytest.approx(
            max(0.0, math.log((1 - b) / b)), rel=1e-9
        )
    # Worse than chance: 0, never negative. A vector of counts works elementwise.
    assert float(stats.epsilon_lower_bound(10, 10, 10, 10)[1]) == 0.0
    v = stats.epsilon_lower_bound(np.array([0, 5]), 10, np.array([0, 5]), 10)[0]
    assert v.shape == (2,) and v[1] == 0.0 and v[0] > 0
    with pytest.raises(ValueError, match="delta"):
        stats.epsilon_lower_bound(0, 1, 0, 1, delta=1.0)


def test_epsilon_matches_jax_privacy():
    auditing = pytest.importorskip("jax_privacy.auditing")
    rng = np.random.default_rng(21)
    for _ in range(5):
        s_in, s_out = rng.normal(2, 1, 40), rng.normal(0, 1, 60)
        u = 1.3  # member iff s > u; no score equals it, so >= and > agree
        fp, fn = int(np.sum(s_out > u)), int(np.sum(s_in <= u))
        ours = float(stats.epsilon_lower_bound(fp, 60, fn, 40, confidence=0.95)[0])
        auditor = auditing.CanaryScoreAuditor(s_in, s_out)
        theirs = auditor.epsilon_clopper_pearson(0.05, threshold_strategy=auditing.Explicit(u))
        assert ours == pytest.approx(float(theirs), abs=1e-9)
        # jax-privacy takes the ROC's convex hull (classifiers that randomise between two
        # thresholds), so its AUC and TPR at FPR are at least ours, the plain ROC's.
        assert stats.attack_auc(s_in, s_out) <= auditor.attack_auroc() + 1e-12
        for f in (0.05, 0.1):
            assert stats.attack_tpr_at_fpr(s_in, s_out, f) <= auditor.tpr_at_given_fpr(f) + 1e-12


def test_summary_epsilon_and_evaluation():
    rng = np.random.default_rng(6)
    mem, non = rng.gamma(1.0, 0.1, 100), rng.normal(3.0, 0.5, 100)
    ev_mem = np.array([0.05, 0.1, 4.0, np.nan])
    ev_non = np.array([3.0, 0.01, 3.5])
    res = stats.attack_summary(mem, non, eval_member=ev_mem, eval_nonmember=ev_non, alpha=0.05)
    t = res["threshold"]
    ev = res["evaluation"]
    assert (ev["true_positives"], ev["false_negatives"]) == (2, 1)
    assert (ev["false_positives"], ev["true_negatives"], ev["n_undecided"]) == (1, 2, 1)
    assert ev["tpr"] == 2 / 3 and ev["fpr"] == 1 / 3
    assert ev["tpr_ci"] == pytest.approx(list(stats.clopper_pearson(2, 3)))
    # Items interleaved IN, OUT pair by pair; the last member has no prediction.
    assert [(it["member"], it["predicted_member"]) for it in ev["items"]] == [
        (True, True), (False, False), (True, True), (False, True),
        (True, False), (False, False), (True, None),
    ]  # fmt: skip
    assert all(it["loss"] == it["score"] for it in ev["items"])
    assert all(it["predicted_member"] == (it["score"] < t) for it in ev["items"][:6])
    eps = res["epsilon_lower_bound"]
    want = stats.epsilon_lower_bound(1, 3, 1, 3, confidence=0.95)
    assert eps["value"] == float(want[0]) and eps["symmetric"] == float(want[1])
    assert eps["confidence"] == 0.95 and eps["delta"] == 0.0
    best = eps["max_over_calibration_thresholds"]
    assert best["calibration_value"] >= 0 and best["value"] >= 0
    assert _plain_json(res)
    # No evaluation models: no evaluation, no bound, and a warning saying why.
    res = stats.attack_summary(mem, non, alpha=0.05)
    assert res["evaluation"] is None and res["epsilon_lower_bound"]["value"] is None
    assert any("eval_pairs" in w for w in res["warnings"])


def test_epsilon_best_calibration_cut_is_chosen_without_eval():
    # Perfectly separated calibration and evaluation: the best calibration cut separates
    # the evaluation models too, so its bound is the all-correct one.
    mem, non = np.linspace(0.0, 1.0, 50), np.linspace(2.0, 3.0, 50)
    ev_m, ev_n = np.full(20, 0.5), np.full(20, 2.5)
    res = stats.attack_summary(mem, non, eval_member=ev_m, eval_nonmember=ev_n, alpha=0.05)
    best = res["epsilon_lower_bound"]["max_over_calibration_thresholds"]
    assert best["value"] == pytest.approx(float(stats.epsilon_lower_bound(0, 20, 0, 20)[0]))
    assert 1.0 < best["threshold"] <= 2.0


# ---------------------------------------------------------------- warnings


def test_warnings_for_what_the_data_cannot_support():
    res = stats.attack_summary([0.1], [2.0], alpha=0.05)  # n_iterations: 1
    text = " | ".join(res["warnings"])
    assert "n_iterations: 1" in text
    assert "floor(alpha*l) = 0" in text
    assert "TPR at FPR 0.1 not resolvable: needs l >= 10" in text
    assert res["tpr_at_fpr"] == {"0.001": None, "0.01": None, "0.1": None}
    res = stats.attack_summary([0.1, 0.1, 0.1], [2.0, 2.5, 3.0], alpha=0.4)
    assert any("member loss scores have std 0" in w for w in res["warnings"])
    res = stats.attack_summary(np.arange(100) / 100, np.arange(100) + 5.0, alpha=0.1)
    assert res["tpr_at_fpr"]["0.01"] == 1.0 and res["tpr_at_fpr"]["0.001"] is None
    assert any("(k+1)/(l+1) = 0.109 > alpha=0.1" in w for w in res["warnings"])
    with pytest.raises(ValueError, match="threshold_rule"):
        stats.attack_summary([0.1], [2.0], alpha=0.05, rule="bonferroni")


def test_attack_summaries_per_target():
    rng = np.random.default_rng(9)
    mem, non = rng.normal(1, 1, (3, 40)), rng.normal(0, 1, (3, 40))
    out = stats.attack_summaries(
        mem,
        non,
        eval_member=mem[:, :5],
        eval_nonmember=non[:, :5],
        alpha=0.1,
        score="lira",
        items=False,
    )
    assert len(out) == 3 and "items" not in out[0]["evaluation"]
    assert (
        out[1]["threshold"]
        == stats.attack_summary(mem[1], non[1], alpha=0.1, score="lira")["threshold"]
    )


# ---------------------------------------------------------------- Monte Carlo (issue 8 "Done when")


@pytest.mark.parametrize(("n", "alpha"), [(60, 0.05), (200, 0.05), (100, 0.1)])
def test_monte_carlo_heldout_fpr_of_each_rule(n, alpha):
    """10,000 calibrations on N(0, 1) non-member scores; FPR(u) = P(S > u) exactly."""
    reps = 10_000
    rng = np.random.default_rng(n)
    s_non = np.sort(rng.normal(0.0, 1.0, (reps, n)), axis=1)
    fpr = {}
    for rule in ("empirical", "conformal", "confident"):
        k = stats.order_statistic_k(rule, n, alpha)
        fpr[rule] = sps.norm.sf(s_non[:, n - 1 - k])
    # The vectorised cut is what attack_summary picks (checked on a few repetitions).
    for r in range(5):
        for rule in ("empirical", "conformal", "confident"):
            res = stats.attack_summary(
                s_non[r, :10] + 1, s_non[r], alpha=alpha, rule=rule, score="lira"
            )
            assert sps.norm.sf(res["threshold"]) == fpr[rule][r]

    def se(x):
        return x.std() / math.sqrt(reps)

    k = math.floor(alpha * n + 1e-9)
    assert fpr["empirical"].mean() == pytest.approx((k + 1) / (n + 1), abs=4 * se(fpr["empirical"]))
    assert fpr["empirical"].mean() > alpha  # the reason for the other two rules
    assert fpr["conformal"].mean() <= alpha + 3 * se(fpr["conformal"])
    binom_se = math.sqrt(0.05 * 0.95 / reps)
    exceed = np.mean(fpr["confident"] > alpha)
    assert exceed <= 0.05 + 3 * binom_se
    # ... and it is the exact Beta tail, not just below 5%.
    kc = stats.order_statistic_k("confident", n, alpha)
    assert exceed == pytest.approx(sps.beta.sf(alpha, kc + 1, n - kc), abs=4 * binom_se)


def test_readme_epsilon_table_is_computed():
    """The README's "evaluation pairs -> best epsilon" table is what the formula gives."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = [ln.strip() for ln in readme.splitlines()]
    rows = [ln for ln in lines if ln.startswith("| evaluation pairs E |")]
    rows += [ln for ln in lines if ln.startswith("| best ε_lb at 95%")]
    assert len(rows) == 2
    pairs = [c.strip().replace(",", "") for c in rows[0].strip("|").split("|")[1:]]
    bests = [float(c) for c in rows[1].strip("|").split("|")[1:]]
    for e, best in zip(pairs, bests, strict=True):
        for n in range(int(e.split("–")[0]), int(e.split("–")[-1]) + 1):
            eps = float(stats.epsilon_lower_bound(0, n, 0, n, confidence=0.95)[0])
            assert eps == pytest.approx(best, abs=0.005), n


def test_gaussian_heldout_fpr_is_defined_over_a_grid():
    # scipy's noncentral t returned NaN deep in its tail for l = 24, alpha = 0.1
    # (the demo's sizes), and the root search stopped with a ValueError.
    for n in (2, 3, 5, 10, 16, 24, 50, 100, 500, 1000):
        for a in (0.01, 0.05, 0.1, 0.3):
            mean, upper = stats.gaussian_heldout_fpr(a, n)
            assert 0 < mean < 1 and mean <= upper <= 1, (a, n, mean, upper)
    mean, upper = stats.gaussian_heldout_fpr(0.1, 24)
    assert mean == pytest.approx(0.1109233, abs=1e-6)
    assert upper == pytest.approx(0.2075099, abs=1e-6)
