"""The protocol papers report (attack/protocol.py): who attacks whom, the pooled metrics, the
bootstrap over target models."""

from __future__ import annotations

import numpy as np
import pytest

from jaxmia.attack import lira, metrics, protocol
from jaxmia.attack.protocol import AttackOptions
from jaxmia.attack.signals import Signals

import reference_attacks as ref


def scored_pairs(seed=0, k=6, n=9, ties=False):
    rng = np.random.default_rng(seed)
    member = rng.random((k, n)) < 0.5
    scores = rng.normal(0, 1, (k, n)) + member
    if ties:
        scores = np.round(scores, 1)
    scores[0, 0] = np.nan  # a pair the attack could not score
    return scores, member


def test_sets_and_counts():
    sets = protocol.leave_one_out_sets(4)
    assert [s.tolist() for s in sets] == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]
    assert protocol.reference_counts(15) == [1, 2, 4, 8, 15]
    assert protocol.reference_counts(16) == [1, 2, 4, 8, 16]
    assert protocol.reference_counts(1) == [1]


@pytest.mark.parametrize("ties", [False, True])
def test_pair_metrics_are_the_metrics_of_the_scored_pairs(ties):
    scores, member = scored_pairs(ties=ties)
    got = protocol.pair_metrics(scores, member, levels=(0.01, 0.1, 0.25))
    ok = np.isfinite(scores)
    mem, non = scores[ok & member], scores[ok & ~member]
    assert got["n_pairs"] == 54 and got["n_scored"] == 53
    assert (got["n_member"], got["n_nonmember"]) == (mem.size, non.size)
    assert got["auc"] == pytest.approx(ref.auc(mem, non), abs=1e-15)
    assert got["balanced_accuracy"] == metrics.balanced_accuracy(mem, non)
    for f in (0.01, 0.1, 0.25):
        assert got["tpr_at_fpr"][f"{f:g}"] == ref.tpr_at_fpr(mem, non, f)
    assert got["tpr_at_fpr"]["0.01"] is None  # fewer than 100 non-member pairs


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_metrics_equal_the_metrics_of_the_repeated_pairs(ties):
    scores, member = scored_pairs(seed=1, k=5, n=30, ties=ties)
    y, model, starts = protocol._sorted_pairs(scores, member)
    levels = (0.05, 0.1)
    weights = np.array([[1, 1, 1, 1, 1], [0, 2, 1, 0, 3], [5, 0, 0, 0, 1]])
    got = protocol._weighted_metrics(weights, y, model, starts, levels)
    for b, w in enumerate(weights):
        rows = np.repeat(np.arange(5), w)  # each target model counted w times
        want = protocol.pair_metrics(scores[rows], member[rows], levels)
        # Counts stay integers until one division: the same bits as the metrics.
        assert got["auc"][b] == want["auc"]
        assert got["balanced_accuracy"][b] == want["balanced_accuracy"]
        for f in levels:
            v = want["tpr_at_fpr"][f"{f:g}"]
            assert (np.isnan(got[f"{f:g}"][b]) and v is None) or got[f"{f:g}"][b] == v


def test_bootstrap_intervals_equal_a_loop_over_resamples():
    scores, member = scored_pairs(seed=2, k=8, n=40)
    rng = np.random.default_rng(0)
    resamples = rng.integers(0, 8, (200, 8))
    got = protocol.bootstrap_metrics(scores, member, resamples, confidence=0.9, levels=(0.1,))
    aucs, tprs = [], []
    for r in resamples:
        m = protocol.pair_metrics(scores[r], member[r], (0.1,))
        aucs.append(m["auc"])
        tprs.append(m["tpr_at_fpr"]["0.1"])
    assert got["auc"] == pytest.approx(list(np.quantile(aucs, [0.05, 0.95])), abs=1e-15)
    assert got["tpr_at_fpr"]["0.1"] == pytest.approx(
        list(np.quantile(tprs, [0.05, 0.95])), abs=1e-15
    )
    # An FPR some resample cannot resolve gets no interval.
    few = protocol.bootstrap_metrics(scores, member, resamples, levels=(0.001,))
    assert few["tpr_at_fpr"]["0.001"] is None
    assert protocol.bootstrap_metrics(scores, member, resamples[:0])["auc"] is None


