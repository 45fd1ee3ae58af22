"""DP-SGD's host side: the dp: key, the canaries, the accountant and the empirical ε bounds.

The bounds are tested on a mechanism whose ε is known exactly, a Gaussian
mechanism on one scalar (no training): sensitivity 1 and noise s is 1/s-GDP
(Dong, Roth, Su 2019), and its ε at δ comes from dp-accounting's PLD of the
same mechanism, computed independently of our code.  Each bound must stay
below that ε in at least its stated confidence of repetitions (a Monte Carlo
law: the violations of R repetitions are Bin(R, p <= 1 - confidence)).
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from jaxmia import privacy
from jaxmia.attack import accounting, audit, bounds
from jaxmia.config import KEYS, config_from_dict
from jaxmia.errors import UserError

from conftest import tiny_config

dp_accounting = pytest.importorskip("dp_accounting")

# ---------------------------------------------------------------- the dp: key


@pytest.mark.parametrize(
    ("dp", "message"),
    [
        ({"noise_multiplier": 1, "l2_clp": 1}, "unknown key 'l2_clp'; did you mean 'l2_clip'"),
        ({"l2_clip": 1}, "noise_multiplier is required"),
        ({"noise_multiplier": -1}, "noise_multiplier must be"),
        ({"noise_multiplier": []}, "noise_multiplier must be"),
        ({"noise_multiplier": [1, 1.0]}, "must not repeat a level"),
        ({"noise_multiplier": "a lot"}, "noise_multiplier must be"),
        ({"noise_multiplier": 1, "l2_clip": 0}, "l2_clip must be a number > 0"),
        ({"noise_multiplier": 1, "l2_clip": math.inf}, "l2_clip must be finite"),
        ({"noise_multiplier": [0, 1], "l2_clip": None}, "l2_clip must be finite"),
        ({"noise_multiplier": 1, "sampling": "uniform"}, "sampling must be one of poisson"),
        ({"noise_multiplier": 1, "delta": 0}, "delta must be in (0, 1)"),
        ({"noise_multiplier": 1, "delta": 1.5}, "delta must be in (0, 1)"),
        ([1, 2], "dp must be a mapping"),
    ],
)
def test_bad_dp_mapping_is_one_line(dp, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        config_from_dict({"dp": dp})
    assert "\n" not in str(e.value)


def test_dp_is_normalised_and_hashed_only_when_set():
    a = config_from_dict({"dp": {"noise_multiplier": 1, "l2_clip": "1e0"}})
    b = config_from_dict(
        {"dp": {"noise_multiplier": 1.0, "l2_clip": 1.0, "sampling": "poisson", "delta": None}}
    )
    assert (
        a.dp
        == b.dp
        == {
            "noise_multiplier": 1.0,
            "l2_clip": 1.0,
            "sampling": "poisson",
            "delta": None,
        }
    )
    assert a.results_hash("d", "v") == b.results_hash("d", "v")
    # C = inf (YAML .inf) with sigma 0 is kept as null (JSON has no infinity).
    c = config_from_dict({"dp": {"noise_multiplier": 0, "l2_clip": math.inf}})
    assert c.dp["l2_clip"] is None
    # Without dp and canary the hash is the one runs had before these keys existed.
    # Both are hashed keys (run.json lists them) that enter the hash only when set.
    plain = config_from_dict({})
    assert {"dp", "canary"} <= set(plain.hashed_keys())
    assert not KEYS["dp"].hash_default and not KEYS["canary"].hash_default
    d = plain.to_dict()
    before = {k: d[k] for k in plain.hashed_keys() if KEYS[k].hash_default}
    blob = json.dumps({**before, "data": "d", "jaxmia_version": "v"}, sort_keys=True).encode()
    assert plain.results_hash("d", "v") == hashlib.sha256(blob).hexdigest()[:16]
    canary = config_from_dict({"canary": "mislabeled", "target_index": 0})
    assert a.results_hash("d", "v") != plain.results_hash("d", "v")
    assert canary.results_hash("d", "v") != plain.replace(target_index=0).results_hash("d", "v")


def test_canary_and_dp_refusals():
    with pytest.raises(UserError, match="canary: mislabeled needs a target"):
        config_from_dict({"experiment": "population", "canary": "mislabeled"})
    with pytest.raises(UserError, match="canary must be one of none, mislabeled"):
        config_from_dict({"canary": "poisoned"})


def test_a_batchnorm_model_is_refused_with_dp(monkeypatch):
    import dataclasses

    from jaxmia.models import MODELS

    monkeypatch.setitem(MODELS, "bn", dataclasses.replace(MODELS["cnn"], has_batch_stats=True))
    with pytest.raises(UserError, match="dp: model bn keeps batch statistics") as e:
        config_from_dict({"model": "bn", "dp": {"noise_multiplier": 1}})
    assert "\n" not in str(e.value)
    # The real BatchNorm networks too.
    with pytest.raises(UserError, match="dp: model wrn28_2 keeps batch statistics"):
        config_from_dict({"model": "wrn28_2", "dp": {"noise_multiplier": 1}})


def test_augmentation_is_refused_with_dp():
    # DP-SGD takes each example's gradient in two passes; a batch's augmentation
    # draw would not be the same example in both.
    for augment in ("flip", "flip_crop"):
        with pytest.raises(UserError, match=f"dp: augment: {augment} is not supported") as e:
            config_from_dict({"augment": augment, "dp": {"noise_multiplier": 1}})
        assert "\n" not in str(e.value)
    config_from_dict({"augment": "none", "dp": {"noise_multiplier": 1}})  # accepted


# ---------------------------------------------------------------- levels and mechanism


def test_noise_levels_are_shared_by_a_round_and_by_a_block():
    from jaxmia.kinds.single_target.plan import calibration_jobs, evaluation_jobs
    from jaxmia.runs.plan import CALIBRATION, EVALUATION, Job

    cfg = tiny_config(dp={"noise_multiplier": [0.5, 1, 2]}, n_iterations=6, target_index=1)
    sig = privacy.noise_multipliers(cfg, calibration_jobs(6))
    np.testing.assert_array_equal(sig, np.repeat([0.5, 1, 2, 0.5, 1, 2], 2))
    np.testing.assert_array_equal(
        privacy.noise_multipliers(cfg, evaluation_jobs(4)), np.repeat([0.5, 1, 2, 0.5], 2)
    )
    t = tiny_config(
        experiment="targets",
        targets=[1, 2, 3],
        inclusion=0.25,
        n_models=16,
        dp={"noise_multiplier": [1, 4]},
    )
    sig = privacy.noise_multipliers(t, [Job(CALIBRATION, m, False) for m in range(16)])
    np.testing.assert_array_equal(sig, np.repeat([1, 4, 1, 4], 4))  # blocks of b = 4
    sig = privacy.noise_multipliers(t, [Job(EVALUATION, m, False) for m in range(8)])
    np.testing.assert_array_equal(sig, np.repeat([1, 4], 4))


def test_mechanism_parameters():
    cfg = tiny_config(dp={"noise_multiplier": 1.0}, subset_size=40, batch_size=16, epochs=3)
    mech = privacy.mechanism(cfg)
    # A single target's IN model has n + 1 = 41 examples: q = 16/41, ceil(41/16) = 3 steps.
    assert mech.dataset_size == 41 and mech.sampling_rate == 16 / 41
    assert mech.steps == 9 and mech.delta == 1 / 82
    for strategy, p in privacy.SECOND_PASS_PROBABILITY.items():
        b = mech.buffer_size(48, strategy)
        assert b % 8 == 0 and b >= 16
        # The buffer holds a step's sample but in at most p of the steps (and 8 less would not).
        assert sps.binom.sf(b, 48, 16 / 41) <= p < sps.binom.sf(b - 8, 48, 16 / 41)


# ---------------------------------------------------------------- canaries


def test_canary_labels_are_another_class_drawn_from_seed_and_target():
    targets = np.arange(9000)
    own = targets % 10
    got = privacy.canary_labels(3, targets, own, 10)
    assert (got != own).all() and got.dtype == np.int32
    np.testing.assert_array_equal(got[[5, 77]], privacy.canary_labels(3, [5, 77], own[[5, 77]], 10))
    assert (privacy.canary_labels(4, targets, own, 10) != got).mean() > 0.8
    # Uniform over the 9 other classes: (label - own - 1) mod 10 is uniform on 0..8.
    shift = (got - own - 1) % 10
    counts = np.bincount(shift, minlength=9)
    assert sps.chisquare(counts).pvalue > 1e-4


# ---------------------------------------------------------------- accountant


@pytest.mark.parametrize(
    ("q", "sigma", "steps", "delta"), [(0.1, 1.0, 30, 1e-5), (16 / 41, 2.0, 9, 1 / 82)]
)
def test_accountant_equals_a_direct_dp_accounting_call(q, sigma, steps, delta):
    got = accounting.dp_sgd_epsilon(q, sigma, steps, delta)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    pld.compose(event)
    rdp = dp_accounting.rdp.RdpAccountant(orders=list(range(2, 257)) + [384, 512, 1024])
    rdp.compose(event)
    assert got["pld"] == pld.get_epsilon(delta)
    assert got["rdp"] == rdp.get_epsilon(delta)
    assert 0 < got["pld"] <= got["rdp"]  # RDP is the looser of the two


def test_privacy_block_uses_the_runs_mechanism():
    cfg = tiny_config(dp={"noise_multiplier": [0, 2.0]}, subset_size=40, batch_size=16, epochs=3)
    block, warnings = privacy.privacy_block(privacy.mechanism(cfg), 0.95)
    assert block["levels"][0]["epsilon"] == {"rdp": None, "pld": None}  # sigma 0: no guarantee
    assert block["levels"][1]["epsilon"] == accounting.dp_sgd_epsilon(16 / 41, 2.0, 9, 1 / 82)
    assert any("noise_multiplier 0" in w for w in warnings)


# ---------------------------------------------------------------- bounds against references


def _true_epsilon(s: float, delta: float) -> float:
    """ε at δ of the Gaussian mechanism (sensitivity 1, noise s), from dp-accounting's PLD."""
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    pld.compose(dp_accounting.GaussianDpEvent(s))
    return pld.get_epsilon(delta)


