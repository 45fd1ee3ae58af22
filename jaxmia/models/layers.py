"""Layers the models share: 3x3 convolutions in three formulations, a dense layer, PyTorch's init.

Three ways to compute a 3x3 convolution give the same function (and the same
parameter tree, so a model can switch between them):

* ``"xla"``: ``lax.conv_general_dilated``.  Fast on GPU.  Under ``jax.vmap``
  XLA:CPU rewrites it into a grouped convolution, which is slow there.
* ``"im2col"``: zero padding, nine shifted views concatenated on the channel axis,
  one matrix product.  On CPU this is a plain GEMM, which XLA:CPU runs well.
  A layer whose input is the image, which nothing differentiates
  (``input_is_data=True``), uses a custom VJP that computes only the kernel
  gradient, as one ``patches.T @ dy`` product (XLA's own transpose of the
  product picked a slower dot for the CNN's 27-deep case: 3 ms of a 34 ms step
  on the 2-core CPU).
* ``"winograd"``: Winograd F(4x4, 3x3) with a hand-written backward
  (jaxmia/models/winograd.py), 4x fewer multiplications than im2col (F(2x2, 3x3)
  in bfloat16, see WINOGRAD_TILE); a layer on the image stays im2col as above
  (with 3 input channels Winograd's transforms cost more than they save).  Equal
  to the others up to Winograd's rounding, a few 1e-6 of the output scale.

Initialisation follows PyTorch's defaults for Conv2d and Linear (weights and
biases uniform in +-1/sqrt(fan_in)), so that the PyTorch baseline and jaxmia start
from the same distribution.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxmia.models import winograd

CONV_IMPLS = ("xla", "im2col", "winograd")
# Winograd tile per compute dtype: F(4x4, 3x3) is faster than F(2x2, 3x3) in
# float32 (benchmarks/README.md), but its transforms amplify bfloat16's rounding
# to ~6% of the output scale; F(2x2, 3x3) stays at bf16's own ~0.5%.
WINOGRAD_TILE = {jnp.dtype(jnp.float32): 4, jnp.dtype(jnp.bfloat16): 2}


def torch_weight_init(key, shape, dtype=jnp.float32):
    """PyTorch's default weight init for a kernel of ``shape`` (fan-in = all but the last axis).

    kaiming_uniform(a=sqrt(5)), which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    fan_in = math.prod(shape[:-1])
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_bias_init(fan_in: int):
    """PyTorch's default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan-in of the layer."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _im2col_3x3(x: jax.Array) -> jax.Array:
    """float[B, H, W, C] -> float[B, H, W, 9*C]; patch order (dy, dx, c)."""
    h, w = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    views = [xp[:, dy : dy + h, dx : dx + w, :] for dy in range(3) for dx in range(3)]
    return jnp.concatenate(views, axis=-1)


def _im2col_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    cin, cout = kernel.shape[2], kernel.shape[3]
    return _im2col_3x3(x) @ kernel.reshape(9 * cin, cout)


@jax.custom_vjp
def _im2col_conv_const_input(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """_im2col_conv for an input that is data: its input cotangent is zero."""
    return _im2col_conv(x, kernel)


def _const_input_fwd(x, kernel):
    patches = _im2col_3x3(x)
    cin, cout = kernel.shape[2], kernel.shape[3]
    return patches @ kernel.reshape(9 * cin, cout), (patches, kernel)


def _const_input_bwd(res, dy):
    patches, kernel = res
    cin, cout = kernel.shape[2], kernel.shape[3]
    d_kernel = patches.reshape(-1, 9 * cin).T @ dy.reshape(-1, cout)
    d_x = jnp.zeros(patches.shape[:3] + (cin,), patches.dtype)  # input treated as constant
    return d_x, d_kernel.reshape(kernel.shape)


_im2col_conv_const_input.defvjp(_const_input_fwd, _const_input_bwd)


class Conv3x3(nn.Module):
    """3x3 convolution, stride 1, SAME padding: float[B, H, W, Cin] -> dtype[B, H, W, features].

    Parameters: ``kernel`` float32[3, 3, Cin, features] and ``bias``
    float32[features], the same for every ``impl`` (one of CONV_IMPLS; another
    raises ValueError when the layer is called).  ``input_is_data=True`` (a
    first layer) declares that no gradient with respect to the input is wanted,
    as for the images; it is then reported as zero.
    """

    features: int
    impl: str = "xla"
    dtype: jnp.dtype = jnp.float32
    input_is_data: bool = False

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        kernel = self.param("kernel", torch_weight_init, (3, 3, cin, self.features))
        bias = self.param("bias", torch_bias_init(9 * cin), (self.features,))
        if self.input_is_data:
            x = lax.stop_gradient(x)
        x = x.astype(self.dtype)
        kernel = kernel.astype(self.dtype)
        if self.impl in ("im2col", "winograd") and self.input_is_data:
            y = _im2col_conv_const_input(x, kernel)
        elif self.impl == "im2col":
            y = _im2col_conv(x, kernel)
        elif self.impl == "winograd":
            y = winograd.conv3x3(x, kernel, WINOGRAD_TILE[jnp.dtype(self.dtype)])
        elif self.impl == "xla":
            y = lax.conv_general_dilated(
                x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        else:
            raise ValueError(f"unknown conv impl {self.impl!r}; expected one of {CONV_IMPLS}")
        return y + bias.astype(self.dtype)


class Dense(nn.Module):
    """Fully connected: float[..., Fin] -> dtype[..., features], with PyTorch's Linear init."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        kernel = self.param("kernel", torch_weight_init, (fan_in, self.features))
        bias = self.param("bias", torch_bias_init(fan_in), (self.features,))
        return x.astype(self.dtype) @ kernel.astype(self.dtype) + bias.astype(self.dtype)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """float[B, H, W, C] -> float[B, H/2, W/2, C], the maximum of each 2x2 block (H, W even)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
