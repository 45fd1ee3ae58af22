"""The many-targets analysis against statistics computed by hand from the saved matrix."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jaxmia.attack import bounds, metrics, scores, summary
from jaxmia.attack.summary import Settings
from jaxmia.kinds.targets import analysis as at
from jaxmia.kinds.targets import figures as plots_targets

C = 4


def balanced(rng, n_models, n_targets):
    """bool[n_models, n_targets], each column IN for exactly half of the models."""
    m = np.zeros((n_models, n_targets), bool)
    for t in range(n_targets):
        m[rng.permutation(n_models)[: n_models // 2], t] = True
    return m


def logits_for(rng, membership, labels, leak):
    n, t = membership.shape
    z = rng.normal(0.0, 1.0, (n, t, C))
    z[:, np.arange(t), labels] += 1.0 + leak[None, :] * membership + rng.normal(0, 1, (n, t))
    return z.astype(np.float32)


def make_arrays(seed=0, n_targets=6, n_models=12, n_eval=8):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n_targets).astype(np.int32)
    leak = np.linspace(0.0, 4.0, n_targets)
    membership = balanced(rng, n_models, n_targets)
    eval_membership = balanced(rng, n_eval, n_targets)
    logits = logits_for(rng, membership, labels, leak)
    eval_logits = logits_for(rng, eval_membership, labels, leak)

    def loss(z):
        n, t, _ = z.shape
        flat = scores.loss_from_logits(z.reshape(n * t, C), np.tile(labels, n))
        return flat.reshape(n, t).astype(np.float32)

    return {
        "targets": (100 + 7 * np.arange(n_targets)).astype(np.int32),
        "target_labels": labels,
        "target_images": rng.integers(0, 256, (n_targets, 32, 32, 3)).astype(np.uint8),
        "membership": membership,
        "losses": loss(logits),
        "logits": logits,
        "model_used": np.ones(n_models, bool),
        "eval_membership": eval_membership,
        "eval_losses": loss(eval_logits),
        "eval_logits": eval_logits,
        "eval_model_used": np.ones(n_eval, bool),
        "train_accuracy": rng.uniform(0.9, 1.0, n_models).astype(np.float32),
        "test_accuracy": rng.uniform(0.2, 0.3, n_models).astype(np.float32),
        "class_names": np.array(["apple", "bee", "cat", "dog"]),
        "synthetic": np.array(True),
    }


def by_hand(arrays, t, score):
    """Native scores of target t's IN, OUT, eval IN, eval OUT used models, picked from the
    matrix one model at a time."""
    label = int(arrays["target_labels"][t])
    out = {"member": [], "nonmember": [], "eval_member": [], "eval_nonmember": []}
    for prefix in ("", "eval_"):
        used = arrays[f"{prefix}model_used"]
        for m in range(len(used)):
            if not used[m]:
                continue
            # Every score, the loss included, from the logits in float64.
            z = np.asarray(arrays[f"{prefix}logits"][m, t], np.float64)
            v = float(scores.compute(score, z[None, :], label)[0])
            side = "member" if arrays[f"{prefix}membership"][m, t] else "nonmember"
            out[prefix + side].append(v)
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize(
    "score,rule",
    [
        ("loss", "empirical"),
        ("lira", "lira"),
        ("hinge", "gaussian"),
        ("lira", "conformal"),
        ("loss", "confident"),  # 6 OUT models cannot support it: no threshold, no member
        ("loss", "lira"),
    ],
)
def test_each_target_equals_attack_summary_of_its_column(score, rule):
    arrays = make_arrays()
    settings = Settings(alpha=0.2, score=score, threshold_rule=rule)
    results, rows = at.targets_results(arrays, settings)
    assert len(rows) == 6
    for t, row in enumerate(rows):
        s = by_hand(arrays, t, score)
        ref = summary.summarize(
            s["member"],
            s["nonmember"],
            eval_member=s["eval_member"],
            eval_nonmember=s["eval_nonmember"],
            alpha=0.2,
            rule=rule,
            score=score,
            items=False,
        )
        assert row["index"] == 100 + 7 * t
        assert row["label"] == str(arrays["class_names"][arrays["target_labels"][t]])
        assert (row["n_member"], row["n_nonmember"]) == (6, 6)
        for key in (
            "auc",
            "balanced_accuracy",
            "power",
            "calibration_fpr",
            "threshold",
            "k",
            "expected_heldout_fpr",
            "expected_heldout_fpr_upper95",
            "gaussian_threshold",
            "gaussian_power",
        ):
            assert row[key] == ref[key], key
        for f, v in ref["tpr_at_fpr"].items():
            assert row[f"tpr_at_fpr_{f}"] == v
        loss = by_hand(arrays, t, "loss")
        assert row["member_loss_mean"] == pytest.approx(loss["member"].mean(), abs=1e-12)
        assert row["nonmember_loss_mean"] == pytest.approx(loss["nonmember"].mean(), abs=1e-12)
        if score != "loss":
            assert row["member_score_mean"] == ref["member_score_mean"]
            assert row["nonmember_score_mean"] == ref["nonmember_score_mean"]
        ev = ref["evaluation"]
        assert row["eval_n_member"] == ev["n_member"] == 4
        assert row["eval_true_positives"] == ev["true_positives"]
        assert row["eval_false_negatives"] == ev["false_negatives"]
        assert row["eval_false_positives"] == ev["false_positives"]
        assert row["eval_true_negatives"] == ev["true_negatives"]
        # The closer look at one target is the same summary.
        one = at.target_summary(arrays, settings, t, items=False)
        assert one["auc"] == ref["auc"] and one["evaluation"] == ev
    assert results["n_targets"] == 6 and results["n_models_used"] == 12
    assert results["inclusion"] == 0.5
    assert results["score"] == score and results["threshold_rule"] == rule


def test_summary_over_targets():
    arrays = make_arrays(n_targets=40, n_models=20, n_eval=4)
    results, rows = at.targets_results(arrays, Settings(alpha=0.2))
    auc = np.array([r["auc"] for r in rows])
    power = np.array([r["power"] for r in rows])
    assert results["auc_median"] == np.median(auc)
    assert [results["auc_q1"], results["auc_q3"]] == list(np.quantile(auc, [0.25, 0.75]))
    assert results["auc_mean"] == pytest.approx(auc.mean(), abs=1e-15)
    assert results["n_power_at_least_half"] == int((power >= 0.5).sum())
    assert results["share_power_at_least_half"] == (power >= 0.5).mean()
    most, least = results["most_vulnerable"], results["least_vulnerable"]
    assert len(most) == len(least) == 16
    assert [m["auc"] for m in most] == sorted(auc, reverse=True)[:16]
    assert [m["auc"] for m in least] == sorted(auc)[:16]
    assert not {m["index"] for m in most} & {m["index"] for m in least}
    top = int(np.argmax(auc))  # ties broken by power, then by position
    assert most[0]["auc"] == rows[top]["auc"]
    mean_01 = np.mean([r["tpr_at_fpr_0.1"] for r in rows])  # 10 OUT models: k = 1
    assert results["tpr_at_fpr_mean"]["0.1"] == pytest.approx(mean_01, abs=1e-15)
    assert results["tpr_at_fpr_mean"]["0.01"] is None
    # Per-target warnings are said once, with a count.
    assert any(
        w.startswith("every target") and "TPR at FPR 0.001" in w for w in results["warnings"]
    )
    assert results["train_accuracy"] == pytest.approx(arrays["train_accuracy"].mean(), abs=1e-7)
    json.dumps([results, rows], allow_nan=False)  # JSON-ready as they are


def test_pooled_evaluation_equals_a_naive_loop_with_the_model_as_the_unit():
    arrays = make_arrays(seed=3, n_targets=9, n_models=16, n_eval=10)
    settings = Settings(alpha=0.25, score="lira", threshold_rule="empirical", confidence=0.9)
    results, _ = at.targets_results(arrays, settings)
    counts = np.zeros((10, 4), np.int64)  # per evaluation model: TP, FN, FP, TN
    for t in range(9):
        label = int(arrays["target_labels"][t])
        phi = scores.lira_from_logits(arrays["logits"][:, t].astype(np.float64), label)
        member = arrays["membership"][:, t]
        nonmember_phi = np.sort(phi[~member])[::-1]
        k = math.floor(0.25 * nonmember_phi.size)  # 8 OUT models: k = 2
        cut = nonmember_phi[k]  # member iff phi > the (k+1)-th largest OUT phi
        for e in range(10):
            z = arrays["eval_logits"][e, t].astype(np.float64)
            called = scores.lira_from_logits(z[None, :], label)[0] > cut
            if arrays["eval_membership"][e, t]:
                counts[e] += [called, not called, 0, 0]
            else:
                counts[e] += [0, 0, called, not called]
    tp, fn, fp, tn = counts.sum(0)
    ev = results["evaluation"]
    assert (ev["true_positives"], ev["false_negatives"]) == (tp, fn)
    assert (ev["false_positives"], ev["true_negatives"]) == (fp, tn)
    assert ev["n_member"] == ev["n_nonmember"] == 45 and ev["n_models"] == 10
    assert ev["tpr"] == tp / 45 and ev["fpr"] == fp / 45
    # Intervals and epsilon with the evaluation model as the unit (one model's decisions
    # on different targets are not independent trials).
    n_in, n_out = counts[:, 0] + counts[:, 1], counts[:, 2] + counts[:, 3]
    assert ev["tpr_ci"] == list(metrics.rate_over_models(counts[:, 0], n_in, 0.9)[1:])
    assert ev["fpr_ci"] == list(metrics.rate_over_models(counts[:, 2], n_out, 0.9)[1:])
    fnr_upper = metrics.rate_over_models(counts[:, 1], n_in, 0.9)[2]
    eps = results["epsilon_lower_bound"]
    assert eps["fpr_upper"] == ev["fpr_ci"][1] and eps["fnr_upper"] == fnr_upper
    assert eps["value"] == float(bounds.epsilon_from_upper_bounds(ev["fpr_ci"][1], fnr_upper))
    assert "evaluation model as the unit" in eps["method"]
    assert "evaluation model as the unit" in ev["method"]
    # k = 2 of 8 for every target: the expected held-out FPR is (k+1)/(l+1) = 1/3.
    assert ev["expected_fpr"] == pytest.approx(3 / 9)
    # Fewer than 16 evaluation models: said.
    assert any("10 evaluation models" in w and "16" in w for w in results["warnings"])


def test_unused_models_are_left_out():
    arrays = make_arrays(seed=5, n_targets=5, n_models=12, n_eval=6)
    dropped = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in arrays.items()}
    dropped["losses"][4] = np.nan
    dropped["logits"][4] = np.nan
    dropped["model_used"][4] = False
    dropped["eval_losses"][1] = np.inf
    dropped["eval_model_used"][1] = False
    keep, keep_eval = np.arange(12) != 4, np.arange(6) != 1
    removed = dict(arrays)
    for key in ("membership", "losses", "logits", "model_used", "train_accuracy"):
        removed[key] = arrays[key][keep]
    removed["test_accuracy"] = arrays["test_accuracy"][keep]
    for key in ("eval_membership", "eval_losses", "eval_logits", "eval_model_used"):
        removed[key] = arrays[key][keep_eval]
    for score in ("loss", "hinge"):
        settings = Settings(alpha=0.2, score=score)
        res_a, rows_a = at.targets_results(dropped, settings)
        res_b, rows_b = at.targets_results(removed, settings)
        assert rows_a == rows_b
        assert res_a["evaluation"] == res_b["evaluation"]
        assert res_a["n_models"] == 12 and res_a["n_models_used"] == 11
        assert res_a["eval_models"] == 6 and res_a["eval_models_used"] == 5
        assert res_a["auc_median"] == res_b["auc_median"]
        assert "1 of 12 calibration models left out: non-finite losses" in res_a["warnings"]
        assert "1 of 6 evaluation models left out: non-finite losses" in res_a["warnings"]
        assert {r["n_member"] + r["n_nonmember"] for r in rows_a} == {11}


def analytic_arrays(member_losses, nonmember_losses):
    """One target (label 0, C = 2) whose losses are given; logits to match: z = (0, -v')
    with loss log(1 + e^-v') = v, so v' = -log(e^v - 1)."""
    v = np.concatenate([member_losses, nonmember_losses]).astype(np.float64)
    z = np.zeros((v.size, 1, 2))
    z[:, 0, 1] = np.log(np.expm1(v))
    return {
        "targets": np.array([7], np.int32),
        "target_labels": np.array([0], np.int32),
        "membership": np.array([True] * len(member_losses) + [False] * len(nonmember_losses))[
            :, None
        ],
        "losses": v[:, None].astype(np.float32),
        "logits": z.astype(np.float32),
        "model_used": np.ones(v.size, bool),
        "class_names": np.array(["zero", "one"]),
    }


def test_perfectly_separated_and_identical_targets():
    sep = analytic_arrays([0.01, 0.02, 0.03, 0.04], [1.0, 2.0, 3.0, 4.0])
    results, rows = at.targets_results(sep, Settings(alpha=0.25))
    row = rows[0]
    assert row["auc"] == 1.0 and row["power"] == 1.0 and row["balanced_accuracy"] == 1.0
    assert row["k"] == 1 and row["threshold"] == pytest.approx(2.0, rel=1e-6)  # 2nd-lowest OUT
    assert row["calibration_fpr"] == 0.25
    assert results["n_power_at_least_half"] == 1 and results["evaluation"] is None
    assert any("no evaluation models" in w for w in results["warnings"])

    same = analytic_arrays([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])
    for score in ("loss", "lira", "hinge"):
        _, rows = at.targets_results(same, Settings(alpha=0.25, score=score))
        assert rows[0]["auc"] == 0.5, score
        assert rows[0]["power"] == 0.25 and rows[0]["calibration_fpr"] == 0.25


def test_a_target_without_out_models_has_no_statistics():
    arrays = make_arrays(seed=2, n_targets=4, n_models=8, n_eval=4)
    arrays["membership"][:, 2] = True
    results, rows = at.targets_results(arrays, Settings(alpha=0.2))
    assert rows[2]["auc"] is None and rows[2]["n_nonmember"] == 0
    assert results["n_targets_with_statistics"] == 3
    assert "1 of 4 targets have no IN or no OUT model" in " ".join(results["warnings"])
    # Its evaluation models are not pooled: the other three targets' 2 IN + 2 OUT each.
    assert results["evaluation"]["n_decisions"] == 12


def test_csv_round_trips(tmp_path):
    arrays = make_arrays(n_targets=5)
    arrays["class_names"] = np.array(['ap,ple "x"', "bee", "cat", "10"])
    arrays["target_labels"][:] = [0, 3, 1, 2, 0]
    arrays["membership"][:, 4] = False  # a row of empty cells
    _, rows = at.targets_results(arrays, Settings(alpha=0.2, score="lira"))
    path = at.write_targets_csv(tmp_path / at.CSV_FILE, rows)
    back = at.read_targets_csv(path)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    assert back == [{c: r.get(c) for c in columns} for r in rows]
    header = path.read_text().splitlines()[0].split(",")
    assert header[:8] == [
        "index",
        "label",
        "n_member",
        "n_nonmember",
        "auc",
        "auc_ci_low",
        "auc_ci_high",
        "balanced_accuracy",
    ]
    assert "power" in header and "member_loss_mean" in header and "nonmember_loss_mean" in header
    assert back[1]["label"] == "10" and back[0]["label"] == 'ap,ple "x"'


def test_figures_are_written(tmp_path):
    arrays = make_arrays(n_targets=20, n_models=10, n_eval=4)
    results, rows = at.targets_results(arrays, Settings(alpha=0.2))
    paths = plots_targets.write_figures(
        tmp_path, arrays, results, rows=rows, suffix=" [SYNTHETIC DATA]"
    )
    # Without the attacks' drawing (tests/test_targets_attacks.py draws those), the two
    # per-target figures.
    assert [p.name for p in paths] == [plots_targets.VULNERABILITY_FILE, plots_targets.ROC_FILE]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_pooled_roc_own_thresholds_sit_at_their_expected_heldout_fpr():
    # Each target's own cut is drawn at its expected held-out FPR (k+1)/(l+1), not at its
    # calibration FPR k/l: at FPR f the curve is the mean power of the cuts whose held-out
    # FPR is at most f, the conformal rule's at alpha = f.
    arrays = make_arrays(n_targets=7, n_models=20, n_eval=0)
    roc = at.pooled_roc(arrays, "loss")
    for f in (0.1, 0.2, 0.35):
        _, rows = at.targets_results(arrays, Settings(alpha=f, threshold_rule="conformal"))
        i = np.searchsorted(roc["fpr"], f, side="right") - 1
        assert roc["fpr"][i] <= f
        want = np.mean([r["power"] for r in rows])
        assert roc["own_tpr"][i] == pytest.approx(want, abs=1e-12), f
    # 10 OUT models: the smallest held-out FPR is 1/11; below it no cut exists.
    assert roc["own_tpr"][roc["fpr"] < 1 / 11].max(initial=0.0) == 0.0
    assert roc["own_tpr"][-1] == 1.0 and roc["min_nonmember"] == 10


def test_bad_arrays_are_refused():
    arrays = make_arrays()
    arrays["losses"] = arrays["losses"][:, :3]
    with pytest.raises(ValueError, match="losses must have shape"):
        at.targets_results(arrays, Settings(alpha=0.2))


def test_reads_the_saved_npz(tmp_path):
    arrays = make_arrays()
    np.savez(tmp_path / "targets.npz", **arrays)
    with np.load(tmp_path / "targets.npz") as saved:
        assert at.targets_results(saved, Settings(alpha=0.2)) == at.targets_results(
            arrays, Settings(alpha=0.2)
        )
    arrays["eval_membership"] = arrays["eval_membership"].T.copy()
    with pytest.raises(ValueError, match="eval_membership must have shape"):
        at.targets_results(arrays, Settings(alpha=0.2))


def test_scores_from_logits_in_steps_equal_one_step(monkeypatch):
    arrays = make_arrays(n_targets=5, n_models=12)
    arrays["model_used"][[1, 6]] = False
    whole = at.target_scores(arrays, "lira")
    monkeypatch.setattr(scores, "_LOGITS_PER_STEP", 7 * C)  # 7 outputs at a time, across models
    stepped = at.target_scores(arrays, "lira")
    np.testing.assert_array_equal(stepped["calibration"], whole["calibration"])
    label = arrays["target_labels"][3]
    expect = scores.lira_from_logits(arrays["logits"][arrays["model_used"], 3], label)
    np.testing.assert_array_equal(whole["calibration"][:, 3], expect)


@pytest.mark.parametrize("rule", ["empirical", "conformal", "confident", "gaussian", "lira"])
@pytest.mark.parametrize("score", ["loss", "lira", "hinge"])
def test_identical_models_call_nobody_a_member(score, rule):
    # Every model gave every target the same logits: no rule may call anyone a member.
    arrays = make_arrays(n_targets=3, n_models=20, n_eval=4)
    for key in ("logits", "eval_logits"):
        arrays[key][:] = arrays[key][:1]
    results, rows = at.targets_results(
        arrays, Settings(alpha=0.25, score=score, threshold_rule=rule)
    )
    for row in rows:
        assert row["threshold"] is None and row["power"] == row["calibration_fpr"] == 0.0
        assert row["eval_true_positives"] == row["eval_false_positives"] == 0
        assert row["gaussian_threshold"] is None and row["gaussian_power"] == 0.0
    ev = results["evaluation"]
    assert ev["true_positives"] == ev["false_positives"] == 0
    assert any("zero spread" in w for w in results["warnings"])
    assert not any("n_iterations" in w for w in results["warnings"])


def test_every_target_auc_comes_with_its_interval(tmp_path):
    # 8 IN / 8 OUT models: a per-target AUC is uncertain by about 0.11; targets.csv, the
    # lists of the most and least vulnerable and the figure all show its interval.
    arrays = make_arrays(n_targets=40, n_models=16, n_eval=4)
    results, rows = at.targets_results(arrays, Settings(alpha=0.25, confidence=0.9))
    auc = np.array([r["auc"] for r in rows])
    lo, hi = metrics.auc_interval(
        auc, [r["n_member"] for r in rows], [r["n_nonmember"] for r in rows], 0.9
    )
    assert [r["auc_ci_low"] for r in rows] == lo.tolist()
    assert [r["auc_ci_high"] for r in rows] == hi.tolist()
    assert list(rows[0])[list(rows[0]).index("auc") + 1 : list(rows[0]).index("auc") + 3] == [
        "auc_ci_low",
        "auc_ci_high",
    ]
    by_index = {r["index"]: r for r in rows}
    for entry in results["most_vulnerable"] + results["least_vulnerable"]:
        row = by_index[entry["index"]]
        assert entry["auc_ci"] == [row["auc_ci_low"], row["auc_ci_high"]]
    assert "binomial" in results["auc_interval_method"]
    # The figure: one bar per target, ranked by AUC, spanning its interval.
    fig = plots_targets.vulnerability_figure(rows, arrays["target_images"], results)
    bars = [c for ax in fig.axes for c in ax.collections if c.get_label() == "auc_intervals"]
    assert len(bars) == 1
    segments = bars[0].get_segments()
    assert len(segments) == 40
    order = sorted(range(40), key=lambda i: -auc[i])
    spans = sorted((round(s[0][1], 12), round(s[1][1], 12)) for s in segments)
    assert spans == sorted((round(lo[i], 12), round(hi[i], 12)) for i in order)
    captions = [t.get_text() for ax in fig.axes for t in [ax.title] if "AUC" in t.get_text()]
    assert any("[" in c and "]" in c for c in captions)