@pytest.mark.parametrize(("mu", "delta"), [(0.5, 1e-5), (1.0, 1e-3), (2.0, 1e-5), (4.0, 1e-2)])
def test_gdp_epsilon_equals_the_gaussian_mechanisms(mu, delta):
    # PLD's discretisation (1e-4, pessimistic) bounds the difference.
    assert bounds.gdp_epsilon(mu, delta) == pytest.approx(_true_epsilon(1 / mu, delta), abs=2e-3)
    assert bounds.gdp_epsilon(0.0, delta) == 0.0


def test_gdp_mu_formula():
    mu, f_ub, n_ub = bounds.gdp_mu_lower_bound(3, 50, 7, 40, confidence=0.9)
    assert float(f_ub) == pytest.approx(sps.beta.ppf(0.95, 4, 47), abs=1e-12)
    assert float(n_ub) == pytest.approx(sps.beta.ppf(0.95, 8, 33), abs=1e-12)
    assert float(mu) == pytest.approx(sps.norm.ppf(1 - f_ub) - sps.norm.ppf(n_ub), abs=1e-12)
    assert float(bounds.gdp_mu_lower_bound(25, 50, 20, 40)[0]) == 0.0  # chance: nothing shown


def test_one_run_matches_jax_privacy():
    jp = pytest.importorskip("jax_privacy.auditing")
    for m, r, v, eps, delta in [
        (100, 20, 15, 0.5, 0.0),
        (1000, 64, 50, 1.0, 1e-5),
        (50, 50, 40, 2.0, 1e-3),
    ]:
        assert bounds.one_run_p_value(m, r, v, eps, delta) == pytest.approx(
            jp._one_run_p_value(m, r, v, eps, delta), rel=1e-12, abs=1e-15
        )
        ours = bounds.one_run_epsilon_lower_bound(m, r, v, confidence=0.95, delta=delta)
        theirs = jp._epsilon_one_run(0.0, m, r, v, 0.05, delta)
        assert ours == pytest.approx(theirs, abs=1e-5)  # their brentq stops at xtol 1e-6