def test_bootstrap_over_target_models_covers_the_truth():
    # The model is the unit: target models differ (an offset u_k shared by all the
    # pairs of model k), so one model's pairs are correlated.  The percentile interval
    # over resampled models covers the pooled AUC about as often as it says.
    from scipy import stats as sps

    rng = np.random.default_rng(5)
    k, n, trials, shift, spread = 12, 40, 200, 1.0, 1.0
    # Members N(shift + u_k, 1), non-members N(u_k, 1), u_k ~ N(0, spread²): a pair from
    # two models differs by N(shift, 2 + 2 spread²), a pair from one model by N(shift, 2);
    # about 1/k of the pairs are of one model.
    between = float(sps.norm.cdf(shift / np.sqrt(2 + 2 * spread**2)))
    within = float(sps.norm.cdf(shift / np.sqrt(2)))
    truth = (1 - 1 / k) * between + within / k
    covered = 0
    for _ in range(trials):
        member = rng.random((k, n)) < 0.5
        scores = rng.normal(0, 1, (k, n)) + shift * member + rng.normal(0, spread, (k, 1))
        resamples = rng.integers(0, k, (200, k))
        lo, hi = protocol.bootstrap_metrics(scores, member, resamples, levels=())["auc"]
        covered += lo <= truth <= hi
    # Nominal 95%; percentile intervals over 12 models undercover a little (0.90 was
    # measured on this seed).  0.84 is 3 binomial standard deviations (0.021) below 0.90.
    assert covered / trials > 0.84


def test_score_targets_is_each_target_with_its_own_references():
    rng = np.random.default_rng(3)
    m, n = 6, 8
    keep = rng.random((m, n)) < 0.5
    phi = rng.normal(0, 1, (m, n, 2)) + keep[:, :, None]
    pool = Signals(phi, np.zeros((m, 0, 2)), np.arange(m) // 2)
    attack = protocol.standard_attacks(AttackOptions(lira_variance="fixed"), population=False)[1]
    assert attack.name == "lira_online"
    scores, chosen = protocol.score_targets(
        attack, keep, pool, pool, protocol.leave_one_out_sets(m)
    )
    assert chosen == [{}] * m
    for k in range(m):
        others = np.delete(np.arange(m), k)
        want = ref.lira_online(keep[others], phi[others], phi[[k]], "fixed")
        np.testing.assert_array_equal(np.isnan(scores[k]), np.isnan(want[0]))
        ok = ~np.isnan(want[0])
        np.testing.assert_allclose(scores[k][ok], want[0][ok], rtol=1e-12)
    direct = lira.lira_online(
        keep[1:], pool.take(np.arange(1, m)), pool.take([0]), variance="fixed"
    )
    np.testing.assert_array_equal(scores[0], direct[0])


def test_standard_attacks():
    names = [a.name for a in protocol.standard_attacks(AttackOptions(), population=False)]
    assert names == ["loss", "lira_online", "lira_offline"]
    full = protocol.standard_attacks(AttackOptions(rmia_gamma=1.5), population=True)
    assert [a.name for a in full][3:] == ["rmia_online", "rmia_offline", "rmia_offline_tuned"]
    assert full[4].settings == {"gamma": 1.5, "temperature": 2.0, "a": 0.3}
    assert full[5].prepare is not None and all(a.needs_population for a in full[3:])


# ---------------------------------------------------------------- models that all agree


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identical_models_leave_every_attack_exactly_indifferent(seed):
    # Every model gives the same logits (the examples differ from one another): no attack
    # can tell a member from a non-member, so every pooled AUC is exactly 0.5 and no TPR
    # at FPR f exceeds f (members and non-members score alike), in both protocols. Blocks
    # of 2 complementary models, as kinds/targets/plan.py draws them; references and fresh
    # target models of 4 blocks each.
    rng = np.random.default_rng(seed)
    m, e, n, z, q, c = 8, 8, 12, 16, 2, 5
    keep = np.zeros((m + e, n), bool)
    for b in range((m + e) // 2):
        keep[2 * b] = rng.random(n) < 0.5
        keep[2 * b + 1] = ~keep[2 * b]
    block = np.arange(m + e) // 2
    logits = np.broadcast_to(3 * rng.normal(size=(1, n, q, c)), (m + e, n, q, c))
    pop = np.broadcast_to(3 * rng.normal(size=(1, z, q, c)), (m + e, z, q, c))
    labels, pop_labels = rng.integers(c, size=n), rng.integers(c, size=z)
    for attack in protocol.standard_attacks(AttackOptions(), population=True):
        ex, po = attack.signal(logits, labels, pop, pop_labels)
        sig = Signals(np.ascontiguousarray(ex), np.ascontiguousarray(po), block)
        refs, fresh = np.arange(m), np.arange(m, m + e)
        runs = {
            "leave_one_out": (sig.take(refs), keep[:m], protocol.leave_one_out_sets(m)),
            "fresh_models": (sig.take(fresh), keep[m:], [refs] * e),
        }
        for name, (target, member, sets) in runs.items():
            scores, _ = protocol.score_targets(attack, keep[:m], sig.take(refs), target, sets)
            got = protocol.pair_metrics(scores, member)
            assert got["auc"] == 0.5, (attack.name, name, got["auc"])
            for fpr, tpr in got["tpr_at_fpr"].items():
                assert tpr is None or tpr <= float(fpr), (attack.name, name, fpr, tpr)
