"""Naive reimplementations of the reference-model attacks, from their formulas, one pair at a time.

Plain Python loops over target models, examples, queries and population points,
the normal density and distribution function written out with ``math``: an
independent check of jaxmia/attack/lira.py, rmia.py and the protocol, slow and
obvious on purpose.  Signals are float arrays [models, examples, queries].
"""

from __future__ import annotations

import math

import numpy as np


def normal_logpdf(x: float, mu: float, sd: float) -> float:
    return -0.5 * math.log(2 * math.pi * sd * sd) - (x - mu) ** 2 / (2 * sd * sd)


def normal_logcdf(z: float) -> float:
    return math.log(0.5 * math.erfc(-z / math.sqrt(2)))


def _center(values: list[float], center: str) -> float:
    v = sorted(values)
    if center == "mean":
        return sum(v) / len(v)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((x - mean) ** 2 for x in values) / len(values))


def _side(keep, phi, n, q, side):
    return [float(phi[r, n, q]) for r in range(phi.shape[0]) if bool(keep[r, n]) == side]


def _pooled_std(keep, phi, side):
    r, n, q = phi.shape
    return _std([float(phi[i, j, k]) for i in range(r) for j in range(n) for k in range(q)
                 if bool(keep[i, j]) == side])  # fmt: skip


def lira_online(keep, phi, target, variance, center="median"):
    """float64[K, N]: mean over queries of log N(t; mu_in, s_in) - log N(t; mu_out, s_out)."""
    k_n, n_n, q_n = target.shape
    out = np.full((k_n, n_n), np.nan)
    fixed = _pooled_std(keep, phi, True) if variance == "fixed" else None
    for n in range(n_n):
        fits = []
        for q in range(q_n):
            ins, outs = _side(keep, phi, n, q, True), _side(keep, phi, n, q, False)
            if not ins or not outs:
                break
            s_in = fixed if fixed is not None else _std(ins)
            s_out = fixed if fixed is not None else _std(outs)
            if s_in <= 0 or s_out <= 0:
                break
            fits.append((_center(ins, center), s_in, _center(outs, center), s_out))
        if len(fits) < q_n:
            continue
        for k in range(k_n):
            ratios = [
                normal_logpdf(target[k, n, q], mi, si) - normal_logpdf(target[k, n, q], mo, so)
                for q, (mi, si, mo, so) in enumerate(fits)
            ]
            out[k, n] = sum(ratios) / q_n
    return out


def lira_offline(keep, phi, target, variance, center="median", test="one_sided"):
    """float64[K, N]: mean over queries of log Phi((t - mu_out)/s_out), or -log N(t; mu, s)."""
    k_n, n_n, q_n = target.shape
    out = np.full((k_n, n_n), np.nan)
    fixed = _pooled_std(keep, phi, False) if variance == "fixed" else None
    for n in range(n_n):
        fits = []
        for q in range(q_n):
            outs = _side(keep, phi, n, q, False)
            if not outs:
                break
            s = fixed if fixed is not None else _std(outs)
            if s <= 0:
                break
            fits.append((_center(outs, center), s))
        if len(fits) < q_n:
            continue
        for k in range(k_n):
            vals = []
            for q, (mu, s) in enumerate(fits):
                t = float(target[k, n, q])
                vals.append(
                    normal_logcdf((t - mu) / s) if test == "one_sided" else -normal_logpdf(t, mu, s)
                )
            out[k, n] = sum(vals) / q_n
    return out


def rmia(keep, p_ref, p_ref_pop, p_target, p_target_pop, gamma, a=None):
    """float64[K, N]: the share of population points z with a strict majority of queries
    saying [p(x|t)/p(x)] / [p(z|t)/p(z)] > gamma; online (a None): p(.) the mean over all
    references; offline: (1+a)/2 * the mean over OUT references + (1-a)/2."""
    k_n, n_n, q_n = p_target.shape
    r_n, z_n = p_ref.shape[0], p_ref_pop.shape[1]
    out = np.full((k_n, n_n), np.nan)
    for k in range(k_n):
        a_k = None if a is None else float(np.broadcast_to(a, (k_n,))[k])
        for n in range(n_n):
            px = []
            for q in range(q_n):
                if a_k is None:
                    px.append(sum(p_ref[r, n, q] for r in range(r_n)) / r_n)
                else:
                    outs = [p_ref[r, n, q] for r in range(r_n) if not keep[r, n]]
                    px.append((1 + a_k) / 2 * (sum(outs) / len(outs)) + (1 - a_k) / 2 if outs
                              else math.nan)  # fmt: skip
            if any(math.isnan(v) for v in px):
                continue
            hits = 0
            for z in range(z_n):
                votes = 0
                for q in range(q_n):
                    pz = sum(p_ref_pop[r, z, q] for r in range(r_n)) / r_n
                    if a_k is not None:
                        pz = (1 + a_k) / 2 * pz + (1 - a_k) / 2
                    lr = (p_target[k, n, q] / px[q]) / (p_target_pop[k, z, q] / pz)
                    votes += lr > gamma
                hits += 2 * votes > q_n
            out[k, n] = hits / z_n
    return out


def auc(member, nonmember) -> float:
    """P(member > nonmember) + P(tie)/2 over every pair, by counting."""
    wins = 0.0
    for m in member:
        for x in nonmember:
            wins += 1.0 if m > x else 0.5 if m == x else 0.0
    return wins / (len(member) * len(nonmember))


def tpr_at_fpr(member, nonmember, fpr: float):
    """The TPR of the cut at the (k+1)-th largest non-member, k the largest count with
    k / n <= fpr; None when k = 0."""
    n = len(nonmember)
    k = max(i for i in range(n + 1) if i <= fpr * n + 1e-12)
    if k == 0:
        return None
    cut = sorted(nonmember, reverse=True)[k]
    return sum(m > cut for m in member) / len(member)
