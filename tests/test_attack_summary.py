"""Tests for jaxmia.attack.summary: every number of the attack on one target, by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps

from jaxmia.attack import bounds, metrics, scores, summary, thresholds
from jaxmia.attack.thresholds import GaussianFit

import reference_stats as ref

# ---------------------------------------------------------------- order-statistic rules


@pytest.mark.parametrize("score", list(scores.SCORES))
@pytest.mark.parametrize("rule", ["empirical", "conformal", "confident"])
def test_order_rules_on_every_score(score, rule):
    rng = np.random.default_rng(hash((score, rule)) % 2**32)
    mem = rng.normal(1.0, 1.0, 70)
    non = rng.normal(0.0, 1.0, 80)
    if score == "loss":  # losses: low = member, positive
        mem, non = np.exp(-mem), np.exp(-non)
    res = summary.summarize(mem, non, alpha=0.1, rule=rule, score=score)
    s_mem, s_non = scores.to_attack(mem, score), scores.to_attack(non, score)
    k = ref.naive_k(rule, 80, 0.1)
    assert res["k"] == k
    cut = ref.naive_cut(s_non.tolist(), k)
    assert res["threshold"] == scores.from_attack(cut, score)
    assert res["power"] == sum(v > cut for v in s_mem) / 70
    assert res["calibration_fpr"] == sum(v > cut for v in s_non) / 80 <= 0.1
    assert res["expected_heldout_fpr"] == (k + 1) / 81
    assert res["expected_heldout_fpr_upper95"] == pytest.approx(sps.beta.ppf(0.95, k + 1, 80 - k))
    op = "<" if score == "loss" else ">"
    assert res["decision"].startswith(f"member iff {scores.SCORES[score].symbol} {op} ")
    assert ref.plain_json(res)


def test_summarize_reproduces_the_reference_on_the_loss():
    for seed in range(20):
        rng = np.random.default_rng(500 + seed)
        mem, non = ref.random_case(rng)
        mem, non = np.abs(mem), np.abs(non)
        for alpha in (0.05, 0.1, 0.29):
            old = ref.summarize(mem, non, alpha)
            new = summary.summarize(mem, non, alpha=alpha)
            for key in ("member_loss_mean", "member_loss_std", "nonmember_loss_std"):
                assert new[key] == old[key]
            # Scores without any spread call nobody a member (the old API still cut there).
            if np.ptp(np.concatenate([mem, non])) == 0:
                assert new["threshold"] is None and new["power"] == new["fpr"] == 0.0
                continue
            for key in ("threshold", "power", "fpr", "k", "n_member", "n_nonmember", "auc"):
                assert new[key] == old[key], key
            # A point mass of non-members gives the gaussian rule no cut (the old API
            # cut at their mean, which can round below the value itself).
            if np.ptp(non) == 0:
                assert new["gaussian_threshold"] is None and new["gaussian_power"] == 0.0
                continue
            assert new["gaussian_threshold"] == pytest.approx(old["gaussian_threshold"], abs=1e-12)
            assert new["gaussian_power"] == pytest.approx(old["gaussian_power"], abs=1e-12)


def test_conformal_and_confident_too_few_models_say_so():
    res = summary.summarize([0.1] * 8, np.arange(1.0, 9.0), alpha=0.1, rule="conformal")
    assert res["threshold"] is None and res["power"] == 0.0 and res["k"] is None
    assert res["decision"].startswith("never member")
    assert any("conformal: l=8" in w and "needs l >= 9" in w for w in res["warnings"])
    res = summary.summarize([0.1] * 58, np.arange(1.0, 59.0), alpha=0.05, rule="confident")
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
    res = summary.summarize(mem, non, alpha=0.05, rule="gaussian", score="lira")
    t = -3.0 + 2.0 * 1.6448536269514722
    assert res["threshold"] == pytest.approx(t, abs=1e-12)
    assert res["gaussian_threshold"] == pytest.approx(t, abs=1e-12)
    assert res["gaussian_power"] == pytest.approx(sps.norm.sf(t - 4.0), abs=1e-12)
    assert res["power"] == np.mean(mem > t) and res["calibration_fpr"] == np.mean(non > t)
    assert res["k"] is None
    # On skewed losses the normal fit can put the threshold below 0: said, not hidden.
    skewed = summary.summarize(
        rng.exponential(0.05, 60), rng.exponential(1.0, 60) * 0.3 + 0.05, alpha=0.05,
        rule="gaussian",
    )  # fmt: skip
    assert skewed["threshold"] < 0 and skewed["power"] == 0.0
    assert any("negative loss" in w for w in skewed["warnings"])
    # loss: member iff loss < mu - sd * 1.6448...
    res = summary.summarize(np.abs(mem) / 10, non + 10, alpha=0.05, rule="gaussian")
    assert res["threshold"] == pytest.approx(7.0 - 2.0 * 1.6448536269514722, abs=1e-12)
    assert res["decision"].startswith("member iff loss < ")


def test_lira_rule():
    rng = np.random.default_rng(5)
    mem, non = rng.normal(3.0, 1.5, 100), rng.normal(0.0, 1.0, 100)
    # 200 models: per-example variances.  The Gaussians see the members and the
    # non-members at odd positions; the cut is set on the 50 at even positions.
    res = summary.summarize(mem, non, alpha=0.1, rule="lira", score="lira")
    m, n = (
        GaussianFit(mem.mean(), mem.std(ddof=1)),
        GaussianFit(non[1::2].mean(), non[1::2].std(ddof=1)),
    )
    lr_non = thresholds.log_likelihood_ratio(non, m, n)
    lr_mem = thresholds.log_likelihood_ratio(mem, m, n)
    c = ref.naive_cut(lr_non[0::2].tolist(), 5)
    assert res["threshold"] == c and res["threshold_scale"] == "log likelihood ratio"
    assert res["k"] == 5 and res["expected_heldout_fpr"] == 6 / 51
    assert res["calibration_fpr"] == np.mean(lr_non > c)
    assert res["power"] == np.mean(lr_mem > c)
    assert "log N(φ;" in res["decision"]
    own = res["lira_rule"]
    assert own["variance"] == "per_example" and (own["fit_nonmembers"], own["cut_nonmembers"]) == (
        50,
        50,
    )
    assert own["nonmember_fit"] == {"mean": n.mean, "std": n.std}
    assert "Beta(6, 45) over the 50 non-members" in res["expected_heldout_fpr_method"]
    # Members are wider than non-members: the member region is two half-lines.
    assert len(res["member_region"]) == 2
    # One shared σ (fixed, the default below 64 models): one half-line, the cut the
    # same order statistic of the cut half's scores.
    few = summary.summarize(mem[:20], non[:20], alpha=0.1, rule="lira", score="lira")
    assert few["lira_rule"]["variance"] == "fixed" and len(few["member_region"]) == 1
    lo = few["member_region"][0][0]
    # The ratio is linear in φ: its cut is the 2nd largest φ of the 10 cut models (k = 1),
    # found again by solving the linear ratio for φ (one rounding of each coefficient).
    assert few["k"] == 1 and lo == pytest.approx(np.sort(non[:20][0::2])[-2], rel=1e-12)
    # A zero std cannot give a ratio: a limited result with a warning.
    res = summary.summarize([1.0, 1.0, 1.0], [0.0, 0.5, 0.2], alpha=0.4, rule="lira", score="lira")
    assert res["threshold"] is None and any(
        "member scores have zero spread" in w for w in res["warnings"]
    )
    # One non-member model cannot be both fitted on and cut on.
    res = summary.summarize([1.0, 2.0], [0.0], alpha=0.4, rule="lira", score="lira")
    assert res["threshold"] is None and any("needs 2" in w for w in res["warnings"])


# ---------------------------------------------------------------- evaluation and epsilon


def test_summary_epsilon_and_evaluation():
    rng = np.random.default_rng(6)
    mem, non = rng.gamma(1.0, 0.1, 100), rng.normal(3.0, 0.5, 100)
    ev_mem = np.array([0.05, 0.1, 4.0, np.nan])
    ev_non = np.array([3.0, 0.01, 3.5])
    res = summary.summarize(mem, non, eval_member=ev_mem, eval_nonmember=ev_non, alpha=0.05)
    t = res["threshold"]
    ev = res["evaluation"]
    assert (ev["true_positives"], ev["false_negatives"]) == (2, 1)
    assert (ev["false_positives"], ev["true_negatives"], ev["n_undecided"]) == (1, 2, 1)
    assert ev["tpr"] == 2 / 3 and ev["fpr"] == 1 / 3
    assert ev["tpr_ci"] == pytest.approx(list(metrics.clopper_pearson(2, 3)))
    # Items interleaved IN, OUT pair by pair; the last member has no prediction.
    assert [(it["member"], it["predicted_member"]) for it in ev["items"]] == [
        (True, True), (False, False), (True, True), (False, True),
        (True, False), (False, False), (True, None),
    ]  # fmt: skip
    assert all(it["loss"] == it["score"] for it in ev["items"])
    assert all(it["predicted_member"] == (it["score"] < t) for it in ev["items"][:6])
    eps = res["epsilon_lower_bound"]
    want = bounds.epsilon_lower_bound(1, 3, 1, 3, confidence=0.95)
    assert eps["value"] == float(want[0]) and eps["symmetric"] == float(want[1])
    assert eps["confidence"] == 0.95 and eps["delta"] == 0.0
    best = eps["max_over_calibration_thresholds"]
    assert best["calibration_value"] >= 0 and best["value"] >= 0
    assert ref.plain_json(res)
    # No evaluation models: no evaluation, no bound, and a warning saying why.
    res = summary.summarize(mem, non, alpha=0.05)
    assert res["evaluation"] is None and res["epsilon_lower_bound"]["value"] is None
    assert any("eval_pairs" in w for w in res["warnings"])


def test_epsilon_best_calibration_cut_is_chosen_without_eval():
    # Perfectly separated calibration and evaluation: the best calibration cut separates
    # the evaluation models too, so its bound is the all-correct one.
    mem, non = np.linspace(0.0, 1.0, 50), np.linspace(2.0, 3.0, 50)
    ev_m, ev_n = np.full(20, 0.5), np.full(20, 2.5)
    res = summary.summarize(mem, non, eval_member=ev_m, eval_nonmember=ev_n, alpha=0.05)
    best = res["epsilon_lower_bound"]["max_over_calibration_thresholds"]
    assert best["value"] == pytest.approx(float(bounds.epsilon_lower_bound(0, 20, 0, 20)[0]))
    assert 1.0 < best["threshold"] <= 2.0


# ---------------------------------------------------------------- warnings


def test_warnings_for_what_the_data_cannot_support():
    res = summary.summarize([0.1], [2.0], alpha=0.05)  # n_iterations: 1
    text = " | ".join(res["warnings"])
    assert "raise n_iterations" in text
    assert "floor(alpha*l) = 0" in text
    assert "TPR at FPR 0.1 not resolvable: needs l >= 10" in text
    assert res["tpr_at_fpr"] == {"0.001": None, "0.01": None, "0.1": None}
    res = summary.summarize([0.1, 0.1, 0.1], [2.0, 2.5, 3.0], alpha=0.4)
    assert any("member loss scores have std 0" in w for w in res["warnings"])
    res = summary.summarize(np.arange(100) / 100, np.arange(100) + 5.0, alpha=0.1)
    assert res["tpr_at_fpr"]["0.01"] == 1.0 and res["tpr_at_fpr"]["0.001"] is None
    assert any("(k+1)/(l+1) = 0.109 > alpha=0.1" in w for w in res["warnings"])
    with pytest.raises(ValueError, match="threshold_rule"):
        summary.summarize([0.1], [2.0], alpha=0.05, rule="bonferroni")


def test_summarize_targets_is_summarize_per_row():
    rng = np.random.default_rng(9)
    mem, non = rng.normal(1, 1, (3, 40)), rng.normal(0, 1, (3, 40))
    out = summary.summarize_targets(
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
        == summary.summarize(mem[1], non[1], alpha=0.1, score="lira")["threshold"]
    )


def test_settings_from_config():
    cfg = SimpleNamespace(
        alpha=0.1,
        score="lira",
        threshold_rule="conformal",
        delta=1e-3,
        confidence=0.9,
        seed=3,
        lira_variance="fixed",
    )
    assert summary.Settings.from_config(cfg) == summary.Settings(
        0.1, "lira", "conformal", 1e-3, 0.9, "fixed"
    )


# ---------------------------------------------------------------- scores that cannot separate

# Every model gave the same score (identical models): the values of issue 17's report,
# phi = -2.4349065246231776 for every model (the gaussian rule's cut at the mean of equal
# values rounded one ulp below them and called every model a member), and its loss.
IDENTICAL = {"lira": -2.4349065246231776, "loss": 0.8963, "hinge": -1.25}


@pytest.mark.parametrize("rule", thresholds.RULES)
@pytest.mark.parametrize("score", sorted(IDENTICAL))
def test_identical_scores_call_nobody_a_member(score, rule):
    v = IDENTICAL[score]
    same = np.full(20, v)  # the mean of 20 copies of phi rounds one ulp below phi
    res = summary.summarize(
        same,
        same,
        eval_member=same[:4],
        eval_nonmember=same[:4],
        alpha=0.25,
        rule=rule,
        score=score,
    )
    assert res["threshold"] is None and res["k"] is None
    assert res["power"] == 0.0 and res["calibration_fpr"] == 0.0
    ev = res["evaluation"]
    assert (ev["true_positives"], ev["false_positives"]) == (0, 0)
    assert (res["expected_heldout_fpr"], res["expected_heldout_fpr_upper95"]) == (0.0, 0.0)
    assert res["gaussian_threshold"] is None and res["gaussian_power"] == 0.0
    assert res["decision"].startswith("never member") and "zero spread" in res["decision"]
    assert "too few" not in res["decision"]
    assert any("zero spread" in w for w in res["warnings"])
    # A threshold anywhere in the results is on the scale threshold_scale names: the best
    # calibration cut of the epsilon bound is the common value itself, on the score's scale.
    best = res["epsilon_lower_bound"]["max_over_calibration_thresholds"]
    assert best["value"] == 0.0
    assert best["threshold_scale"] == score and best["threshold"] == v


def test_gaussian_rule_needs_a_spread_of_the_nonmembers():
    # Non-members at one value: a normal fit has no width to put a cut at alpha from.
    res = summary.summarize([0.1, 0.2, 0.3], [0.7, 0.7, 0.7], alpha=0.1, rule="gaussian")
    assert res["threshold"] is None and res["power"] == 0.0
    assert res["expected_heldout_fpr"] == 0.0
    assert "zero spread" in res["decision"]


def test_lira_rule_without_a_spread_says_so_and_keeps_the_score_scale():
    def lira(member):
        return summary.summarize(
            member, [0.9, 1.0, 1.1], eval_member=[0.5], eval_nonmember=[1.0], alpha=0.34,
            rule="lira",
        )  # fmt: skip

    res = lira([0.5, 0.5, 0.5])
    assert res["threshold"] is None and "zero spread" in res["decision"]
    best = res["epsilon_lower_bound"]["max_over_calibration_thresholds"]
    assert best["threshold_scale"] == "loss" and best["threshold"] > 0  # a loss, never -loss
    best = lira([0.4, 0.5, 0.6])["epsilon_lower_bound"]["max_over_calibration_thresholds"]
    assert best["threshold_scale"] == "log likelihood ratio"


def test_one_model_warning_names_the_key_that_adds_models():
    res = summary.summarize([0.1], [2.0], alpha=0.05, more_models="n_models")
    text = " | ".join(res["warnings"])
    assert "n_models" in text and "n_iterations" not in text


@pytest.mark.filterwarnings("error")  # scipy's "Input data has range zero" fails the test
def test_shapiro_wilk_of_confident_models_tiny_losses_is_scipys_own_value():
    # Confident models' losses spread over ~1e-22: scipy's swilk calls a range below 1e-19
    # zero (a UserWarning on stderr, p = 1). W does not change under a shift and a scale.
    rng = np.random.default_rng(3)
    mem, non = 1e-22 * np.exp(rng.normal(size=16)), 1e-3 * np.exp(rng.normal(size=16))
    res = summary.summarize(mem, non, alpha=0.1, rule="gaussian", score="loss")
    want = sps.shapiro((mem - np.median(mem)) / np.ptp(mem)).pvalue
    assert res["gaussian_fits"]["member"]["shapiro_p"] == pytest.approx(want, rel=1e-6)
    assert res["gaussian_fits"]["member"]["shapiro_p"] < 0.5  # not the p = 1 of "range zero"
