"""The accountant's ε of DP-SGD: Google's dp-accounting, RDP and PLD.

DP-SGD with Poisson sampling at rate q, noise multiplier σ and T steps is the
T-fold composition of the Poisson-subsampled Gaussian mechanism (Abadi et al.
2016; Mironov, Talwar, Zhang 2019 for its Rényi DP; Koskela et al. 2020 and
Doroshenko et al. 2022 for privacy loss distributions).  ``dp_accounting``
(``pip install 'jaxmia[dp]'``) computes its ε at a given δ two ways:

* **RDP** (``rdp.RdpAccountant``): an upper bound, looser by a few percent to
  tens of percent; over the integer orders 2..256 and 384, 512, 1024 (the
  fractional orders below 2 fail to converge for small σ and only matter for
  ε far above any audit's reach).
* **PLD** (``pld.PLDAccountant``): numerically tight up to its discretisation
  (pessimistic, value_discretization_interval 1e-4).

Host side: numpy and dp-accounting only, never JAX.
"""

from __future__ import annotations

import functools
import math

from jaxmia.errors import UserError

__all__ = ["RDP_ORDERS", "dp_sgd_epsilon", "dp_sgd_event"]

RDP_ORDERS = tuple(range(2, 257)) + (384, 512, 1024)
PLD_DISCRETIZATION = 1e-4


def _dp_accounting():
    try:
        import dp_accounting
    except ImportError:
        raise UserError(
            "dp: the accountant needs Google's dp-accounting: pip install 'jaxmia[dp]' "
            "(or pip install dp-accounting)"
        ) from None
    return dp_accounting


def dp_sgd_event(q: float, sigma: float, steps: int):
    """dp_accounting's event of DP-SGD: ``steps`` Poisson(q)-subsampled Gaussian(σ) steps."""
    dpa = _dp_accounting()
    step = dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma))
    return dpa.SelfComposedDpEvent(step, steps)


@functools.lru_cache(maxsize=256)
def dp_sgd_epsilon(q: float, sigma: float, steps: int, delta: float) -> dict:
    """The accountant's ε of DP-SGD at δ: {"rdp": float | None, "pld": float | None}.

    Args:
      q: Poisson sampling rate in (0, 1]; sigma: noise multiplier >= 0;
      steps: noisy steps >= 1; delta: in (0, 1).

    Returns:
      ε by each accountant; None where it is infinite (σ = 0: no noise, no
      guarantee).

    Raises:
      ValueError: a parameter out of range.
    """
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q}")
    if not sigma >= 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if sigma == 0:
        return {"rdp": None, "pld": None}
    dpa = _dp_accounting()
    event = dp_sgd_event(q, sigma, int(steps))
    rdp = dpa.rdp.RdpAccountant(orders=list(RDP_ORDERS))
    rdp.compose(event)
    pld = dpa.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    pld.compose(event)

    def finite(e):
        return float(e) if math.isfinite(e) else None

    return {"rdp": finite(rdp.get_epsilon(delta)), "pld": finite(pld.get_epsilon(delta))}
