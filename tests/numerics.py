"""Float comparisons for the numerical tests, with tolerances taken from the computation.

Two float32 programs that compute the same function (a vmapped chunk and one
model alone, two chunk widths, two convolution formulations, another CPU's
instruction set) round differently: XLA orders a sum by the vector width it
compiles for, so the last bits of a result depend on the program and the CPU.
What they share is the *size* of that rounding, which scales with the values
that were summed, not with each output element.  So every comparison here is

    max |got - want|  <=  bound * scale

with ``scale`` the largest magnitude of the reference (or a scale the caller
names, e.g. one nat for a cross-entropy, whose rounding is absolute), and
``bound`` a multiple of float32's unit roundoff 2**-24 ~ 6e-8 that the calling
test justifies in one line.  An element-wise ``rtol`` fails on the small
elements of an array whose large elements set the rounding (the AMD EPYC
failure of issue 18: 3.2e-4 on an element of 13.6 in an array whose scale is
200, i.e. 1.6e-6 of the scale).

Bit-exact comparisons (``np.testing.assert_array_equal``) stay where the very
same program runs twice, e.g. a resumed run against an uninterrupted one.

Set ``JAXMIA_TOLERANCE_LOG=path`` to append one JSON line per comparison (the
test, what was compared, the measured error and its bound): that is how
``benchmarks/tolerances.py`` measures the worst deviation under each ISA.
"""

from __future__ import annotations

import json
import os

import numpy as np

F32_UNIT_ROUNDOFF = 2.0**-24  # half an ulp of 1.0 in float32: ~6.0e-8


def scaled_error(got, want, scale=None) -> float:
    """max |got - want| / scale, in float64; scale defaults to max |want| (1 if that is 0)."""
    g = np.asarray(got, np.float64)
    w = np.asarray(want, np.float64)
    if g.shape != w.shape:
        raise AssertionError(f"shapes differ: {g.shape} vs {w.shape}")
    if scale is None:
        scale = float(np.abs(w).max()) if w.size else 1.0
    scale = scale if scale > 0 else 1.0
    if not (np.isfinite(g).all() and np.isfinite(w).all()):
        same = np.array_equal(np.isnan(g), np.isnan(w)) and np.array_equal(
            g[~np.isfinite(g)], w[~np.isfinite(w)]
        )
        if not same:
            return float("inf")
        keep = np.isfinite(w)
        g, w = g[keep], w[keep]
    return float(np.abs(g - w).max() / scale) if g.size else 0.0


def _record(what: str, error: float, bound: float) -> None:
    path = os.environ.get("JAXMIA_TOLERANCE_LOG")
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
    line = {"test": test, "what": what, "error": error, "bound": bound}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def assert_close(got, want, bound: float, *, scale=None, what: str = "") -> float:
    """Asserts max |got - want| <= bound * scale (see the module docstring); returns the
    measured max |got - want| / scale."""
    error = scaled_error(got, want, scale)
    _record(what, error, bound)
    assert error <= bound, (
        f"{what or 'arrays'}: max |got - want| is {error:.3g} of the scale, above the bound "
        f"{bound:.3g}"
    )
    return error


def assert_tree_close(got, want, bound: float, *, what: str = "") -> float:
    """``assert_close`` leaf by leaf over two pytrees of arrays with the same structure,
    each leaf on its own scale (a kernel and a bias have different magnitudes).
    Returns the largest measured error."""
    import jax

    got_leaves = dict(jax.tree_util.tree_leaves_with_path(got))
    worst = 0.0
    for path, w in jax.tree_util.tree_leaves_with_path(want):
        name = f"{what}{jax.tree_util.keystr(path)}"
        worst = max(worst, assert_close(got_leaves[path], w, bound, what=name))
    return worst
