"""Tests for jaxmia.attack.bounds: the ε lower bound against a bisection and jax-privacy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxmia.attack import bounds, metrics

import reference_stats as ref

# ---------------------------------------------------------------- epsilon lower bound


def test_clopper_pearson_upper_matches_bisection():
    k, n = np.array([0, 1, 3, 7, 10]), np.array([10, 10, 20, 7, 10])
    got = bounds.clopper_pearson_upper(k, n, 0.975)
    want = [ref.naive_cp_upper(int(a), int(b), 0.975) for a, b in zip(k, n, strict=True)]
    assert got.shape == (5,) and got[3] == got[4] == 1.0  # k = n: nothing bounds the rate
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_epsilon_lower_bound_formula():
    for fp, nn, fn, nm, delta in [(0, 10, 0, 10, 0.0), (2, 50, 5, 40, 0.0), (1, 30, 3, 30, 1e-3)]:
        eps, sym, fpr_ub, fnr_ub = bounds.epsilon_lower_bound(fp, nn, fn, nm, delta=delta)
        f_ub, n_ub = ref.naive_cp_upper(fp, nn, 0.975), ref.naive_cp_upper(fn, nm, 0.975)
        assert float(fpr_ub) == pytest.approx(f_ub, abs=1e-9)
        assert float(fnr_ub) == pytest.approx(n_ub, abs=1e-9)
        want = max(0.0, math.log((1 - delta - n_ub) / f_ub))
        assert float(eps) == pytest.approx(want, abs=1e-8)
        want_sym = max(want, math.log((1 - delta - f_ub) / n_ub))
        assert float(sym) == pytest.approx(want_sym, abs=1e-8)
    # Every prediction right on E pairs: FPR_ub = FNR_ub = 1 - 0.025^(1/E).
    for e in (1, 10, 100, 1000):
        b = 1 - 0.025 ** (1 / e)
        assert float(bounds.epsilon_lower_bound(0, e, 0, e)[0]) == pytest.approx(
            max(0.0, math.log((1 - b) / b)), rel=1e-9
        )
    # Worse than chance: 0, never negative. A vector of counts works elementwise.
    assert float(bounds.epsilon_lower_bound(10, 10, 10, 10)[1]) == 0.0
    v = bounds.epsilon_lower_bound(np.array([0, 5]), 10, np.array([0, 5]), 10)[0]
    assert v.shape == (2,) and v[1] == 0.0 and v[0] > 0
    with pytest.raises(ValueError, match="delta"):
        bounds.epsilon_lower_bound(0, 1, 0, 1, delta=1.0)


def test_epsilon_matches_jax_privacy():
    auditing = pytest.importorskip("jax_privacy.auditing")
    rng = np.random.default_rng(21)
    for _ in range(5):
        s_in, s_out = rng.normal(2, 1, 40), rng.normal(0, 1, 60)
        u = 1.3  # member iff s > u; no score equals it, so >= and > agree
        fp, fn = int(np.sum(s_out > u)), int(np.sum(s_in <= u))
        ours = float(bounds.epsilon_lower_bound(fp, 60, fn, 40, confidence=0.95)[0])
        auditor = auditing.CanaryScoreAuditor(s_in, s_out)
        theirs = auditor.epsilon_clopper_pearson(0.05, threshold_strategy=auditing.Explicit(u))
        assert ours == pytest.approx(float(theirs), abs=1e-9)
        # jax-privacy takes the ROC's convex hull (classifiers that randomise between two
        # thresholds), so its AUC and TPR at FPR are at least ours, the plain ROC's.
        assert metrics.auc(s_in, s_out) <= auditor.attack_auroc() + 1e-12
        for f in (0.05, 0.1):
            assert metrics.tpr_at_fpr(s_in, s_out, f) <= auditor.tpr_at_given_fpr(f) + 1e-12


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
            eps = float(bounds.epsilon_lower_bound(0, n, 0, n, confidence=0.95)[0])
            assert eps == pytest.approx(best, abs=0.005), n
