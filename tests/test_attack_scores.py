"""Tests for jaxmia.attack.scores: the scores against a naive softmax, the records, orientation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxmia.attack import scores

# ---------------------------------------------------------------- scores from logits


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
    got = {name: scores.compute(name, z, 3) for name in scores.SCORES}
    want = naive_scores(z, 3)
    for name in scores.SCORES:
        assert got[name].dtype == np.float64
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)
    # Per-row labels too.
    y = rng.integers(0, 10, 50)
    np.testing.assert_allclose(
        scores.compute("loss", z, y),
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


# ---------------------------------------------------------------- orientation and records


def test_orientation_and_decision_text():
    high = {name: record.high_is_member for name, record in scores.SCORES.items()}
    assert high == {"loss": False, "lira": True, "hinge": True}
    np.testing.assert_array_equal(scores.to_attack([1.0, 2.0], "loss"), [-1.0, -2.0])
    np.testing.assert_array_equal(scores.to_attack([1.0, 2.0], "lira"), [1.0, 2.0])
    assert scores.from_attack(-0.5, "loss") == 0.5
    assert scores.decision_text("loss", 0.5) == "member iff loss < 0.5"
    assert scores.decision_text("lira", 2.0) == "member iff φ > 2"
    assert scores.decision_text("hinge", 1.25) == "member iff hinge > 1.25"
    assert tuple(scores.SCORES) == ("loss", "lira", "hinge")
    for bad in ("nll", ""):
        with pytest.raises(ValueError, match="score must be one of"):
            scores.compute(bad, np.zeros((1, 3)), 0)
    with pytest.raises(ValueError, match="label"):
        scores.loss_from_logits(np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match="label"):
        scores.loss_from_logits(np.zeros((2, 3)), 0.5)
    with pytest.raises(ValueError, match="C >= 2"):
        scores.loss_from_logits(np.zeros((2, 1)), 0)
    with pytest.raises(ValueError, match="NaN"):
        scores.loss_from_logits(np.array([[0.0, np.nan]]), 0)


def test_records_keep_the_strings_of_figures_and_results():
    # decision texts in results.json and every figure's labels are built from these
    assert {n: r.symbol for n, r in scores.SCORES.items()} == {
        "loss": "loss",
        "lira": "φ",
        "hinge": "hinge",
    }
    assert {n: r.axis_label for n, r in scores.SCORES.items()} == {
        "loss": "cross-entropy loss",
        "lira": r"$\varphi = z_y - \log\sum_{y' \neq y} e^{z_{y'}}$  (logit-scaled confidence)",
        "hinge": r"hinge $= z_y - \max_{y' \neq y} z_{y'}$",
    }
    for name, record in scores.SCORES.items():
        assert record.name == name and scores.get(name) is record
    with pytest.raises(ValueError, match="score must be one of loss, lira, hinge; got 'nll'"):
        scores.get("nll")


def test_a_new_score_is_one_entry(monkeypatch):
    def margin_loss(logits, label):  # low = member, like the loss
        return -scores.hinge_from_logits(logits, label)

    record = scores.Score("margin", margin_loss, False, "m", "negative margin")
    monkeypatch.setitem(scores.SCORES, "margin", record)
    z = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 0.5]])
    np.testing.assert_array_equal(scores.compute("margin", z, 0), [-2.0, 2.0])
    np.testing.assert_array_equal(scores.to_attack([-2.0, 2.0], "margin"), [2.0, -2.0])
    assert scores.decision_text("margin", -1.5) == "member iff m < -1.5"


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([], "member scores is empty"),
        ([[1.0, 2.0]], "1-D"),
        ([1.0, np.nan], "non-finite value\\(s\\), the first at index 1"),
        ([np.inf], "non-finite"),
        (["a"], "numbers"),
    ],
)
def test_check_scores(values, match):
    with pytest.raises(ValueError, match=match):
        scores.check_scores(values, "member scores")
    got = scores.check_scores(np.array([1, 2], np.int32))
    assert got.dtype == np.float64 and got.tolist() == [1.0, 2.0]


# ---------------------------------------------------------------- the loss from the logits


def confident_logits(rng, n=64, c=10):
    """float32[n, C] logits of models from unsure to so sure that the float32 loss is 0:
    the true class (0) leads the others by margins from -5 to 700."""
    z = rng.normal(0.0, 1.0, (n, c)).astype(np.float32)
    z[:, 0] = z[:, 1:].max(1) + np.linspace(-5.0, 700.0, n).astype(np.float32)
    return z


def float32_device_loss(z, y):
    """The cross-entropy as the device computes it: float32 log-softmax."""
    z = np.asarray(z, np.float32)
    m = z.max(1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(1, dtype=np.float32)) + m[:, 0]
    return (lse - z[np.arange(len(z)), y]).astype(np.float32)


def test_loss_ranks_models_exactly_as_phi_does():
    # Loss = log(1 + e^-phi) is strictly decreasing in phi, so on the attack scale (high =
    # member) the two scores must order every set of models the same way, ties included,
    # even where the float32 device loss has rounded to 0 for most of them.
    rng = np.random.default_rng(3)
    z = confident_logits(rng)
    y = np.zeros(len(z), np.int64)
    assert np.count_nonzero(float32_device_loss(z, y) == 0.0) > len(z) // 2
    loss = scores.from_outputs("loss", z, y)
    phi = scores.from_outputs("lira", z, y)
    s_loss, s_phi = scores.to_attack(loss, "loss"), scores.to_attack(phi, "lira")
    assert np.unique(s_loss).size == np.unique(s_phi).size == len(z)
    np.testing.assert_array_equal(
        np.argsort(s_loss, kind="stable"), np.argsort(s_phi, kind="stable")
    )
    # loss = softplus(-phi) to float64 rounding: every value, relative to itself.
    want = np.array(
        [math.log1p(math.exp(-p)) if p > 0 else -p + math.log1p(math.exp(p)) for p in phi]
    )
    np.testing.assert_allclose(loss, want, rtol=4e-16 * 8, atol=0)


def test_loss_score_is_not_the_float32_device_loss():
    # The loss score comes from the saved logits in float64 whatever losses were saved
    # beside them: confident members whose float32 loss is 0 keep their order.
    from jaxmia.attack import metrics

    rng = np.random.default_rng(4)
    z = confident_logits(rng, n=40)
    y = np.zeros(40, np.int64)
    member, nonmember = z[20:], z[:20]  # members are the more confident half
    loss_in = scores.from_outputs("loss", member, y[:20])
    loss_out = scores.from_outputs("loss", nonmember, y[:20])
    assert metrics.auc(-loss_in, -loss_out) == 1.0
    phi_in = scores.from_outputs("lira", member, y[:20])
    phi_out = scores.from_outputs("lira", nonmember, y[:20])
    assert metrics.auc(phi_in, phi_out) == 1.0
    with pytest.raises(TypeError):
        scores.from_outputs("loss", member, y[:20], float32_device_loss(member, y[:20]))
