"""Layers the models share: convolutions in three formulations, a dense layer, BatchNorm, inits.

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

A strided 3x3 convolution (stride 2, the ResNets' downsampling) pads one pixel
on every side, as ``torch.nn.Conv2d(padding=1)`` does (TensorFlow's "SAME" would
pad only the bottom and right, and pick other pixels); lax.conv and im2col
compute it, Winograd does not (it falls back to im2col).  A 1x1 convolution is
one matrix product over the (strided) pixels in every formulation.

Initialisation follows PyTorch's defaults for Conv2d and Linear (weights and
biases uniform in +-1/sqrt(fan_in)) unless a model names another, so that the
PyTorch baseline and jaxmia start from the same distribution.

``BatchNorm`` computes its batch statistics over the real slots of a batch only
(a ``mask`` over the batch), in float32, and keeps running averages in Flax's
``batch_stats`` collection.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

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


def flat_draw(sample, key, shape, dtype):
    """``sample(key, shape, dtype)`` drawn as one flat vector and reshaped to ``shape``.

    The very same values: JAX's threefry numbers the elements of a draw in
    row-major order whatever its shape.  But XLA:CPU compiles the flat draw in
    a fraction of the time (measured 0.9 s against 5.0 s for one 3x3x64x16
    kernel), which adds up over a ResNet's dozens of kernels.
    """
    return sample(key, (math.prod(shape),), dtype).reshape(shape)


def torch_weight_init(key, shape, dtype=jnp.float32):
    """PyTorch's default weight init for a kernel of ``shape`` (fan-in = all but the last axis).

    kaiming_uniform(a=sqrt(5)), which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    fan_in = math.prod(shape[:-1])
    bound = 1.0 / math.sqrt(fan_in)
    return flat_draw(partial(jax.random.uniform, minval=-bound, maxval=bound), key, shape, dtype)


def he_normal_fan_out(key, shape, dtype=jnp.float32):
    """N(0, 2 / fan_out) for a kernel of ``shape`` (fan-out = kernel area x out channels).

    ``jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")``; torch's
    ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``; objax's conv_args.
    """
    fan_out = math.prod(shape[:-2]) * shape[-1]
    std = jnp.sqrt(jnp.asarray(2.0 / fan_out, dtype))
    return flat_draw(jax.random.normal, key, shape, dtype) * std


def _truncated_at_2(key, shape, dtype):
    return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


def xavier_truncated_normal(key, shape, dtype=jnp.float32):
    """Glorot's truncated normal for a dense kernel [fan_in, fan_out]: variance 1 / fan_avg.

    ``variance_scaling(1.0, "fan_avg", "truncated_normal")``: a normal truncated
    at +-2 standard deviations, its std divided by the truncation's 0.8796 so that
    the variance is 2 / (fan_in + fan_out) (objax's xavier_truncated_normal).
    """
    fan_avg = (shape[0] + shape[1]) / 2
    std = jnp.sqrt(jnp.asarray(1.0 / fan_avg, dtype)) / jnp.asarray(0.87962566103423978, dtype)
    return flat_draw(_truncated_at_2, key, shape, dtype) * std


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