def test_one_run_delta_zero_is_the_binomial_tail():
    # v = r = 10 right: p(eps) = q^10, so eps_lb = logit(0.05^(1/10)).
    q = 0.05**0.1
    want = math.log(q / (1 - q))
    assert bounds.one_run_epsilon_lower_bound(100, 10, 10, confidence=0.95) == pytest.approx(
        want, abs=1e-8
    )
    assert bounds.one_run_epsilon_lower_bound(100, 10, 5, confidence=0.95) == 0.0


# ---------------------------------------------------------------- Monte Carlo soundness


def _violations_allowed(reps: int, confidence: float) -> int:
    """Violations a sound bound exceeds with probability <= 1e-3 over ``reps`` repetitions."""
    return int(sps.binom.ppf(1 - 1e-3, reps, 1 - confidence))


@pytest.mark.parametrize("s", [0.5, 1.0])
def test_multi_run_bounds_hold_on_a_gaussian_mechanism(s):
    delta, conf, reps = 1e-5, 0.95, 200
    truth = _true_epsilon(s, delta)
    rng = np.random.default_rng(int(s * 10))
    cp, gdp = [], []
    for _ in range(reps):
        cal_in, cal_out = 1 + s * rng.standard_normal(32), s * rng.standard_normal(32)
        ev_in, ev_out = 1 + s * rng.standard_normal(64), s * rng.standard_normal(64)
        a = audit.multi_run_audit(cal_in, cal_out, ev_in, ev_out, confidence=conf, delta=delta)
        cp.append(a["clopper_pearson"]["epsilon_lb"])
        gdp.append(a["gaussian_dp"]["epsilon_lb"])
    cp, gdp = np.array(cp), np.array(gdp)
    allowed = _violations_allowed(reps, conf)
    assert (cp > truth).sum() <= allowed and (gdp > truth).sum() <= allowed
    # The test has power: the bounds are not all 0, and GDP needs fewer pairs than CP.
    assert np.median(gdp) > 0.15 * truth and np.median(gdp) > np.median(cp)


