"""RMIA (attack/rmia.py) against a naive reimplementation, a worked example and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from scipy.special import expit

from jaxmia.attack import metrics, rmia, signals
from jaxmia.attack.signals import Signals

import reference_attacks as ref


def probabilities(rng, models, n, q, lo=0.05, hi=0.95):
    return rng.uniform(lo, hi, (models, n, q))


def pool(seed=0, r=6, n=5, z=7, k=3, q=3):
    rng = np.random.default_rng(seed)
    keep = rng.random((r, n)) < 0.5
    keep[:, 0] = True  # example 0 has no OUT reference: offline cannot score it
    block = np.arange(r) // 2
    reference = Signals(probabilities(rng, r, n, q), probabilities(rng, r, z, q), block)
    target = Signals(probabilities(rng, k, n, q), probabilities(rng, k, z, q), 100 + np.arange(k))
    return keep, reference, target


def naive(keep, reference, target, gamma, a=None):
    return ref.rmia(
        keep, reference.examples, reference.population, target.examples, target.population, gamma, a
    )


@pytest.mark.parametrize("q", [1, 2, 3])
@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_online_and_offline_equal_the_formula(q, gamma):
    keep, reference, target = pool(q=q)
    got = rmia.rmia_online(keep, reference, target, gamma=gamma)
    np.testing.assert_array_equal(got, naive(keep, reference, target, gamma))
    off = rmia.rmia_offline(keep, reference, target, gamma=gamma, a=0.3)
    want = naive(keep, reference, target, gamma, a=0.3)
    np.testing.assert_array_equal(np.isnan(off), np.isnan(want))
    assert np.isnan(off[:, 0]).all() and np.isfinite(off[:, 1:]).all()
    np.testing.assert_array_equal(off[:, 1:], want[:, 1:])
    per_model = rmia.rmia_offline(keep, reference, target, gamma=gamma, a=[0.0, 0.5, 1.0])
    np.testing.assert_array_equal(
        per_model[:, 1:], naive(keep, reference, target, gamma, a=np.array([0.0, 0.5, 1.0]))[:, 1:]
    )


def test_a_worked_example():
    # Two references with Pr(x) = 0.5 and Pr(z) = 0.4 for three population points; the
    # target gives x 0.9 and the points 0.1, 0.2, 0.3: LR(x, z) = (0.9/0.5)/(p_z/0.4) =
    # 7.2, 3.6, 2.4, all above γ = 2, and only the first above γ = 4.
    keep = np.array([[True], [False]])
    reference = Signals(np.array([[[0.6]], [[0.4]]]), np.full((2, 3, 1), 0.4), np.array([0, 0]))
    target = Signals(np.array([[[0.9]]]), np.array([[[0.1], [0.2], [0.3]]]), np.array([1]))
    assert rmia.rmia_online(keep, reference, target, gamma=2.0)[0, 0] == 1.0
    assert rmia.rmia_online(keep, reference, target, gamma=4.0)[0, 0] == pytest.approx(1 / 3)
    # Offline with a = 1: Pr(x) is the OUT reference's 0.4, Pr(z) = 0.4: LR = 9, 4.5, 3.
    assert rmia.rmia_offline(keep, reference, target, gamma=4.0, a=1.0)[0, 0] == pytest.approx(
        2 / 3
    )
    # a = 0: Pr(x) = 0.4/2 + 1/2 = 0.7 and Pr(z) = 0.7: LR = 9, 4.5, 3 again.
    assert rmia.rmia_offline(keep, reference, target, gamma=3.5, a=0.0)[0, 0] == pytest.approx(
        2 / 3
    )


def test_queries_vote_with_a_strict_majority():
    # Two queries: one says LR > γ for every z, the other for none: no majority (a tie
    # is no, as torch.mode of the paper's code); three queries with two yes: yes.
    ratio_z = np.ones((1, 4, 2))
    tie = rmia.relative_scores(np.array([[[3.0, 0.5]]]), ratio_z, 2.0)
    assert tie[0, 0] == 0.0
    majority = rmia.relative_scores(np.array([[[3.0, 0.5, 2.5]]]), np.ones((1, 4, 3)), 2.0)
    assert majority[0, 0] == 1.0


def test_rmia_needs_population_points():
    keep, reference, target = pool(z=7)
    empty = Signals(reference.examples, reference.population[:, :0], reference.block)
    target0 = Signals(target.examples, target.population[:, :0], target.block)
    with pytest.raises(ValueError, match="population points"):
        rmia.rmia_online(keep, empty, target0)


def test_the_probability_signal_is_the_tempered_softmax():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 4, (2, 3, 2, 5)).astype(np.float32)
    y = np.array([0, 4, 2])
    ex, pop = signals.probability_signal(2.0)(z, y, z[:, :2], y[:2])
    zz = z.astype(np.float64) / 2.0
    soft = np.exp(zz) / np.exp(zz).sum(-1, keepdims=True)
    want = np.take_along_axis(soft, y[None, :, None, None], axis=-1)[..., 0]
    np.testing.assert_allclose(ex, want, rtol=1e-14)  # float64 softmax two ways
    np.testing.assert_allclose(pop, want[:, :2], rtol=1e-14)


# ---------------------------------------------------------------- tuning a


def test_tuning_picks_the_grid_point_of_the_largest_auc():
    keep, reference, target = pool(seed=4, r=8, n=12, z=9, q=1)
    tune = reference.block == 1
    rest = ~tune
    a, aucs = rmia.tune_offline_a(
        keep[rest], reference.take(rest), keep[tune], reference.take(tune), gamma=1.0
    )
    assert list(aucs) == list(rmia.A_GRID)
    for g, v in aucs.items():
        s = naive(keep[rest], reference.take(rest), reference.take(tune), 1.0, a=g)
        ok = np.isfinite(s)
        member, non = s[ok & keep[tune]], s[ok & ~keep[tune]]
        assert v == pytest.approx(ref.auc(member, non), abs=1e-12)
    best = max(v for v in aucs.values() if v is not None)
    assert a == min(g for g, v in aucs.items() if v == best)


def test_each_target_model_is_tuned_on_another_block_than_its_own():
    # A block-mate's membership is the complement of the target's: tuning a on it would
    # choose a with the target's own answers in hand. The smallest other block tunes.
    keep, reference, target = pool(seed=5, r=8, n=12, z=9, q=1)
    refs = np.array([0, 1, 2, 4, 5, 6, 7])  # leave-one-out: model 3 (block 1) is the target
    for block, tuning in ((1, 0), (0, 1), (999, 0)):  # 999: a fresh model, no block-mate
        one = target.take([0])
        one = Signals(one.examples, one.population, np.array([block]))
        got = rmia.tuned_offline_a(keep[refs], reference.take(refs), one, gamma=1.0)
        tune = refs[reference.block[refs] == tuning]
        rest = refs[reference.block[refs] != tuning]
        want, _ = rmia.tune_offline_a(
            keep[rest], reference.take(rest), keep[tune], reference.take(tune), gamma=1.0
        )
        assert got.tolist() == [want], block
    # Only block-mates among the references: nothing independent tunes a.
    mates = refs[reference.block[refs] == 1]
    one = Signals(target.examples[:1], target.population[:1], np.array([1]))
    got = rmia.tuned_offline_a(keep[mates], reference.take(mates), one, gamma=1.0)
    assert got.tolist() == [rmia.OFFLINE_A]


# ---------------------------------------------------------------- a known answer


def test_with_uninformative_references_rmia_ranks_like_the_target_probability():
    # References that give every point the same Pr make Pr(x) and Pr(z) constants, so
    # with γ = 1 the score is the share of population points below Pr(x | θ): the
    # population's distribution function at it, increasing in Pr(x | θ).  With
    # Pr = sigmoid(φ), φ_OUT ~ N(0, 1) and φ_IN ~ N(Δ, 1), the AUC is Φ(Δ / √2).
    rng = np.random.default_rng(21)
    delta, k, n, z = 1.0, 60, 100, 4000
    member = rng.random((k, n)) < 0.5
    phi = rng.normal(0, 1, (k, n)) + delta * member
    pop_phi = np.concatenate([rng.normal(0, 1, (k, z // 2)), rng.normal(delta, 1, (k, z // 2))], 1)
    target = Signals(expit(phi)[..., None], expit(pop_phi)[..., None], np.zeros(k, int))
    reference = Signals(np.full((4, n, 1), 0.5), np.full((4, z, 1), 0.5), np.zeros(4, int))
    keep = np.zeros((4, n), bool)
    score = rmia.rmia_online(keep, reference, target, gamma=1.0)
    want = float(sps.norm.cdf(delta / math.sqrt(2)))
    # 3,000 pairs of each kind: the AUC's standard error is about 0.007.
    assert abs(metrics.auc(score[member], score[~member]) - want) < 0.03


def test_the_reference_mean_of_equal_values_is_that_value_bit_for_bit():
    # sum / count rounds: three 0.1s sum to 0.30000000000000004, a third of which is not 0.1;
    # RMIA's Pr(x) would then differ between a target with 3 OUT references and one with 4.
    v = np.array([0.1, 1 / 3, 0.7, 2.0 / 7.0])
    assert ((3 * v) / 3 != v).any()
    for count in range(1, 9):
        values = np.broadcast_to(v, (count, 4))
        assert np.array_equal(rmia.reference_mean(values), v)
        take = np.zeros((count, 4), bool)
        take[: max(1, count - 1)] = True
        assert np.array_equal(rmia.reference_mean(values, take), v)
    # And otherwise the mean it is, NaN where nothing is taken.
    rng = np.random.default_rng(0)
    x = rng.random((5, 3))
    take = rng.random((5, 3)) < 0.6
    take[:, 2] = False
    want = np.array([x[take[:, j], j].mean() if take[:, j].any() else np.nan for j in range(3)])
    np.testing.assert_allclose(rmia.reference_mean(x, take), want, rtol=4 * np.finfo(float).eps)
    assert np.isnan(rmia.reference_mean(x, take)[2])