def _im2col_strided(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """A 3x3 convolution with one pixel of zero padding and ``stride``, as one matrix product."""
    h, w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    views = [
        xp[:, dy : dy + stride * h : stride, dx : dx + stride * w : stride, :]
        for dy in range(3)
        for dx in range(3)
    ]
    cin, cout = kernel.shape[2], kernel.shape[3]
    return jnp.concatenate(views, axis=-1) @ kernel.reshape(9 * cin, cout)


class Conv3x3(nn.Module):
    """A 3x3 (or 1x1) convolution: float[B, H, W, Cin] -> dtype[B, H/stride, W/stride, features].

    Parameters: ``kernel`` float32[k, k, Cin, features] (k = ``kernel_size``, 3
    or 1) and, with ``use_bias``, ``bias`` float32[features], the same for every
    ``impl`` (one of CONV_IMPLS; another raises ValueError when the layer is
    called).  A 3x3 kernel pads one pixel on each side (SAME at stride 1), a
    1x1 kernel none; ``stride`` is 1 or 2 (Winograd computes stride 1 only and
    leaves a strided layer to im2col).  ``input_is_data=True`` (a first layer)
    declares that no gradient with respect to the input is wanted, as for the
    images; it is then reported as zero.  ``kernel_init`` defaults to PyTorch's
    (``torch_weight_init``); the bias always takes PyTorch's.
    """

    features: int
    impl: str = "xla"
    dtype: jnp.dtype = jnp.float32
    input_is_data: bool = False
    stride: int = 1
    kernel_size: int = 3
    use_bias: bool = True
    kernel_init: Callable = torch_weight_init

    @nn.compact
    def __call__(self, x):
        cin, k = x.shape[-1], self.kernel_size
        if k not in (1, 3) or self.stride not in (1, 2):
            raise ValueError(
                f"Conv3x3 takes kernel_size 1 or 3 and stride 1 or 2, got {k}, {self.stride}"
            )
        if self.impl not in CONV_IMPLS:
            raise ValueError(f"unknown conv impl {self.impl!r}; expected one of {CONV_IMPLS}")
        kernel = self.param("kernel", self.kernel_init, (k, k, cin, self.features))
        if self.input_is_data:
            x = lax.stop_gradient(x)
        x = x.astype(self.dtype)
        kernel = kernel.astype(self.dtype)
        if k == 1 or self.stride != 1:
            y = self._other(x, kernel)
        else:
            y = self._same_3x3(x, kernel)
        if not self.use_bias:
            return y
        bias = self.param("bias", torch_bias_init(k * k * cin), (self.features,))
        return y + bias.astype(self.dtype)

    def _other(self, x, kernel):
        s = self.stride
        if self.kernel_size == 1:  # one product over the kept pixels, in every formulation
            return x[:, ::s, ::s, :] @ kernel[0, 0]
        if self.impl == "xla":
            return lax.conv_general_dilated(
                x, kernel, (s, s), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        return _im2col_strided(x, kernel, s)

    def _same_3x3(self, x, kernel):
        if self.impl in ("im2col", "winograd") and self.input_is_data:
            y = _im2col_conv_const_input(x, kernel)
        elif self.impl == "im2col":
            y = _im2col_conv(x, kernel)
        elif self.impl == "winograd":
            y = winograd.conv3x3(x, kernel, WINOGRAD_TILE[jnp.dtype(self.dtype)])
        else:
            y = lax.conv_general_dilated(
                x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        return y


class Dense(nn.Module):
    """Fully connected: float[..., Fin] -> dtype[..., features].

    PyTorch's Linear init unless ``kernel_init`` / ``bias_init`` name others;
    ``use_bias=False`` leaves the bias out.
    """

    features: int
    dtype: jnp.dtype = jnp.float32
    use_bias: bool = True
    kernel_init: Callable = torch_weight_init
    bias_init: Callable | None = None  # None: PyTorch's, U(+-1/sqrt(fan_in))

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (fan_in, self.features))
        y = x.astype(self.dtype) @ kernel.astype(self.dtype)
        if not self.use_bias:
            return y
        bias_init = self.bias_init or torch_bias_init(fan_in)
        bias = self.param("bias", bias_init, (self.features,))
        return y + bias.astype(self.dtype)


class BatchNorm(nn.Module):
    """Batch normalisation over every axis but the last: float[B, ..., C] -> dtype[B, ..., C].

    Training (``train=True``): each channel is normalised with the mean and the
    (biased) variance of the batch, computed in float32 over the slots where
    ``mask`` (bool[B]) is True only, so that padded or masked-out examples
    never enter them (an all-False mask counts as one example and leaves the
    statistics at zero); the running averages ``mean`` and ``var`` (the
    ``batch_stats`` collection, float32[C]) move as
    ``avg = momentum * avg + (1 - momentum) * batch``.  Inference
    (``train=False``): the running averages, so that an example's output does
    not depend on the others in its batch.  Learned ``scale`` (init 1) and
    ``bias`` (init 0), float32[C].

    Conventions: Flax's and objax's (the LiRA code's); PyTorch's
    ``BatchNorm2d(momentum=1 - momentum, eps=epsilon)`` differs only in that
    its running variance takes the unbiased batch variance (n/(n-1) of this
    one), which benchmarks/pytorch_baseline.py's twins undo.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        if not train:
            return _normalize(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon, self.dtype)
        y, mean, var = _batch_normalize(x, mask, scale, bias, self.epsilon, self.dtype)
        if not self.is_initializing():
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
            ra_var.value = m * ra_var.value + (1.0 - m) * var
        return y


def _normalize(x, mean, var, scale, bias, epsilon, dtype):
    inv = lax.rsqrt(var + epsilon) * scale
    return ((x.astype(jnp.float32) - mean) * inv + bias).astype(dtype)


@partial(jax.checkpoint, static_argnums=(4, 5))
def _batch_normalize(x, mask, scale, bias, epsilon, dtype):
    """Training-mode BatchNorm: (dtype y, float32 mean, float32 variance).

    Rematerialised in the backward pass (``jax.checkpoint``): the backward keeps
    x in the compute dtype and recomputes the float32 statistics and the
    centred values from it, instead of keeping float32 copies of every
    activation: WRN-28-2's memory per model at batch 256 (training/memory.py's
    estimate) falls from 3.2 to 1.5 GiB in float32 and from 2.7 to 0.8 GiB in
    bfloat16, which doubles (quadruples) the models a GPU chunk holds, for a
    few elementwise operations recomputed.
    """
    mean, var = masked_moments(x.astype(jnp.float32), mask)
    return _normalize(x, mean, var, scale, bias, epsilon, dtype), mean, var


def masked_moments(x: jax.Array, mask=None) -> tuple[jax.Array, jax.Array]:
    """(mean, biased variance) float32[C] of x float32[B, ..., C] over the slots where mask.

    Two passes (the variance of the centred values), each slot of the batch
    weighted by ``mask`` (bool[B]; None: all).  A masked slot adds exactly zero
    to either sum (``where``, so not even a NaN there reaches them).
    """
    axes = tuple(range(x.ndim - 1))
    if mask is None:
        mean = x.mean(axes)
        return mean, jnp.square(x - mean).mean(axes)
    keep = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
    per_slot = math.prod(x.shape[1:-1])
    count = jnp.maximum(mask.sum(), 1).astype(jnp.float32) * per_slot
    mean = jnp.where(keep, x, 0.0).sum(axes) / count
    var = jnp.where(keep, jnp.square(x - mean), 0.0).sum(axes) / count
    return mean, var


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """float[B, H, W, C] -> float[B, H/2, W/2, C], the maximum of each 2x2 block (H, W even)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
