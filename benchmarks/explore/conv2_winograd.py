"""conv2 (16x16, 32->64, batch 64) forward + backward per step inside a 10-step lax.scan.

    python benchmarks/explore/conv2_winograd.py

im2col (jaxmia.models.layers' autodiff path) against Winograd F(2x2,3x3) and F(4x4,3x3)
(jaxmia.models.winograd, hand-written VJP).  The scan carries y, dx and the updated
kernel, as training does.  Prints medians of 20 calls, alternating.
"""

from __future__ import annotations

import os
import statistics
import time

import jax

from jaxmia.models import winograd
from jaxmia.models.layers import _im2col_conv

STEPS = 10


def make(conv):
    def body(carry, _):
        x, k = carry
        y, vjp = jax.vjp(conv, x, k)
        dx, dk = vjp(y)
        return (x + 1e-3 * dx, k - 1e-3 * dk), None

    return jax.jit(lambda x, k: jax.lax.scan(body, (x, k), None, length=STEPS)[0])


def main():
    x = jax.random.normal(jax.random.key(0), (64, 16, 16, 32))
    k = jax.random.normal(jax.random.key(1), (3, 3, 32, 64)) / 17
    impls = {
        "im2col": make(_im2col_conv),
        "winograd F(2,3)": make(lambda a, b: winograd.conv3x3(a, b, 2)),
        "winograd F(4,3)": make(lambda a, b: winograd.conv3x3(a, b, 4)),
    }
    times = {name: [] for name in impls}
    for f in impls.values():
        jax.block_until_ready(f(x, k))
    for _ in range(20):
        for name, f in impls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(x, k))
            times[name].append((time.perf_counter() - t0) / STEPS * 1e3)
    print(f"load {os.getloadavg()[0]:.2f}")
    for name, t in times.items():
        print(f"{name:18s} {statistics.median(t):6.2f} ms/step (min {min(t):.2f})")


if __name__ == "__main__":
    main()
