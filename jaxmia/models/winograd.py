"""3x3 convolutions by Winograd minimal filtering (Lavin & Gray 2016), with a hand-written VJP.

``conv3x3(x, kernel, m)`` equals ``lax.conv_general_dilated(x, kernel, (1, 1), "SAME")``
for NHWC inputs and HWIO kernels (cross-correlation, as in CNNs).  Each output
tile of m x m pixels is computed from an (m+2) x (m+2) input tile as

    Y = A^T [ (G g G^T) * (B^T d B) ] A

summed over input channels, so the bulk of the work is one batched matrix
product over the (m+2)^2 tile positions, ``V[t] @ U[t]`` with
V = float[t, tiles, Cin] and U = float[t, Cin, Cout]: F(4x4, 3x3) (m = 4) needs
4x fewer multiplications than im2col, F(2x2, 3x3) (m = 2) 2.25x.

The two transforms (input B^T d B, output A^T M A) are each one small
Kronecker-matrix product over the tile positions, which XLA:CPU runs as a GEMM.
The backward pass is written out (``jax.custom_vjp``) instead of differentiated:
autodiff through the overlapping tile extraction builds many padding fusions
(benchmarks/README.md).  Given dY:

    dM = kron(A, A) dY            (the output transform's transpose)
    dU[t] = V[t]^T dM[t]          -> d kernel = G^T dU G
    dV[t] = dM[t] U[t]^T          -> d tiles = kron(B, B) dV, overlapping tiles added back

Rounding: the transforms of F(4x4, 3x3) have entries up to 8 (A) and 5 (B), and
G has 1/6 and 1/24, so intermediate values are larger than the result and
float32 Winograd differs from a direct convolution by a few 1e-6 of the output
scale (F(2x2, 3x3): about 1e-7); tests/test_model.py checks that bound.
For bfloat16 inputs the transforms run in float32 and only the batched product
takes the bfloat16 operands (accumulated in float32).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Transform matrices of F(m x m, 3 x 3): B^T [(m+2), (m+2)], G [(m+2), 3], A^T [m, (m+2)].
_MATRICES = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    ),
}
TILE_SIZES = tuple(_MATRICES)

_HI = lax.Precision.HIGHEST


def _mats(m: int):
    bt, g, at = (np.asarray(a, np.float64) for a in _MATRICES[m])
    # Kronecker forms act on a flattened (row, column) tile position.
    kb = np.kron(bt, bt).astype(np.float32)  # [(m+2)^2, (m+2)^2]
    ka = np.kron(at, at).astype(np.float32)  # [m^2, (m+2)^2]
    return kb, g.astype(np.float32), ka


def _tiles_1d(xp: jax.Array, axis: int, m: int, n_tiles: int) -> jax.Array:
    """Overlapping windows of m+2 along `axis` with stride m -> new axes (tile, m+2)."""
    # Positions 0..m-1 of every tile are a plain reshape; positions m, m+1 are the
    # first two of the next window, i.e. the same reshape shifted by m.
    lo = lax.slice_in_dim(xp, 0, n_tiles * m, axis=axis)
    hi = lax.slice_in_dim(xp, m, n_tiles * m + m, axis=axis)
    shape = xp.shape[:axis] + (n_tiles, m) + xp.shape[axis + 1 :]
    lo, hi = lo.reshape(shape), hi.reshape(shape)
    hi = lax.slice_in_dim(hi, 0, 2, axis=axis + 1)
    return jnp.concatenate([lo, hi], axis=axis + 1)


def _untiles_1d(d: jax.Array, axis: int, m: int) -> jax.Array:
    """Transpose of _tiles_1d: axes (tile, m+2) at `axis` -> n_tiles*m + m, overlaps added."""
    n_tiles = d.shape[axis]
    lo = lax.slice_in_dim(d, 0, m, axis=axis + 1)
    hi = lax.slice_in_dim(d, m, m + 2, axis=axis + 1)
    pad_hi = [(0, 0, 0)] * d.ndim
    pad_hi[axis + 1] = (0, m - 2, 0)
    hi = lax.pad(hi, jnp.zeros((), d.dtype), pad_hi)
    shape = d.shape[:axis] + (n_tiles * m,) + d.shape[axis + 2 :]
    lo, hi = lo.reshape(shape), hi.reshape(shape)
    pad_lo = [(0, 0, 0)] * lo.ndim
    pad_lo[axis] = (0, m, 0)
    pad_sh = [(0, 0, 0)] * lo.ndim
    pad_sh[axis] = (m, 0, 0)
    zero = jnp.zeros((), d.dtype)
    return lax.pad(lo, zero, pad_lo) + lax.pad(hi, zero, pad_sh)


def _geometry(x_shape, m):
    _, h, w, _ = x_shape
    return -(-h // m), -(-w // m)


def _input_transform(x: jax.Array, m: int) -> jax.Array:
    """float32[B, H, W, C] -> V float32[(m+2)^2, B*th*tw, C]."""
    b, h, w, c = x.shape
    th, tw = _geometry(x.shape, m)
    t = m + 2
    # SAME padding of 1, then up to th*m + m rows/columns so every window exists.
    xp = jnp.pad(x, ((0, 0), (1, th * m + m - h - 1), (1, tw * m + m - w - 1), (0, 0)))
    d = _tiles_1d(_tiles_1d(xp, 1, m, th), 3, m, tw)  # [B, th, t, tw, t, C]
    d = d.transpose(2, 4, 0, 1, 3, 5).reshape(t * t, -1)
    kb, _, _ = _mats(m)
    v = jnp.dot(kb, d, precision=_HI)
    return v.reshape(t * t, b * th * tw, c)


def _input_transform_t(dv: jax.Array, x_shape, m: int) -> jax.Array:
    """Transpose of _input_transform: float32[(m+2)^2, P, C] -> float32[B, H, W, C]."""
    b, h, w, c = x_shape
    th, tw = _geometry(x_shape, m)
    t = m + 2
    kb, _, _ = _mats(m)
    dd = jnp.dot(kb.T, dv.reshape(t * t, -1), precision=_HI)
    dd = dd.reshape(t, t, b, th, tw, c).transpose(2, 3, 0, 4, 1, 5)  # [B, th, t, tw, t, C]
    dxp = _untiles_1d(_untiles_1d(dd, 3, m), 1, m)  # [B, th*m+m, tw*m+m, C]
    return dxp[:, 1 : 1 + h, 1 : 1 + w, :]


def _kernel_transform(kernel: jax.Array, m: int) -> jax.Array:
    """float32[3, 3, Cin, Cout] -> U float32[(m+2)^2, Cin, Cout]."""
    _, g, _ = _mats(m)
    u = jnp.einsum("ia,jb,abcd->ijcd", g, g, kernel, precision=_HI)
    return u.reshape((m + 2) ** 2, *kernel.shape[2:])


def _kernel_transform_t(du: jax.Array, m: int) -> jax.Array:
    _, g, _ = _mats(m)
    du = du.reshape(m + 2, m + 2, *du.shape[1:])
    return jnp.einsum("ia,jb,ijcd->abcd", g, g, du, precision=_HI)


def _output_transform(mm: jax.Array, x_shape, m: int) -> jax.Array:
    """M float32[(m+2)^2, P, Cout] -> float32[B, H, W, Cout]."""
    b, h, w, _ = x_shape
    th, tw = _geometry(x_shape, m)
    cout = mm.shape[-1]
    _, _, ka = _mats(m)
    y = jnp.dot(ka, mm.reshape(mm.shape[0], -1), precision=_HI)
    y = y.reshape(m, m, b, th, tw, cout).transpose(2, 3, 0, 4, 1, 5)
    return y.reshape(b, th * m, tw * m, cout)[:, :h, :w, :]


def _output_transform_t(dy: jax.Array, m: int) -> jax.Array:
    """Transpose of _output_transform: float32[B, H, W, Cout] -> float32[(m+2)^2, P, Cout]."""
    b, h, w, cout = dy.shape
    th, tw = _geometry(dy.shape, m)
    dy = jnp.pad(dy, ((0, 0), (0, th * m - h), (0, tw * m - w), (0, 0)))
    dy = dy.reshape(b, th, m, tw, m, cout).transpose(2, 4, 0, 1, 3, 5).reshape(m * m, -1)
    _, _, ka = _mats(m)
    dm = jnp.dot(ka.T, dy, precision=_HI)
    return dm.reshape((m + 2) ** 2, b * th * tw, cout)


def _tile_products(v, u, dtype):
    """[t, P, Cin] x [t, Cin, Cout] -> float32[t, P, Cout], operands in `dtype`."""
    return lax.dot_general(
        v.astype(dtype),
        u.astype(dtype),
        (((2,), (1,)), ((0,), (0,))),
        preferred_element_type=jnp.float32,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x: jax.Array, kernel: jax.Array, m: int = 4) -> jax.Array:
    """SAME 3x3 convolution: x[B, H, W, Cin], kernel[3, 3, Cin, Cout] -> [B, H, W, Cout].

    F(m x m, 3 x 3) with m in TILE_SIZES; the result has x's dtype.
    """
    return _fwd(x, kernel, m)[0]


def _fwd(x, kernel, m):
    dtype = x.dtype
    v = _input_transform(x.astype(jnp.float32), m)
    u = _kernel_transform(kernel.astype(jnp.float32), m)
    y = _output_transform(_tile_products(v, u, dtype), x.shape, m)
    # Residuals are arrays only: x's shape follows from dy and U, the kernel's
    # dtype rides on an empty array.
    return y.astype(dtype), (v.astype(dtype), u.astype(dtype), jnp.zeros((0,), kernel.dtype))


def _conv3x3_fwd(x, kernel, m):
    y, res = _fwd(x, kernel, m)
    return y, res


def _conv3x3_bwd(m, res, dy):
    v, u, k_tag = res
    dtype = v.dtype
    x_shape = dy.shape[:3] + (u.shape[1],)
    dm = _output_transform_t(dy.astype(jnp.float32), m).astype(dtype)
    # dU[t] = V[t]^T dM[t]; dV[t] = dM[t] U[t]^T, both accumulated in float32.
    du = lax.dot_general(v, dm, (((1,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32)
    dv = lax.dot_general(dm, u, (((2,), (2,)), ((0,), (0,))), preferred_element_type=jnp.float32)
    dx = _input_transform_t(dv, x_shape, m).astype(dtype)
    dk = _kernel_transform_t(du, m).astype(k_tag.dtype)
    return dx, dk


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
