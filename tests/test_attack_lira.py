"""LiRA and the loss attack (attack/lira.py) against naive reimplementations and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from jaxmia.attack import lira, metrics
from jaxmia.attack.signals import Signals

import reference_attacks as ref
from numerics import assert_close

# Both sides compute the same float64 formulas on tens of values in another order
# (numpy's pairwise sums, scipy's logpdf against math's): a few float64 unit
# roundoffs (1.1e-16) of the scores' scale; 1e-12 leaves room and nothing more.
FLOAT64_BOUND = 1e-12


def assert_same_scores(got, want, what):
    """The same pairs scored (NaN alike), and the scores equal to float64 rounding."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
    ok = ~np.isnan(want)
    assert_close(got[ok], want[ok], FLOAT64_BOUND, what=what)


def signals(x, population=None) -> Signals:
    x = np.asarray(x, np.float64)
    pop = np.zeros((x.shape[0], 0, x.shape[2])) if population is None else population
    return Signals(x, pop, np.arange(x.shape[0]) // 2)


def fixed_arrays(seed=0, r=9, n=7, k=3, q=2):
    """Reference φ with per-example means, members higher; a few examples' IN or OUT
    references removed so that the NaN handling is exercised too."""
    rng = np.random.default_rng(seed)
    keep = rng.random((r, n)) < 0.5
    keep[:, 0] = True  # example 0: no OUT reference
    keep[:, 1] = False  # example 1: no IN reference
    keep[:2, 2], keep[2:, 2] = True, False  # example 2: two IN, the rest OUT
    base = rng.normal(0, 2, n)
    phi = base[None, :, None] + keep[:, :, None] * 1.5 + rng.normal(0, 1, (r, n, q))
    target = base[None, :, None] + rng.normal(0.5, 1.2, (k, n, q))
    return keep, phi, target


@pytest.mark.parametrize("variance", ["fixed", "per_example"])
@pytest.mark.parametrize("center", ["median", "mean"])
def test_online_equals_the_formula(variance, center):
    keep, phi, target = fixed_arrays()
    got = lira.lira_online(keep, signals(phi), signals(target), variance=variance, center=center)
    want = ref.lira_online(keep, phi, target, variance, center)
    assert np.isnan(got[:, :2]).all() and np.isfinite(got[:, 2]).all()
    assert_same_scores(got, want, "lira_online")


@pytest.mark.parametrize("variance", ["fixed", "per_example"])
@pytest.mark.parametrize("test", ["one_sided", "two_sided"])
def test_offline_equals_the_formula(variance, test):
    keep, phi, target = fixed_arrays(seed=1)
    got = lira.lira_offline(
        keep, signals(phi), signals(target), variance=variance, center="median", test=test
    )
    want = ref.lira_offline(keep, phi, target, variance, "median", test)
    assert np.isnan(got[:, 0]).all() and np.isfinite(got[:, 1:3]).all()  # 0 lacks OUT
    assert_same_scores(got, want, "lira_offline")


def test_the_fixed_sigma_is_the_reference_codes():
    # One σ: np.std (ddof 0) of every IN value of every example and query, not around
    # each example's centre; the offline attack takes the OUT values'.
    keep, phi, _ = fixed_arrays(seed=2)
    fin = lira.fit_gaussians(keep, phi, True, variance="fixed", center="median")
    fout = lira.fit_gaussians(keep, phi, False, variance="fixed", center="median", fixed_from=True)
    pooled_in = np.concatenate([phi[keep[:, j], j, :].ravel() for j in range(keep.shape[1])])
    for fit in (fin, fout):
        assert_close(fit.scale, np.full(fit.scale.shape, np.std(pooled_in)), FLOAT64_BOUND)
    off = lira.fit_gaussians(keep, phi, False, variance="fixed", center="median")
    pooled_out = np.concatenate([phi[~keep[:, j], j, :].ravel() for j in range(keep.shape[1])])
    assert_close(off.scale, np.full(off.scale.shape, np.std(pooled_out)), FLOAT64_BOUND)
    assert fin.count.tolist() == keep.sum(0).tolist()


def test_auto_is_fixed_below_64_references():
    keep, phi, target = fixed_arrays(r=63)
    for r, want in ((63, "fixed"), (64, "per_example")):
        keep, phi, target = fixed_arrays(r=r)
        s, t = signals(phi), signals(target)
        auto = lira.lira_online(keep, s, t, variance="auto")
        np.testing.assert_array_equal(auto, lira.lira_online(keep, s, t, variance=want))
    assert lira.resolve_variance("auto", 63) == "fixed"
    with pytest.raises(ValueError, match="variance must be one of"):
        lira.resolve_variance("pooled", 10)


def test_fixed_variance_is_monotone_in_phi():
    # One σ on both sides: the log ratio is linear in φ, so no bounded member region.
    keep, phi, _ = fixed_arrays(seed=3, r=20, n=5, q=1)
    grid = np.linspace(-8, 8, 41)
    t = np.broadcast_to(grid[:, None, None], (41, 5, 1)).copy()
    score = lira.lira_online(keep, signals(phi), signals(t), variance="fixed")
    ok = np.isfinite(score[0])
    assert (np.diff(score[:, ok], axis=0) > 0).all()
    per = lira.lira_online(keep, signals(phi), signals(t), variance="per_example")
    assert not (np.diff(per[:, ok], axis=0) > 0).all()  # per example it can turn back


def test_queries_are_combined_by_the_mean_log_ratio():
    keep, phi, target = fixed_arrays(seed=4, q=3)
    both = lira.lira_online(keep, signals(phi), signals(target), variance="per_example")
    each = [
        lira.lira_online(
            keep, signals(phi[:, :, [q]]), signals(target[:, :, [q]]), variance="per_example"
        )
        for q in range(3)
    ]
    assert_same_scores(both, np.mean(each, axis=0), "mean over queries")


def test_loss_attack_is_minus_the_mean_loss():
    keep, phi, target = fixed_arrays(seed=5)
    got = lira.loss_attack(keep, signals(phi), signals(target))
    np.testing.assert_array_equal(got, -target.mean(axis=2))


def test_shapes_that_disagree_are_refused():
    keep, phi, target = fixed_arrays()
    with pytest.raises(ValueError, match="keep must be"):
        lira.lira_online(keep[:, :3], signals(phi), signals(target))
    with pytest.raises(ValueError, match="target signals must be"):
        lira.lira_online(keep, signals(phi), signals(target[:, :3]))


# ---------------------------------------------------------------- known answers


def gaussian_pool(rng, r, n, k, delta, sd_in=1.0, sd_out=1.0):
    """φ of r references and k target models on n examples: OUT ~ N(m_n, sd_out²), IN ~
    N(m_n + delta, sd_in²), every example IN for half the models."""

    def draw(models):
        keep = np.zeros((models, n), bool)
        for j in range(n):
            keep[rng.permutation(models)[: models // 2], j] = True
        m = np.linspace(-3, 3, n)[None, :]
        phi = np.where(
            keep, rng.normal(m + delta, sd_in, (models, n)), rng.normal(m, sd_out, (models, n))
        )
        return keep, phi[:, :, None]

    keep, phi = draw(r)
    t_keep, t_phi = draw(k)
    return keep, phi, t_keep, t_phi


def pooled_auc(scores, member) -> float:
    return metrics.auc(scores[member], scores[~member])


@pytest.mark.parametrize("attack", ["online", "offline"])
def test_equal_variances_give_the_gaussian_auc(attack):
    # φ_OUT ~ N(m_n, 1), φ_IN ~ N(m_n + Δ, 1): with one σ, both tests are increasing in
    # φ - m_n, whose AUC is Φ(Δ / (σ √2)); the per-example centres fitted on 400
    # references each move it by about 0.001.
    rng = np.random.default_rng(11)
    delta = 1.0
    keep, phi, t_keep, t_phi = gaussian_pool(rng, 800, 40, 250, delta)
    fn = lira.lira_online if attack == "online" else lira.lira_offline
    score = fn(keep, signals(phi), signals(t_phi), variance="fixed")
    want = float(sps.norm.cdf(delta / math.sqrt(2)))
    # 5,000 member and 5,000 non-member pairs: the AUC's standard error is about 0.005.
    assert abs(pooled_auc(score, t_keep) - want) < 0.025


def test_per_example_variances_give_the_likelihood_ratio_auc():
    # Unequal variances: the online attack is then the exact likelihood ratio of the two
    # normals (up to its fitted parameters), whose AUC comes from a million fresh draws.
    rng = np.random.default_rng(12)
    delta, sd_in, sd_out = 1.0, 2.0, 0.7
    keep, phi, t_keep, t_phi = gaussian_pool(rng, 800, 40, 250, delta, sd_in, sd_out)
    score = lira.lira_online(keep, signals(phi), signals(t_phi), variance="per_example")

    def true_ratio(x):
        return sps.norm.logpdf(x, delta, sd_in) - sps.norm.logpdf(x, 0, sd_out)

    big = np.random.default_rng(13)
    want = metrics.auc(
        true_ratio(big.normal(delta, sd_in, 10**6)), true_ratio(big.normal(0, sd_out, 10**6))
    )
    assert abs(pooled_auc(score, t_keep) - want) < 0.025
    # A one-sided offline test cannot use the members' wider spread: it does worse.
    off = lira.lira_offline(keep, signals(phi), signals(t_phi), variance="per_example")
    assert pooled_auc(off, t_keep) < want - 0.02


def test_two_sided_offline_finds_wider_members_with_the_arctan_auc():
    # φ_OUT ~ N(0, 1), φ_IN ~ N(0, σ²), σ > 1: the same centre, members wider.  The
    # two-sided test -log N(φ; 0, 1) = φ²/2 + const ranks by |φ|, and
    # P(σ|Z1| > |Z2|) = P(|Z2/Z1| < σ) = (2/π) arctan σ (Z2/Z1 is Cauchy); the
    # one-sided test cannot tell the two apart (AUC 1/2).
    rng = np.random.default_rng(14)
    sd_in = 2.0
    keep, phi, t_keep, t_phi = gaussian_pool(rng, 800, 40, 250, 0.0, sd_in, 1.0)
    two = lira.lira_offline(
        keep, signals(phi), signals(t_phi), variance="per_example", test="two_sided"
    )
    assert abs(pooled_auc(two, t_keep) - 2 / math.pi * math.atan(sd_in)) < 0.025
    one = lira.lira_offline(keep, signals(phi), signals(t_phi), variance="per_example")
    assert abs(pooled_auc(one, t_keep) - 0.5) < 0.025


def test_the_loss_attack_gives_the_gaussian_auc():
    # Losses N(1 - Δ, σ²) for members and N(1, σ²) for the rest: minus the loss ranks
    # members first with AUC Φ(Δ / (σ √2)), whatever the references.
    rng = np.random.default_rng(15)
    member = rng.random((100, 100)) < 0.5
    losses = rng.normal(1.0, 0.5, (100, 100)) - 0.4 * member
    keep = np.zeros((2, 100), bool)
    score = lira.loss_attack(keep, signals(np.zeros((2, 100, 1))), signals(losses[..., None]))
    want = float(sps.norm.cdf(0.4 / (0.5 * math.sqrt(2))))
    assert abs(pooled_auc(score, member) - want) < 0.02  # 5,000 pairs a side: se 0.005
