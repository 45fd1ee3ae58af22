"""The small CNN of the PyTorch pipeline, in Flax (registered as ``model: cnn``).

conv 3x3/32 (SAME) -> ReLU -> max-pool 2 -> conv 3x3/64 (SAME) -> ReLU -> max-pool 2
-> dense 512 -> ReLU -> dense num_classes.  Inputs are NHWC float images of
32x32x3 that the caller has already normalised per channel.

The convolutions come from layers.py in the formulation ``conv`` names; the
first one sees the image, so it asks for no input gradient.  Its FLOP count per
image-step is the registry's (jaxmia/models/__init__.py).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxmia.models.layers import Conv3x3, Dense, max_pool_2x2


class SmallCNN(nn.Module):
    """float[B, 32, 32, 3] (normalised) -> float32 logits[B, num_classes].

    ``conv`` is one of layers.CONV_IMPLS; ``dtype`` the compute dtype (float32 or
    bfloat16; the parameters stay float32).
    """

    num_classes: int = 100
    conv: str = "xla"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        conv1 = Conv3x3(32, self.conv, self.dtype, input_is_data=True, name="conv1")
        x = max_pool_2x2(nn.relu(conv1(x)))
        x = max_pool_2x2(nn.relu(Conv3x3(64, self.conv, self.dtype, name="conv2")(x)))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(Dense(512, self.dtype, name="fc1")(x))
        return Dense(self.num_classes, self.dtype, name="fc2")(x).astype(jnp.float32)
