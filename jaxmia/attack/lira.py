"""LiRA, the likelihood-ratio attack (Carlini et al. 2022), and the loss attack, on references.

Each function has the signature of signals.py: (keep bool[R, N], reference
Signals, target Signals) -> float64[K, N], high = member, the signal being
LiRA's φ (``signals.phi_signal``), or the loss for ``loss_attack``.  They
follow the reference code (tensorflow/privacy ``research/mi_lira_2021/plot.py``,
``generate_ours``, ``generate_ours_offline``, ``generate_global``):

* the centre of each example's IN and OUT φ is their median (``center``),
  their spread the standard deviation with ddof 0, per example and query;
* ``variance="fixed"`` is one σ for every example and query: the standard
  deviation (ddof 0) of all the references' IN φ over every example and query
  (not around each example's centre), used for both sides of the online
  attack; the offline attack takes it from the OUT φ.  ``"auto"`` is fixed
  below ``AUTO_PER_EXAMPLE_FROM`` (64) reference models and per example from
  there on (the reference code's README: fixed variance is best with few
  models; LeakPro switches below 32);
* queries are combined by the mean of their per-query log ratios.

Where the reference code adds 1e-30 to a zero σ, here a pair whose example has
too few references for its statistics (no IN or no OUT reference; for per-example
variances a σ of 0, which one reference always gives) is NaN: it cannot be scored.

scipy is imported inside the functions that use it, so that the configuration
can read the option names without loading it.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from jaxmia.attack.signals import Signals, check_attack_inputs
from jaxmia.attack.thresholds import AUTO_PER_EXAMPLE_FROM, VARIANCES, resolve_variance

__all__ = [
    "AUTO_PER_EXAMPLE_FROM",
    "CENTERS",
    "OFFLINE_TESTS",
    "VARIANCES",
    "GaussianFits",
    "fit_gaussians",
    "lira_offline",
    "lira_online",
    "loss_attack",
    "resolve_variance",
]

CENTERS = ("median", "mean")
OFFLINE_TESTS = ("one_sided", "two_sided")


@dataclasses.dataclass(frozen=True)
class GaussianFits:
    """Per-example Gaussians of the references' φ on one side (IN or OUT).

    Attributes:
      center: float64[N, Q], the median (or mean) of the side's φ; NaN without any.
      scale: float64[N, Q], per-example σ (ddof 0), or the one fixed σ broadcast.
      count: int64[N], how many references each example has on this side.
    """

    center: np.ndarray
    scale: np.ndarray
    count: np.ndarray


def fit_gaussians(keep, phi, side: bool, *, variance: str, center: str, fixed_from=None):
    """The Gaussians of the IN (``side`` True) or OUT references of every example.

    Args:
      keep: bool[R, N]; phi: float64[R, N, Q] the references' signal.
      variance: ``per_example`` or ``fixed`` (resolved).
      center: ``median`` or ``mean``.
      fixed_from: for ``fixed``, the side whose pooled std is σ (True: IN, the
        online attack's choice; False: OUT, the offline one's); default ``side``.

    Returns:
      GaussianFits.
    """
    if center not in CENTERS:
        raise ValueError(f"center must be one of {', '.join(CENTERS)}; got {center!r}")
    keep = np.asarray(keep, bool)
    mask = keep == side
    values = np.where(mask[:, :, None], phi, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: no reference
        mid = np.nanmedian(values, axis=0) if center == "median" else np.nanmean(values, axis=0)
        if variance == "fixed":
            source = side if fixed_from is None else fixed_from
            pooled = phi[keep == source]  # float64[n, Q]: every example's and query's values
            sigma = float(np.std(pooled)) if pooled.size else np.nan
            scale = np.full(mid.shape, sigma)
        else:
            scale = np.nanstd(values, axis=0)
    return GaussianFits(mid, scale, mask.sum(axis=0))


def _usable(fits: GaussianFits) -> np.ndarray:
    """bool[N]: examples whose fit has a reference and a positive σ in every query."""
    return (fits.count > 0) & (fits.scale > 0).all(axis=1) & np.isfinite(fits.center).all(axis=1)


def loss_attack(keep, reference: Signals, target: Signals) -> np.ndarray:
    """The global loss attack (Yeom et al. 2018) as a score: minus the target model's
    cross-entropy, averaged over the queries (as the reference code's global
    threshold averages its score); ``reference`` plays no part.

    Returns: float64[K, N].
    """
    check_attack_inputs(keep, reference, target)
    return -target.examples.mean(axis=2)


def lira_online(
    keep, reference: Signals, target: Signals, *, variance: str = "auto", center: str = "median"
) -> np.ndarray:
    """log N(φ; μ_in, σ_in) - log N(φ; μ_out, σ_out), averaged over the queries.

    μ and σ per example and query from the references where it is IN and OUT;
    with fixed variance σ_in = σ_out = the pooled std of all IN φ.

    Returns:
      float64[K, N]; NaN for an example without both IN and OUT references (or,
      per example, a zero σ).

    Raises:
      ValueError: shapes that disagree; an unknown variance or center.
    """
    from scipy import stats as sps

    keep = check_attack_inputs(keep, reference, target)
    var = resolve_variance(variance, reference.n_models)
    phi = reference.examples
    fin = fit_gaussians(keep, phi, True, variance=var, center=center)
    fout = fit_gaussians(keep, phi, False, variance=var, center=center, fixed_from=True)
    ok = _usable(fin) & _usable(fout)
    t = target.examples
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = sps.norm.logpdf(t, fin.center, fin.scale) - sps.norm.logpdf(
            t, fout.center, fout.scale
        )
    score = ratio.mean(axis=2)
    score[:, ~ok] = np.nan
    return score


def lira_offline(
    keep,
    reference: Signals,
    target: Signals,
    *,
    variance: str = "auto",
    center: str = "median",
    test: str = "one_sided",
) -> np.ndarray:
    """The offline attack, from the OUT references only, averaged over the queries.

    ``one_sided`` (the paper's test): log Φ((φ - μ_out) / σ_out), high when φ lies
    above the OUT distribution.  ``two_sided`` (the reference code's
    ``generate_ours_offline``): -log N(φ; μ_out, σ_out), high when φ lies far
    from it on either side.

    Returns:
      float64[K, N]; NaN for an example without OUT references (or a zero σ).

    Raises:
      ValueError: shapes that disagree; an unknown variance, center or test.
    """
    from scipy import stats as sps

    keep = check_attack_inputs(keep, reference, target)
    if test not in OFFLINE_TESTS:
        raise ValueError(f"test must be one of {', '.join(OFFLINE_TESTS)}; got {test!r}")
    var = resolve_variance(variance, reference.n_models)
    fout = fit_gaussians(keep, reference.examples, False, variance=var, center=center)
    ok = _usable(fout)
    t = target.examples
    with np.errstate(invalid="ignore", divide="ignore"):
        if test == "one_sided":
            per_query = sps.norm.logcdf((t - fout.center) / fout.scale)
        else:
            per_query = -sps.norm.logpdf(t, fout.center, fout.scale)
    score = per_query.mean(axis=2)
    score[:, ~ok] = np.nan
    return score
