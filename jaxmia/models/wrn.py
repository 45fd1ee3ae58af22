"""The wide ResNet of the LiRA and RMIA code (registered as ``model: wrn28_2``).

WRN-d-k (Zagoruyko & Komodakis 2016, "Wide Residual Networks"), with
pre-activation blocks as in objax's ``objax.zoo.wide_resnet.WideResNet``, the
network the LiRA reference code (tensorflow/privacy
``research/mi_lira_2021/train.py``, ``--arch wrn28-2``) and RMIA's CIFAR-10
experiments train:

    conv 3x3/16
    3 groups of n = (d - 4) / 6 blocks, widths 16k, 32k, 64k, the first block of
        groups 2 and 3 with stride 2; a block is
        BN -> ReLU -> (o1) conv 3x3 -> BN -> ReLU -> conv 3x3, plus the input
        (or a 1x1 conv of o1 where the width or the stride changes)
    BN -> ReLU -> global average pool -> dense num_classes

Convolutions have no bias and He-normal weights over the fan-out (N(0, 2 /
(kernel area x out channels)), objax's ``conv_args``); the dense layer is
Xavier truncated-normal with a zero bias; BatchNorm has momentum 0.9 and eps
1e-5 (objax's BN_MOM and BN_EPS; PyTorch's momentum 0.1).  One difference from
objax: a strided 3x3 convolution pads one pixel on every side (PyTorch's
``padding=1``), where objax pads TensorFlow's "SAME" way (bottom and right
only); both see the same pixels apart from that one-pixel shift.

WRN-28-2 has 1,467,610 parameters for 10 classes; its FLOPs per image-step are
the registry's (jaxmia/models/__init__.py).  Inputs are NHWC float32[B, 32,
32, 3], normalised per channel by the caller.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from jaxmia.models.layers import (
    BatchNorm,
    Conv3x3,
    Dense,
    he_normal_fan_out,
    xavier_truncated_normal,
)


class WideResNet(nn.Module):
    """float[B, 32, 32, 3] (normalised) -> float32 logits[B, num_classes].

    ``depth`` d with (d - 4) % 6 == 0 (28: 4 blocks per group), ``width`` k
    (the widen factor).  ``__call__(x, train=False, mask=None)``: ``train``
    normalises with the batch's statistics over the slots where ``mask``
    (bool[B]) is True and updates the running averages (apply with
    ``mutable=["batch_stats"]``); otherwise the running averages are used.
    ``conv`` is one of layers.CONV_IMPLS, ``dtype`` the compute dtype
    (parameters and batch statistics stay float32).  Raises ValueError for a
    depth that is not 6n + 4.
    """

    num_classes: int = 10
    conv: str = "xla"
    dtype: jnp.dtype = jnp.float32
    depth: int = 28
    width: int = 2

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(f"a WRN's depth is 6n + 4 with n >= 1, got {self.depth}")
        n = (self.depth - 4) // 6
        conv = partial(
            Conv3x3, impl=self.conv, dtype=self.dtype, use_bias=False, kernel_init=he_normal_fan_out
        )
        bn = partial(BatchNorm, dtype=self.dtype)
        x = conv(16, input_is_data=True, name="conv")(x)
        for g, features in enumerate((16 * self.width, 32 * self.width, 64 * self.width)):
            for b in range(n):
                stride = 2 if g > 0 and b == 0 else 1
                o1 = nn.relu(bn(name=f"g{g}b{b}_bn1")(x, train, mask))
                y = conv(features, stride=stride, name=f"g{g}b{b}_conv1")(o1)
                y = nn.relu(bn(name=f"g{g}b{b}_bn2")(y, train, mask))
                y = conv(features, name=f"g{g}b{b}_conv2")(y)
                if x.shape[-1] != features or stride != 1:
                    x = conv(features, stride=stride, kernel_size=1, name=f"g{g}b{b}_proj")(o1)
                x = x + y
        x = nn.relu(bn(name="bn")(x, train, mask))
        x = x.astype(jnp.float32).mean(axis=(1, 2))
        dense = Dense(
            self.num_classes,
            self.dtype,
            kernel_init=xavier_truncated_normal,
            bias_init=nn.initializers.zeros,
            name="fc",
        )
        return dense(x).astype(jnp.float32)