def test_one_run_bound_holds_on_a_gaussian_mechanism():
    # m canaries, each in with probability 1/2; the model's output on canary i is
    # 1[in] + N(0, s^2): (eps, delta)-DP for each canary with the Gaussian's eps.
    s, delta, conf, reps, m = 0.5, 1e-5, 0.95, 100, 400
    truth = _true_epsilon(s, delta)
    rng = np.random.default_rng(7)
    got = []
    for _ in range(reps):
        ref_member = rng.random((8, m)) < 0.5
        reference = ref_member + s * rng.standard_normal((8, m))
        member = rng.random((1, m)) < 0.5
        out = member + s * rng.standard_normal((1, m))
        a = audit.one_run_audit(out, member, reference, ref_member, confidence=conf, delta=delta)
        got.append(a["per_model"][0]["epsilon_lb"])
    got = np.array(got)
    assert (got > truth).sum() <= _violations_allowed(reps, conf)
    assert np.median(got) > 0.5


def test_with_very_large_noise_the_bounds_are_zero():
    rng = np.random.default_rng(0)
    s, reps = 1000.0, 50
    zeros = 0
    for _ in range(reps):
        a = audit.multi_run_audit(
            1 + s * rng.standard_normal(32),
            s * rng.standard_normal(32),
            1 + s * rng.standard_normal(64),
            s * rng.standard_normal(64),
            confidence=0.95,
            delta=1e-5,
        )
        member = rng.random((1, 200)) < 0.5
        ref_member = rng.random((4, 200)) < 0.5
        one = audit.one_run_audit(
            member + s * rng.standard_normal((1, 200)),
            member,
            ref_member + s * rng.standard_normal((4, 200)),
            ref_member,
            confidence=0.95,
            delta=1e-5,
        )
        zeros += (a["clopper_pearson"]["epsilon_lb"] == 0) + (
            one["per_model"][0]["epsilon_lb"] == 0
        )
    assert zeros >= 2 * reps - _violations_allowed(2 * reps, 0.95)


