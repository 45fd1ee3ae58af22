"""The models jaxmia can train, found by name (the config's ``model:`` key).

A model is a file in this package that defines a Flax module, and one entry in
``MODELS`` that says what the training code and the tools need to know before
they build it.  The entry names its module by path and ``ModelSpec.load``
imports it on demand, so this registry imports neither JAX nor Flax: the config
validation, the statistics and the plots import it freely.

Every builder is called as ``builder(num_classes=C, conv=impl, dtype=dtype)``
(``conv`` one of layers.CONV_IMPLS, ``dtype`` the compute dtype) and returns a
Flax module that maps normalised float[B, *input_shape] images to float32
logits[B, C].
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What is known about a model without importing it."""

    name: str  # the config's model: value
    builder: str  # "package.module:Name", the Flax module class (or factory) that builds it
    input_shape: tuple[int, int, int]  # (H, W, C) of the images it takes
    # FLOPs of one training step on one image (forward + backward, a multiply-add
    # counted as 2), as a function of the number of classes.
    flops_per_image_step: Callable[[int], int]
    source: str  # where the architecture comes from, for the README and reports
    # Whether the model keeps batch statistics (BatchNorm) beside its parameters.
    has_batch_stats: bool = False

    def load(self) -> Callable:
        """The builder (imports its module, and so JAX and Flax)."""
        module, _, attr = self.builder.partition(":")
        return getattr(importlib.import_module(module), attr)


def _small_cnn_flops(num_classes: int) -> int:
    # Forward: conv1 32*32*32*27*2, conv2 16*16*64*288*2, fc1 4096*512*2, fc2 512*C*2.
    # Backward costs twice the forward (input and weight gradients), except that
    # conv1 needs no gradient with respect to the input image.  Pooling, ReLU,
    # the softmax and the update are not counted.
    conv1 = 32 * 32 * 32 * 27 * 2
    conv2 = 16 * 16 * 64 * 288 * 2
    fc1 = 4096 * 512 * 2
    fc2 = 512 * num_classes * 2
    forward = conv1 + conv2 + fc1 + fc2
    return 3 * forward - conv1


MODELS: dict[str, ModelSpec] = {
    "cnn": ModelSpec(
        name="cnn",
        builder="jaxmia.models.cnn:SmallCNN",
        input_shape=(32, 32, 3),
        flops_per_image_step=_small_cnn_flops,
        source="the PyTorch single-point MIA pipeline's small CNN (two 3x3 convolutions, "
        "two dense layers)",
    ),
}
