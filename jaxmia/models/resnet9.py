"""A fast CIFAR ResNet in the style of the DAWNBench and airbench nets (``model: resnet9``).

The ResNet-9 of David Page's DAWNBench entry ("How to train your ResNet",
Myrtle.ai 2018, github.com/davidcpage/cifar10-fast, ``net()`` in
``experiments.ipynb``/``core.py``), which reached 94% CIFAR-10 test accuracy
in 24 epochs (79 s on one V100); Keller Jordan's airbench (2024) trains a
whitened, narrower descendant of it to 94% in about 10 epochs:

    prep:   conv 3x3/c  -> BN -> ReLU
    layer1: conv 3x3/2c -> BN -> ReLU -> max-pool 2, plus a residual of two
            (conv 3x3/2c -> BN -> ReLU)
    layer2: conv 3x3/4c -> BN -> ReLU -> max-pool 2
    layer3: conv 3x3/8c -> BN -> ReLU -> max-pool 2, plus a residual of two
            (conv 3x3/8c -> BN -> ReLU)
    global max-pool -> dense num_classes (no bias) -> x 0.125

with c = 64 (widths 64, 128, 256, 512).  Convolutions have no bias; weights
take PyTorch's default init (U(+-1/sqrt(fan_in))), as Page's code does;
BatchNorm has momentum 0.9 and eps 1e-5 here (PyTorch's momentum 0.1, Page's
setting).  The final scaling by 0.125 is Page's (it keeps the initial logits
small without a temperature in the loss).

ResNet-9 (c = 64) has 6,573,130 parameters for 10 classes; its FLOPs per
image-step are the registry's (jaxmia/models/__init__.py).  Inputs are NHWC
float32[B, 32, 32, 3], normalised per channel by the caller.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxmia.models.layers import BatchNorm, Conv3x3, Dense, max_pool_2x2

LOGIT_SCALE = 0.125  # Page's Mul(weight=0.125) after the classifier


class ResNet9(nn.Module):
    """float[B, 32, 32, 3] (normalised) -> float32 logits[B, num_classes].

    ``width`` c is the first stage's channels (64; the stages have c, 2c, 4c,
    8c).  ``__call__(x, train=False, mask=None)``: ``train`` normalises with the
    batch's statistics over the slots where ``mask`` (bool[B]) is True and
    updates the running averages (apply with ``mutable=["batch_stats"]``);
    otherwise the running averages are used.  ``conv`` is one of
    layers.CONV_IMPLS, ``dtype`` the compute dtype (parameters and batch
    statistics stay float32).
    """

    num_classes: int = 10
    conv: str = "xla"
    dtype: jnp.dtype = jnp.float32
    width: int = 64

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        def conv_bn(features, name, y, input_is_data=False):
            y = Conv3x3(
                features,
                self.conv,
                self.dtype,
                input_is_data=input_is_data,
                use_bias=False,
                name=f"{name}_conv",
            )(y)
            return nn.relu(BatchNorm(dtype=self.dtype, name=f"{name}_bn")(y, train, mask))

        c = self.width
        x = conv_bn(c, "prep", x, input_is_data=True)
        x = max_pool_2x2(conv_bn(2 * c, "layer1", x))
        x = x + conv_bn(2 * c, "res1b", conv_bn(2 * c, "res1a", x))
        x = max_pool_2x2(conv_bn(4 * c, "layer2", x))
        x = max_pool_2x2(conv_bn(8 * c, "layer3", x))
        x = x + conv_bn(8 * c, "res3b", conv_bn(8 * c, "res3a", x))
        x = x.max(axis=(1, 2)).astype(jnp.float32)
        logits = Dense(self.num_classes, self.dtype, use_bias=False, name="fc")(x)
        return logits.astype(jnp.float32) * LOGIT_SCALE
