"""Tests for the population kind's analysis (and its figures) against naive references."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from jaxmia import plotting
from jaxmia.attack import metrics, scores, thresholds
from jaxmia.attack.summary import Settings
from jaxmia.errors import UserError
from jaxmia.kinds.population import analysis as ap
from jaxmia.kinds.population import figures as plots_population

from reference_stats import naive_loss

# ---------------------------------------------------------------- data


def make_arrays(r=3, n=40, c=5, seed=0, ties=False, used=None):
    """Population arrays whose losses are exactly the cross-entropy of their logits.

    Members' losses are drawn lower than non-members' (an over-fitted model), with
    overlap; ``ties`` rounds them so that many coincide.
    """
    rng = np.random.default_rng(seed)
    perm = np.stack([rng.permutation(10 * n)[: 2 * n] for _ in range(r)]).astype(np.int32)
    out = {"member_rows": perm[:, :n], "nonmember_rows": perm[:, n:]}
    for who, scale in (("member", 0.4), ("nonmember", 1.5)):
        labels = rng.integers(0, c, (r, n)).astype(np.int32)
        logits = rng.normal(0.0, 1.0, (r, n, c))
        # Push the true logit up by a random amount: its loss falls.
        lift = rng.exponential(1.0 / scale, (r, n))
        if ties:
            lift = np.round(lift)
        logits[np.arange(r)[:, None], np.arange(n)[None, :], labels] += lift
        logits = logits.astype(np.float32)
        loss = np.stack(
            [scores.loss_from_logits(logits[i].astype(np.float64), labels[i]) for i in range(r)]
        )
        out[f"{who}_labels"] = labels
        out[f"{who}_logits"] = logits
        out[f"{who}_losses"] = loss.astype(np.float32)
    out["model_used"] = np.ones(r, bool) if used is None else np.asarray(used, bool)
    out["train_accuracy"] = rng.uniform(0.9, 1.0, r).astype(np.float32)
    out["test_accuracy"] = rng.uniform(0.2, 0.4, r).astype(np.float32)
    out["class_names"] = np.array([f"class_{i}" for i in range(c)])
    out["synthetic"] = np.array(True)
    return out


def with_losses(member, nonmember):
    """Arrays of one repetition with the given losses (logits that give them, C = 2)."""
    member = np.asarray(member, np.float64)[None, :]
    nonmember = np.asarray(nonmember, np.float64)[None, :]
    n = member.shape[1]
    out = {
        "member_rows": np.arange(n, dtype=np.int32)[None],
        "nonmember_rows": np.arange(n, 2 * n, dtype=np.int32)[None],
        "model_used": np.ones(1, bool),
        "train_accuracy": np.ones(1, np.float32),
        "test_accuracy": np.ones(1, np.float32),
        "class_names": np.array(["a", "b"]),
        "synthetic": np.array(False),
    }
    for who, loss in (("member", member), ("nonmember", nonmember)):
        # Two classes, label 0, z = (0, d): loss = log(1 + e^d), d = log(e^loss - 1).
        d = np.log(np.expm1(np.maximum(loss, 1e-12)))
        out[f"{who}_logits"] = np.stack([np.zeros_like(d), d], -1).astype(np.float32)
        out[f"{who}_labels"] = np.zeros((1, n), np.int32)
        out[f"{who}_losses"] = loss.astype(np.float32)
    return out


# ---------------------------------------------------------------- naive references


def naive_auc(mem_loss, non_loss):
    """P(member loss < non-member loss), ties 1/2, by counting every pair."""
    total = 0.0
    for m in mem_loss:
        for x in non_loss:
            total += 1.0 if m < x else 0.5 if m == x else 0.0
    return total / (len(mem_loss) * len(non_loss))


def _candidates(a, b):
    return sorted(set(a.tolist()) | set(b.tolist())) + [-math.inf, math.inf]


def naive_balanced_accuracy(mem_loss, non_loss):
    """max over every threshold t of (TPR + 1 - FPR) / 2 for "member iff loss < t"."""
    best = 0.0
    for t in _candidates(mem_loss, non_loss):
        tpr = sum(v < t for v in mem_loss) / len(mem_loss)
        fpr = sum(v < t for v in non_loss) / len(non_loss)
        best = max(best, (tpr + 1 - fpr) / 2)
    return best


def naive_tpr_at_fpr(mem_loss, non_loss, f):
    """The largest TPR of "loss < t" over thresholds with FPR <= f; None if f < 1/n."""
    if f * len(non_loss) < 1 - 1e-9:
        return None
    best = 0.0
    for t in _candidates(mem_loss, non_loss):
        fpr = sum(v < t for v in non_loss) / len(non_loss)
        if fpr <= f:
            best = max(best, sum(v < t for v in mem_loss) / len(mem_loss))
    return best


def naive_average_precision(mem_loss, non_loss):
    """Sum of (recall step) x precision over the thresholds, one threshold at a time."""
    ap_, last_recall = 0.0, 0.0
    for t in _candidates(mem_loss, non_loss)[:-2] + [math.inf]:
        tp = sum(v <= t for v in mem_loss) if t != math.inf else len(mem_loss)
        fp = sum(v <= t for v in non_loss) if t != math.inf else len(non_loss)
        if tp + fp == 0:
            continue
        recall = tp / len(mem_loss)
        ap_ += (recall - last_recall) * tp / (tp + fp)
        last_recall = recall
    return ap_


def naive_yeom(mem_loss, non_loss):
    t = sum(mem_loss) / len(mem_loss)
    tp = sum(1 for v in mem_loss if v < t)
    fp = sum(1 for v in non_loss if v < t)
    return (
        t,
        tp / len(mem_loss),
        fp / len(non_loss),
        (tp + len(non_loss) - fp) / (2 * len(mem_loss)),
    )


# ---------------------------------------------------------------- metrics vs references


@pytest.mark.parametrize("ties", [False, True])
def test_metrics_equal_naive_reference(ties):
    arrays = make_arrays(r=3, n=40, ties=ties, seed=int(ties))
    res = ap.population_results(arrays, Settings(alpha=0.1))
    assert [p["repetition"] for p in res["per_repetition"]] == [0, 1, 2]
    for p in res["per_repetition"]:
        r = p["repetition"]
        # The loss score comes from the logits in float64, not from the saved float32 losses.
        m = naive_loss(arrays["member_logits"][r], arrays["member_labels"][r])
        x = naive_loss(arrays["nonmember_logits"][r], arrays["nonmember_labels"][r])
        assert p["auc"] == pytest.approx(naive_auc(m, x), abs=1e-12)
        assert p["balanced_accuracy"] == pytest.approx(naive_balanced_accuracy(m, x), abs=1e-12)
        assert p["average_precision"] == pytest.approx(naive_average_precision(m, x), abs=1e-12)
        for f in (0.001, 0.01, 0.1):
            assert p["tpr_at_fpr"][f"{f:g}"] == naive_tpr_at_fpr(m, x, f)
        # The alpha rule (empirical): the most powerful threshold with FPR <= alpha.
        a = p["alpha_rule"]
        assert a["fpr"] <= 0.1
        assert a["tpr"] == naive_tpr_at_fpr(m, x, 0.1)
        assert a["tpr"] == np.mean(m < a["threshold"])
        assert a["fpr"] == np.mean(x < a["threshold"])
        assert a["k"] == 4 and a["threshold"] == pytest.approx(np.sort(x)[4], rel=1e-14)
        assert a["expected_heldout_fpr"] == pytest.approx(5 / 41)
        # Yeom: threshold = mean member loss, counted directly.
        t, tpr, fpr, acc = naive_yeom(m.tolist(), x.tolist())
        y = p["yeom"]
        assert y["threshold"] == pytest.approx(t, rel=1e-12)
        assert (y["tpr"], y["fpr"]) == (tpr, fpr)
        assert y["accuracy"] == pytest.approx(acc)
        assert y["advantage"] == pytest.approx(tpr - fpr)
        assert y["decision"] == f"member iff loss < {t:.6g}"
        assert p["member_loss_mean"] == pytest.approx(m.mean())
        assert p["nonmember_loss_mean"] == pytest.approx(x.mean())
        assert p["generalization_gap"] == pytest.approx(
            float(arrays["train_accuracy"][r]) - float(arrays["test_accuracy"][r])
        )
    # n = 40: 0.1% and 1% FPR are below 1/n; 10% is resolvable.
    assert any("TPR at FPR 0.001 not resolvable" in w for w in res["warnings"])
    assert any("TPR at FPR 0.01 not resolvable" in w for w in res["warnings"])
    assert not any("FPR 0.1 " in w for w in res["warnings"])
    assert res["summary"]["tpr_at_fpr"]["0.001"]["mean"] is None
    json.dumps(res, allow_nan=False)  # JSON-ready: plain types, no NaN


@pytest.mark.parametrize("score", ["lira", "hinge"])
def test_logit_scores_come_from_the_logits_and_yeom_stays_on_the_loss(score):
    arrays = make_arrays(r=2, n=30, seed=5)
    res = ap.population_results(arrays, Settings(alpha=0.1, score=score))
    for p in res["per_repetition"]:
        r = p["repetition"]
        sm = scores.compute(
            score, arrays["member_logits"][r].astype(np.float64), arrays["member_labels"][r]
        )
        sn = scores.compute(
            score, arrays["nonmember_logits"][r].astype(np.float64), arrays["nonmember_labels"][r]
        )
        # High = member for these scores: AUC = P(s_member > s_nonmember), i.e. the loss
        # reference on -s.
        assert p["auc"] == pytest.approx(naive_auc(-sm, -sn), abs=1e-12)
        assert p["alpha_rule"]["threshold"] == np.sort(sn)[::-1][3]  # k = floor(0.1 * 30)
        assert p["alpha_rule"]["decision"].startswith(f"member iff {scores.SCORES[score].symbol} >")
        t, tpr, fpr, _ = naive_yeom(
            naive_loss(arrays["member_logits"][r], arrays["member_labels"][r]).tolist(),
            naive_loss(arrays["nonmember_logits"][r], arrays["nonmember_labels"][r]).tolist(),
        )
        assert p["yeom"]["threshold"] == pytest.approx(t)
        assert (p["yeom"]["tpr"], p["yeom"]["fpr"]) == (tpr, fpr)


@pytest.mark.parametrize("rule", ["conformal", "confident", "gaussian", "lira"])
def test_other_threshold_rules_go_through_stats(rule):
    arrays = make_arrays(r=2, n=60, seed=2)
    res = ap.population_results(arrays, Settings(alpha=0.05, threshold_rule=rule))
    for p in res["per_repetition"]:
        r = p["repetition"]
        m = naive_loss(arrays["member_logits"][r], arrays["member_labels"][r])
        x = naive_loss(arrays["nonmember_logits"][r], arrays["nonmember_labels"][r])
        decision, _ = thresholds.choose_threshold(m, x, alpha=0.05, rule=rule, score="loss")
        assert p["alpha_rule"]["decision"] == decision.text()
        assert p["alpha_rule"]["tpr"] == np.mean(decision.predict(m))
        assert p["alpha_rule"]["fpr"] == np.mean(decision.predict(x))
    assert ("member_region" in res["per_repetition"][0]["alpha_rule"]) == (rule == "lira")


# ---------------------------------------------------------------- analytic cases


def test_separated_gives_auc_one_and_identical_gives_half():
    sep = ap.population_results(
        with_losses(np.linspace(0.01, 0.2, 20), np.linspace(1.0, 3.0, 20)), Settings(alpha=0.1)
    )
    p = sep["per_repetition"][0]
    assert p["auc"] == 1.0 and p["balanced_accuracy"] == 1.0
    assert p["average_precision"] == 1.0
    assert p["tpr_at_fpr"]["0.1"] == 1.0
    assert p["alpha_rule"]["tpr"] == 1.0 and p["alpha_rule"]["fpr"] == 0.1
    # Yeom: the mean member loss 0.105 splits the members in half, no non-member below.
    assert p["yeom"]["tpr"] == 0.5 and p["yeom"]["fpr"] == 0.0
    assert p["yeom"]["accuracy"] == 0.75

    same = np.linspace(0.1, 4.0, 20)
    ident = ap.population_results(with_losses(same, same), Settings(alpha=0.1))
    p = ident["per_repetition"][0]
    assert p["auc"] == 0.5 and p["balanced_accuracy"] == 0.5
    assert p["average_precision"] == pytest.approx(naive_average_precision(same, same))
    assert p["yeom"]["tpr"] == p["yeom"]["fpr"] and p["yeom"]["advantage"] == 0.0
    assert p["alpha_rule"]["tpr"] == p["alpha_rule"]["fpr"] == 0.1


def test_summary_is_the_t_interval_of_the_per_repetition_values():
    arrays = make_arrays(r=4, n=30, seed=3)
    res = ap.population_results(arrays, Settings(alpha=0.1, confidence=0.9))
    per = res["per_repetition"]
    by_construction = (("alpha_rule", "fpr"), ("alpha_rule", "expected_heldout_fpr"))
    for path, is_rate in ap.SUMMARY_METRICS:
        values = [ap._get(p, path) for p in per]
        bounds = ap.summary_bounds(path, is_rate, Settings(alpha=0.1))
        want = metrics.t_interval(values, 0.9, bounds=bounds)
        got = ap._get(res["summary"], path)
        if path in by_construction:
            assert {k: got[k] for k in ("mean", "n")} == {k: want[k] for k in ("mean", "n")}
        else:
            assert got == want
    auc = res["summary"]["auc"]
    assert auc["mean"] == pytest.approx(np.mean([p["auc"] for p in per]))
    assert auc["ci"][0] < auc["mean"] < auc["ci"][1]


def test_in_sample_fpr_is_said_to_be_so_not_given_a_zero_width_interval():
    # The alpha rule's FPR on the non-members it was chosen on is k/n by construction
    # (3/30 here in every repetition): a t-interval over the repetitions is [0.1, 0.1].
    from jaxmia.kinds import format_summary

    arrays = make_arrays(r=4, n=30, seed=3)
    res = ap.population_results(arrays, Settings(alpha=0.1))
    fpr = res["summary"]["alpha_rule"]["fpr"]
    assert fpr["mean"] == 0.1 and fpr["ci"] is None
    assert fpr["note"].startswith("in sample, by construction")
    law = res["summary"]["alpha_rule"]["expected_heldout_fpr"]
    assert law["mean"] == pytest.approx(4 / 31) and law["ci"] is None
    assert "Beta(4, 27)" in law["note"]
    text = format_summary({**res, "dataset": "synthetic"})
    assert "FPR 0.1000 (in sample, by construction)" in text
    assert "[0.1000, 0.1000]" not in text
    assert "on fresh non-members 0.1290" in text


# ---------------------------------------------------------------- models left out, R = 1


def test_unused_models_are_left_out_of_everything():
    arrays = make_arrays(r=4, n=30, seed=4, used=[True, False, True, False])
    arrays["member_losses"][1, 3] = np.nan  # what made it unused
    arrays["member_logits"][1, 3] = np.nan
    arrays["train_accuracy"][1] = 0.0
    arrays["nonmember_losses"][3, 0] = np.inf
    # A model flagged used whose outputs are not finite: a damaged file, refused.
    flagged = dict(arrays, model_used=np.array([True, False, True, True]))
    with pytest.raises(ValueError, match="nonmember_losses has a non-finite value at \\(3,\\)"):
        ap.population_results(flagged, Settings(alpha=0.1))
    res = ap.population_results(arrays, Settings(alpha=0.1))
    assert res["repetitions"] == 4 and res["repetitions_used"] == 2
    assert res["repetitions_left_out"] == [1, 3]
    assert [p["repetition"] for p in res["per_repetition"]] == [0, 2]
    assert ap.left_out(arrays) == ["repetition 1, target model", "repetition 3, target model"]
    assert any(w.startswith("repetitions 1, 3 left out") for w in res["warnings"])
    # The summary equals the one of the two used models alone.
    kept = {
        k: (v[[0, 2]] if k not in ("class_names", "synthetic") else v) for k, v in arrays.items()
    }
    alone = ap.population_results(kept, Settings(alpha=0.1))
    assert res["summary"] == alone["summary"]
    assert res["summary"]["train_accuracy"]["mean"] == pytest.approx(
        float(np.mean(arrays["train_accuracy"][[0, 2]]))
    )

    arrays["model_used"][:] = False
    with pytest.raises(UserError, match="nothing to analyse: no target model has finite outputs"):
        ap.population_results(arrays, Settings(alpha=0.1))


def test_one_repetition_gives_null_intervals_with_a_warning():
    res = ap.population_results(make_arrays(r=1, n=30), Settings(alpha=0.1))
    assert res["repetitions_used"] == 1
    for path, _ in ap.SUMMARY_METRICS:
        entry = ap._get(res["summary"], path)
        assert entry["ci"] is None and entry["std"] is None
        assert entry["note"]
    assert res["summary"]["auc"]["mean"] == res["per_repetition"][0]["auc"]
    assert any(w.startswith("one repetition") for w in res["warnings"])


def test_alpha_below_one_over_n_is_said():
    res = ap.population_results(make_arrays(r=2, n=10), Settings(alpha=0.05))
    assert any("floor(alpha*n) = 0" in w for w in res["warnings"])
    # ... and the threshold is the smallest non-member loss, with FPR 0.
    assert all(p["alpha_rule"]["fpr"] == 0.0 for p in res["per_repetition"])


def test_empirical_rule_says_its_heldout_fpr_exceeds_alpha():
    # n = 20 non-members, alpha = 0.1: k = 2, and a fresh non-member is called a member
    # with probability (k+1)/(n+1) = 1/7, as in the single-target summary.
    res = ap.population_results(make_arrays(r=2, n=20), Settings(alpha=0.1))
    lines = [w for w in res["warnings"] if w.startswith("empirical:")]
    assert lines == [
        "empirical: expected FPR on fresh non-members is (k+1)/(n+1) = 0.143 > alpha=0.1; "
        "threshold_rule conformal or confident controls it (every repetition)"
    ]
    assert all(p["alpha_rule"]["expected_heldout_fpr"] == 3 / 21 for p in res["per_repetition"])
    conformal = ap.population_results(
        make_arrays(r=2, n=20), Settings(alpha=0.1, threshold_rule="conformal")
    )
    assert not any(w.startswith("empirical:") for w in conformal["warnings"])


def test_rule_warnings_are_said_once_with_their_repetitions():
    res = ap.population_results(
        make_arrays(r=3, n=10), Settings(alpha=0.05, threshold_rule="conformal")
    )
    lines = [w for w in res["warnings"] if w.startswith("conformal")]
    assert len(lines) == 1 and lines[0].endswith("(every repetition)")
    assert all(p["alpha_rule"]["threshold"] is None for p in res["per_repetition"])
    assert res["summary"]["alpha_rule"]["threshold"]["mean"] is None
    assert res["summary"]["alpha_rule"]["tpr"]["mean"] == 0.0


# ---------------------------------------------------------------- bad input


def test_malformed_arrays_are_refused():
    arrays = make_arrays(r=2, n=10)
    bad = dict(arrays, nonmember_rows=arrays["nonmember_rows"].copy())
    bad["nonmember_rows"][1, 0] = bad["member_rows"][1, 5]
    with pytest.raises(ValueError, match="repetition 1"):
        ap.population_results(bad, Settings(alpha=0.1))
    with pytest.raises(ValueError, match="member_logits must have shape"):
        ap.population_results(
            dict(arrays, member_logits=arrays["member_logits"][:, :, :3]), Settings(alpha=0.1)
        )
    with pytest.raises(ValueError, match="lack model_used"):
        ap.population_results(
            {k: v for k, v in arrays.items() if k != "model_used"}, Settings(alpha=0.1)
        )
    with pytest.raises(ValueError, match="alpha"):
        ap.population_results(arrays, Settings(alpha=1.5))
    with pytest.raises(ValueError, match="score"):
        ap.population_results(arrays, Settings(alpha=0.1, score="entropy"))


# ---------------------------------------------------------------- figures


def test_figures_are_written_and_marked_synthetic(tmp_path):
    arrays = make_arrays(r=3, n=40, seed=6)
    res = ap.population_results(arrays, Settings(alpha=0.1, score="lira"))
    paths = plots_population.write_figures(tmp_path, arrays, res, suffix=" [SYNTHETIC DATA]")
    assert [p.name for p in paths] == list(plots_population.FIGURES)
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _curves(arrays, res):
    out = []
    for p in res["per_repetition"]:
        m, x = ap.population_scores(arrays, "loss", p["repetition"])
        out.append((-m, -x))
    return out


def test_roc_figure_has_every_curve_and_axes_from_one_over_n():
    arrays = make_arrays(r=4, n=25, seed=7, used=[True, True, False, True])
    arrays["member_losses"][2] = np.nan
    res = ap.population_results(arrays, Settings(alpha=0.1))
    fig = plots_population.roc_figure(res, _curves(arrays, res), title_suffix=" [SYNTHETIC DATA]")
    ax = fig.axes[0]
    curves = [ln for ln in ax.lines if ln.get_color() == "tab:blue"]
    assert len(curves) == 3  # the used models
    zero = (1 / 25) * plotting.ZERO_SHARE  # rates of 0 have their own place below 1/n
    assert ax.get_xlim() == pytest.approx((zero, 1)) and ax.get_ylim() == pytest.approx((zero, 1))
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(f"AUC mean {res['summary']['auc']['mean']:.3f}" in t for t in legend)
    assert any(t == "chance" for t in legend)
    assert any("(1 more left out: non-finite losses)" in t for t in legend)
    assert "[SYNTHETIC DATA]" in ax.get_title()


def test_pr_figure_values_and_prevalence_note():
    arrays = make_arrays(r=2, n=25, seed=8)
    res = ap.population_results(arrays, Settings(alpha=0.1))
    curves = _curves(arrays, res)
    ax = plots_population.pr_figure(res, curves).axes[0]
    from matplotlib.cbook import STEP_LOOKUP_MAP

    # The drawn staircase's area is each model's average precision (it was drawn one
    # step late: 0.688 against 0.819 in repetition 0 of a population run).
    for line, rep in zip(ax.lines[:2], res["per_repetition"], strict=True):
        x, y = STEP_LOOKUP_MAP[line.get_drawstyle()](line.get_xdata(), line.get_ydata())
        assert np.trapezoid(y, x) == pytest.approx(rep["average_precision"], abs=1e-12)
        assert line.get_xdata()[0] == 0.0
    assert "prevalence is ½ by construction" in ax.get_title()


def test_loss_panel_draws_nothing_below_zero():
    arrays = make_arrays(r=2, n=40, seed=9)
    res = ap.population_results(arrays, Settings(alpha=0.1))
    rep = res["per_repetition"][0]
    m, x = ap.population_scores(arrays, "loss", 0)
    fig = plots_population.histograms_figure(res, rep, m, x, title_suffix=" [SYNTHETIC DATA]")
    lin = fig.axes[0]
    assert lin.get_xlim()[0] == 0.0
    for line in lin.lines:
        assert np.min(line.get_xdata()) >= 0.0
    for patch in lin.patches:
        assert patch.get_x() >= -1e-12  # (matplotlib places the bars to ~1e-18)
    # Both thresholds are drawn, labelled with their rules; the title says which model.
    labels = [ln.get_label() for ln in lin.lines]
    assert any(lbl.startswith("Yeom: " + rep["yeom"]["decision"]) for lbl in labels)
    assert any(rep["alpha_rule"]["decision"] in lbl for lbl in labels)
    title = fig.texts[0].get_text()
    assert "target model 0" in title and "not pooled" in title and "[SYNTHETIC DATA]" in title


def test_score_panel_labels_a_new_score_from_its_record(monkeypatch):
    # A score added later is one record in attack.scores.SCORES: the population
    # figure takes its axis label from there (this once raised KeyError for any
    # score missing from a table of labels inside the figure module).
    gap = scores.Score("top_two_gap", scores.hinge_from_logits, True, "gap", "top-two gap")
    monkeypatch.setitem(scores.SCORES, gap.name, gap)
    arrays = make_arrays(r=2, n=40, seed=9)
    res = ap.population_results(arrays, Settings(alpha=0.1, score="hinge"))
    rep = res["per_repetition"][0]
    m, x = ap.population_scores(arrays, "loss", 0)
    chosen = ap.population_scores(arrays, "hinge", 0)
    fig = plots_population.histograms_figure({**res, "score": gap.name}, rep, m, x, chosen)
    panel = fig.axes[2]
    assert panel.get_xlabel() == "top-two gap"
    assert panel.get_title().startswith("the attack's score: top_two_gap")
    # The scores it knows keep their labels.
    fig = plots_population.histograms_figure(res, rep, m, x, chosen)
    assert fig.axes[2].get_xlabel() == r"hinge $= z_y - \max_{y' \neq y} z_{y'}$"


def test_module_imports_no_jax():
    code = (
        "import sys, jaxmia.kinds.population.analysis, jaxmia.kinds.population.figures; "
        "sys.exit(1 if any(m == 'jax' or m.startswith('jax.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("rule", ["empirical", "conformal", "confident", "gaussian", "lira"])
@pytest.mark.parametrize("score", ["loss", "lira", "hinge"])
def test_identical_scores_call_nobody_a_member(score, rule):
    # Every point of every model has the same logits and label: neither the alpha rule
    # nor Yeom's (whose mean of equal losses can round above them) calls a member.
    arrays = make_arrays(r=2, n=60, seed=3)
    for who in ("member", "nonmember"):
        arrays[f"{who}_logits"][:] = arrays["member_logits"][0, 0]
        arrays[f"{who}_labels"][:] = arrays["member_labels"][0, 0]
    res = ap.population_results(arrays, Settings(alpha=0.1, score=score, threshold_rule=rule))
    for p in res["per_repetition"]:
        assert p["alpha_rule"]["threshold"] is None
        assert p["alpha_rule"]["tpr"] == p["alpha_rule"]["fpr"] == 0.0
        assert p["yeom"]["tpr"] == p["yeom"]["fpr"] == 0.0
        assert p["auc"] == 0.5
    assert any("zero spread" in w for w in res["warnings"])


def test_yeom_rule_on_equal_losses_calls_nobody():
    # np.mean of 68 copies of this loss rounds one ulp above it: a cut there would call
    # every point a member.
    v = 0.9764821873565186
    same = np.full(68, v)
    assert np.mean(same) > v
    y = ap.yeom_rule(same, same)
    assert y["threshold"] == v and y["tpr"] == y["fpr"] == 0.0


def test_loss_valued_intervals_stay_at_or_above_zero():
    # Members with losses near 0: a t-interval of the Yeom threshold (a mean loss) read
    # [-0.0235, 0.0649] on population_demo.yaml; a loss is never below 0.
    arrays = make_arrays(r=3, n=30, seed=11)
    for r, lift in enumerate((30.0, 12.0, 31.0)):  # confident members: losses near 0
        arrays["member_logits"][r, np.arange(30), arrays["member_labels"][r]] += lift
    res = ap.population_results(arrays, Settings(alpha=0.1))
    for path in (("yeom", "threshold"), ("member_loss_mean",)):
        entry = ap._get(res["summary"], path)
        raw = metrics.t_interval([ap._get(p, path) for p in res["per_repetition"]], 0.95)
        assert raw["ci"][0] < 0.0  # what the interval said before
        assert entry["ci"] == [0.0, raw["ci"][1]], path
    lira = ap.population_results(arrays, Settings(alpha=0.1, score="lira"))
    assert ap.summary_bounds(("alpha_rule", "threshold"), False, Settings(0.1, "lira")) is None
    assert lira["summary"]["alpha_rule"]["threshold"]["ci"] is not None
