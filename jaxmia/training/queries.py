"""Deterministic query views of a scored image: mirrors and reflect-padded shifts.

LiRA (Carlini et al. 2022) scores each image and its horizontal mirror; RMIA's
code (Zarifzadeh et al. 2024, privacytrustlab/ml_privacy_meter
``research/2023_rmia/scripts/inference.py``, after LiRA's ``inference.py``)
offers 2, 18 and 50 queries: the image and its mirror, each shifted by every
(dy, dx) in [-s, s]^2 after reflect padding by s pixels (s = 0, 1, 2).

Query q of ``Q`` queries is the triple ``query_offsets(Q)[q] = (mirror, dy,
dx)``: the view is the image, mirrored left-right if ``mirror``, padded by s
pixels with ``reflect`` (the edge pixel is not repeated: numpy's and
TensorFlow's ``REFLECT``), and cropped back to H x W at rows s+dy.. and
columns s+dx..; so view[i, j] = padded[i + s + dy, j + s + dx] and the content
moves up by dy and left by dx.  Query 0 is always the plain image (0, 0, 0);
the others follow in the reference code's order (mirror outer, then dy, then
dx), with the plain image taken out.

Every view is a permutation of the image's pixels, so it commutes exactly with
the per-pixel normalisation: the views of a normalised batch are bit for bit
the normalised views.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

__all__ = ["max_shift", "query_offsets", "query_view"]


def max_shift(queries: int) -> int:
    """s, the largest shift in pixels of ``queries`` queries: 1 and 2 -> 0, 18 -> 1, 50 -> 2.

    Any count 1 or 2 (2s+1)^2 works; the configuration offers 1, 2, 18 and 50.

    Raises:
      ValueError: ``queries`` is neither 1 nor twice an odd square.
    """
    if queries == 1:
        return 0
    side = math.isqrt(queries // 2) if queries >= 2 else 0
    if queries < 2 or queries % 2 or side * side != queries // 2 or side % 2 == 0:
        raise ValueError(f"queries must be 1 or 2 (2s+1)^2 (2, 18, 50, ...), got {queries}")
    return (side - 1) // 2


def query_offsets(queries: int) -> tuple[tuple[int, int, int], ...]:
    """The (mirror, dy, dx) of every query, query 0 = (0, 0, 0), the plain image.

    Raises:
      ValueError: as ``max_shift``.
    """
    s = max_shift(queries)
    if queries == 1:
        return ((0, 0, 0),)
    grid = [
        (m, dy, dx)
        for m in (0, 1)
        for dy in range(-s, s + 1)
        for dx in range(-s, s + 1)
        if (m, dy, dx) != (0, 0, 0)
    ]
    return ((0, 0, 0), *grid)


def query_view(x, q, queries: int):
    """View q of a batch: float[B, H, W, C] -> float[B, H, W, C], the same dtype.

    ``q`` may be a traced int32 scalar in [0, queries) (the views of one batch
    are taken in a ``lax.map`` over q); ``queries`` is static.  The padded
    image and its mirror are built once per call and the view is a dynamic
    slice of one of them: no arithmetic touches a pixel.
    """
    s = max_shift(queries)
    table = jnp.asarray(query_offsets(queries), jnp.int32)  # int32[Q, 3]
    mirror, dy, dx = table[q, 0], table[q, 1], table[q, 2]
    padded = jnp.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), mode="reflect") if s else x
    # Reflect padding is symmetric, so mirroring the padded image equals padding the mirror.
    both = jnp.stack([padded, padded[:, :, ::-1]])
    b, h, w, c = x.shape
    return lax.dynamic_slice(both[mirror], (0, s + dy, s + dx, 0), (b, h, w, c))