def test_readme_pairs_and_canaries_tables_are_computed():
    """The README's tables of the best bounds per pair or canary count are what the code gives."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = [ln.strip() for ln in readme.splitlines()]

    def table(head):
        start = next(i for i, ln in enumerate(lines) if ln.startswith(head))
        rows = []
        for ln in lines[start:]:
            if not ln.startswith("|"):
                break
            rows.append([c.strip().replace(",", "") for c in ln.strip("|").split("|")])
        return [int(c) for c in rows[0][1:]], {r[0]: [float(c) for c in r[1:]] for r in rows[2:]}

    d = 1e-5
    pairs, rows = table("| pairs per level E |")
    for e, cp, gdp, gdp10 in zip(pairs, *rows.values(), strict=True):
        assert float(bounds.epsilon_lower_bound(0, e, 0, e, delta=d)[0]) == pytest.approx(
            cp, abs=0.005
        )
        mu = float(bounds.gdp_mu_lower_bound(0, e, 0, e)[0])
        assert bounds.gdp_epsilon(mu, d) == pytest.approx(gdp, abs=0.005)
        mu = float(bounds.gdp_mu_lower_bound(e // 10, e, e // 10, e)[0])
        assert bounds.gdp_epsilon(mu, d) == pytest.approx(gdp10, abs=0.005)
    canaries, rows = table("| canaries m")
    for m, right, most in zip(canaries, *rows.values(), strict=True):
        assert bounds.one_run_epsilon_lower_bound(m, m, m, delta=d) == pytest.approx(
            right, abs=0.005
        )
        got = bounds.one_run_epsilon_lower_bound(m, m, int(0.9 * m), delta=d)
        assert got == pytest.approx(most, abs=0.005)


def test_console_table_says_each_level_and_the_canary():
    from jaxmia.console import privacy_lines

    cfg = tiny_config(dp={"noise_multiplier": [0.5, 2.0]}, subset_size=40, batch_size=16, epochs=3)
    block, _ = privacy.privacy_block(privacy.mechanism(cfg), 0.95)
    block["levels"][0]["empirical"] = {
        "clopper_pearson": {"epsilon_lb": 0.8125, "ratio": 0.05},
        "gaussian_dp": {"epsilon_lb": 2.5, "ratio": 0.2},
    }
    r = {
        "privacy": block,
        "canary": {"kind": "mislabeled", "label": "cat", "original_label": "dog"},
    }
    lines = privacy_lines(r)
    assert lines[0] == "Canary: mislabeled: x trained as cat (its own class: dog)"
    assert "q = 0.3902, 9 steps, delta = 0.0122; epsilon_lb at 95% confidence" in lines[1]
    assert lines[2].split() == [
        "sigma",
        "eps",
        "RDP",
        "eps",
        "PLD",
        "CP",
        "eps_lb",
        "GDP",
        "eps_lb",
        "ratio",
        "CP",
        "ratio",
        "GDP",
    ]
    pld = block["levels"][0]["epsilon"]["pld"]
    assert lines[3].split() == [
        "0.5",
        f"{block['levels'][0]['epsilon']['rdp']:.3f}",
        f"{pld:.3f}",
        "0.812",
        "2.500",
        "0.050",
        "0.200",
    ]
    assert lines[4].split()[3:] == ["n/a"] * 4  # no empirical bound at that level
    assert privacy_lines({}) == []


def test_calibration_cut_maximises_the_bound_then_youden():
    # Perfectly separated: the cut lies midway between the highest OUT and lowest IN score.
    cut, value = audit.calibration_cut(
        np.array([5.0, 6, 7]), np.array([1.0, 2, 3]), lambda *c: -c[0] - c[2]
    )
    assert cut == 4.0 and value == 0
    # An objective that is 0 everywhere: the largest TPR - FPR decides (2 of 3 IN above, 0 OUT).
    cut, _ = audit.calibration_cut(
        np.array([0.5, 5.0, 6.0]), np.array([1.0, 2.0, 3.0]), lambda fp, n, fn, m: 0 * fp
    )
    assert cut == 4.0


def test_single_target_audit_per_level_from_hand_made_arrays():
    # Level 0.5 (rounds and pairs 0, 2, ...): x's loss separates IN from OUT, so every
    # evaluation decision is right and Clopper-Pearson's epsilon is the all-right bound
    # of 16 pairs; level 4 (1, 3, ...): IN and OUT score alike, so nothing is shown.
    from jaxmia.attack.summary import Settings
    from jaxmia.kinds.single_target.analysis import privacy_audit

    cfg = tiny_config(dp={"noise_multiplier": [0.5, 4.0]}, n_iterations=8, eval_pairs=32)
    mech = privacy.mechanism(cfg)

    def side(n, low_member):  # x's logits under n IN or OUT models, alternating levels
        sig = np.tile(np.float32([0.5, 4.0]), n // 2)
        top = np.where(sig == 0.5, 6.0, 1.0) if low_member else np.ones(n)
        # The two sides interleave at level 4 (and nothing ties).
        top = top + (np.arange(n) + (0.0 if low_member else 0.5)) * 1e-3
        return sig, np.stack([top, np.zeros(n), np.zeros(n)], axis=1)

    sig, member = side(8, True)
    _, nonmember = side(8, False)
    ev_sig, ev_member = side(32, True)
    _, ev_nonmember = side(32, False)
    arrays = {
        "round_used": np.ones(8, bool),
        "eval_used": np.ones(32, bool),
        "noise_multiplier": sig,
        "eval_noise_multiplier": ev_sig,
        "target_label": np.array(0),
        "member_logits": member,
        "nonmember_logits": nonmember,
        "eval_member_logits": ev_member,
        "eval_nonmember_logits": ev_nonmember,
    }
    block, _ = privacy_audit(arrays, mech, Settings(alpha=0.1, score="loss"))
    low, high = block["levels"]
    assert (low["rounds_used"], low["eval_pairs_used"]) == (4, 16)
    cp = low["empirical"]["clopper_pearson"]
    want = bounds.epsilon_lower_bound(0, 16, 0, 16, confidence=0.95, delta=mech.delta)[0]
    assert cp["epsilon_lb"] == float(want) > 0
    assert (cp["false_positives"], cp["false_negatives"]) == (0, 0)
    assert cp["ratio"] == cp["epsilon_lb"] / low["epsilon"]["pld"]
    assert low["empirical"]["gaussian_dp"]["epsilon_lb"] > 0
    for method in ("clopper_pearson", "gaussian_dp"):
        assert high["empirical"][method]["epsilon_lb"] == 0
