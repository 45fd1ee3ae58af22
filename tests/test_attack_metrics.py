"""Tests for jaxmia.attack.metrics against double loops, brute force and known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from jaxmia.attack import metrics

import reference_stats as ref

# ---------------------------------------------------------------- ROC metrics


@pytest.mark.parametrize("seed", range(15))
def test_metrics_match_naive(seed):
    rng = np.random.default_rng(900 + seed)
    mem, non = ref.random_case(rng)
    # On the attack scale (high = member) the AUC counts s_mem > s_non.
    assert metrics.auc(mem, non) == pytest.approx(1 - ref.naive_auc(mem.tolist(), non.tolist()))
    assert metrics.auc(-mem, -non) == pytest.approx(ref.naive_auc(mem.tolist(), non.tolist()))
    assert metrics.balanced_accuracy(mem, non) == pytest.approx(
        ref.naive_balanced_accuracy(mem.tolist(), non.tolist())
    )
    fpr, tpr, cuts = metrics.roc(mem, non)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all(np.diff(cuts) < 0) and cuts[-1] == -np.inf
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.auc(mem, non), abs=1e-12)
    for f, t, u in zip(fpr, tpr, cuts, strict=True):
        assert f == np.mean(non > u) and t == np.mean(mem > u)
    # TPR at FPR: the empirical rule's power, or None below 1/l.
    for f in (0.001, 0.01, 0.1, 0.5):
        got = metrics.tpr_at_fpr(-mem, -non, f)
        if f * non.size < 1:
            assert got is None
        else:
            assert got == ref.empirical_threshold(mem, non, f).power


def test_balanced_accuracy_and_auc_known():
    assert metrics.balanced_accuracy([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert metrics.balanced_accuracy([1.0], [1.0]) == 0.5
    # N(1,1) vs N(0,1): best cut at 0.5, balanced accuracy Phi(0.5); AUC Phi(1/sqrt 2).
    rng = np.random.default_rng(8)
    mem, non = rng.normal(1, 1, 200_000), rng.normal(0, 1, 200_000)
    assert metrics.balanced_accuracy(mem, non) == pytest.approx(sps.norm.cdf(0.5), abs=4e-3)
    assert metrics.auc(mem, non) == pytest.approx(sps.norm.cdf(1 / math.sqrt(2)), abs=3e-3)


def naive_average_precision(s_mem, s_non):
    """Sum of (recall step) x precision, one cut at a time from the most member-like down."""
    total, last_recall = 0.0, 0.0
    for u in sorted(set(s_mem) | set(s_non), reverse=True):
        tp = sum(v >= u for v in s_mem)
        fp = sum(v >= u for v in s_non)
        recall = tp / len(s_mem)
        total += (recall - last_recall) * tp / (tp + fp)
        last_recall = recall
    return total


@pytest.mark.parametrize("seed", range(10))
def test_average_precision_matches_naive(seed):
    rng = np.random.default_rng(700 + seed)
    mem, non = ref.random_case(rng)
    want = naive_average_precision(mem.tolist(), non.tolist())
    assert metrics.average_precision(mem, non) == pytest.approx(want, abs=1e-12)
    assert metrics.average_precision([2.0, 3.0], [0.0, 1.0]) == 1.0


def test_metrics_refuse_what_is_not_a_sample():
    with pytest.raises(ValueError, match="non-member statistics is empty"):
        metrics.auc([1.0], [])
    with pytest.raises(ValueError, match="member statistics has 1 non-finite"):
        metrics.roc([np.nan], [1.0])
    with pytest.raises(ValueError, match=r"fpr must be in \(0, 1\)"):
        metrics.tpr_at_fpr([1.0], [1.0], 0.0)


# ---------------------------------------------------------------- intervals and tests


def test_clopper_pearson_known_values():
    lo, hi = metrics.clopper_pearson(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-12)
    lo, hi = metrics.clopper_pearson(10, 10)
    assert lo == pytest.approx(0.025 ** (1 / 10), abs=1e-12) and hi == 1.0
    lo, hi = metrics.clopper_pearson(5, 10)
    assert lo == pytest.approx(0.18709, abs=1e-5)
    assert hi == pytest.approx(0.81291, abs=1e-5)
    lo, hi = metrics.clopper_pearson(0, 0)
    assert math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError):
        metrics.clopper_pearson(3, 2)
    with pytest.raises(ValueError):
        metrics.clopper_pearson(1.5, 2)
    with pytest.raises(ValueError):
        metrics.clopper_pearson(1, 2, level=1.0)


def test_ks_test():
    stat, p = metrics.ks_test([0.0, 1.0, 2.0], [0.0, 1.0, 2.0])
    assert stat == 0.0 and p == 1.0
    rng = np.random.default_rng(0)
    stat, p = metrics.ks_test(rng.normal(0, 1, 500), rng.normal(1, 1, 500))
    assert stat > 0.3 and p < 1e-10


def test_t_interval_of_known_values():
    got = metrics.t_interval([1.0, 2.0, 3.0, 4.0, 5.0], 0.95)
    # t_{0.975, 4} = 2.7764451051977987; s = sqrt(2.5); half = t s / sqrt(5).
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert got["mean"] == 3.0 and got["std"] == pytest.approx(math.sqrt(2.5))
    assert got["ci"] == pytest.approx([3.0 - half, 3.0 + half], rel=1e-12)
    assert got["n"] == 5 and got["note"] is None
    # Two values: t_{0.975, 1} = 12.706204736174704, s = |a - b| / sqrt 2.
    two = metrics.t_interval([0.2, 0.4], 0.95)
    half = 12.706204736174704 * (0.2 / math.sqrt(2)) / math.sqrt(2)
    assert two["ci"] == pytest.approx([0.3 - half, 0.3 + half])
    # ... clipped to [0, 1] for a rate.
    assert metrics.t_interval([0.2, 0.4], 0.95, bounds=(0.0, 1.0))["ci"] == [0.0, 1.0]
    # Equal values: no spread, a zero-width interval.
    assert metrics.t_interval([0.7, 0.7, 0.7])["ci"] == [0.7, 0.7]
    # Undefined values are left out, and said so.
    part = metrics.t_interval([None, 1.0, 3.0])
    assert part["mean"] == 2.0 and part["n"] == 2 and "2 repetitions" in part["note"]
    assert metrics.t_interval([None, None])["mean"] is None
    one = metrics.t_interval([0.8])
    assert one["mean"] == 0.8 and one["ci"] is None and "one repetition" in one["note"]
