"""The models jaxmia can train, found by name (the config's ``model:`` key).

A model is a file in this package that defines a Flax module, and one entry in
``MODELS`` that says what the training code and the tools need to know before
they build it.  The entry names its module by path and ``ModelSpec.load``
imports it on demand, so this registry imports neither JAX nor Flax: the config
validation, the statistics and the plots import it freely.

Every builder is called as ``builder(num_classes=C, conv=impl, dtype=dtype,
**options)`` (``conv`` one of layers.CONV_IMPLS, ``dtype`` the compute dtype,
``options`` the entry's, e.g. a ResNet's depth and width; ``ModelSpec.build``)
and returns a Flax module that maps normalised float[B, *input_shape] images to
float32 logits[B, C].  A model with BatchNorm (``has_batch_stats``) is called
as ``module.apply(variables, x, train=..., mask=...)``: in training mode its
batch statistics come from the real (``mask``) slots of the batch and its
running averages are the ``batch_stats`` collection; in inference mode it uses
those.  Each entry's ``layers`` describe its convolutions and dense layers in
plain Python, so that its FLOPs per image-step and its parameter count are
known without JAX (tests/test_model.py checks them against the compiled network).

Tests register smaller variants of the same networks by replacing ``options``
(e.g. a WRN-10-1: ``dataclasses.replace(MODELS["wrn28_2"], name="wrn10_1",
options=(("depth", 10), ("width", 1)))``).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Layer:
    """One convolution or dense layer of a network, for counting its FLOPs and parameters.

    A convolution of ``kernel`` x ``kernel`` (3: one pixel of padding; 1: none)
    and ``stride`` on a ``size`` x ``size`` input; a dense layer is ``kernel=1``
    on ``size=1``.  ``first``: it sees the image (no input gradient).
    ``bias``: it has a bias; ``norm``: the channels of the BatchNorm that goes
    with it (2 parameters each), 0 for none.
    """

    size: int
    cin: int
    cout: int
    kernel: int = 3
    stride: int = 1
    first: bool = False
    bias: bool = False
    norm: int = 0

    def out_size(self) -> int:
        pad = self.kernel // 2
        return (self.size + 2 * pad - self.kernel) // self.stride + 1

    def taps(self, border: bool) -> int:
        """(output pixel, kernel tap) pairs: all of them, or without those on the zero border."""
        pad, out = self.kernel // 2, self.out_size()
        if border:
            return (out * self.kernel) ** 2
        valid = sum(
            1
            for o in range(out)
            for t in range(self.kernel)
            if 0 <= o * self.stride - pad + t < self.size
        )
        return valid**2

    def macs(self, border: bool = True) -> int:
        return self.taps(border) * self.cin * self.cout


def count_flops(layers: list[Layer], border: bool = True) -> int:
    """FLOPs of one training step on one image: forward + backward, a multiply-add = 2.

    The backward pass costs twice the forward (input and weight gradients),
    except that a ``first`` layer needs no input gradient.  Elementwise work
    (BatchNorm, ReLU, pooling, the softmax, the update) is not counted.
    ``border``: count the kernel taps on the zero padding too, as im2col and
    Winograd compute them (the default, the figure the harness reports); XLA's
    cost analysis, like a direct convolution, skips them (``border=False``).
    """
    forward = sum(2 * layer.macs(border) for layer in layers)
    first = sum(2 * layer.macs(border) for layer in layers if layer.first)
    return 3 * forward - first


def count_parameters(layers: list[Layer]) -> int:
    """Weights, biases and BatchNorm scales and offsets of ``layers``."""
    return sum(
        layer.kernel**2 * layer.cin * layer.cout + layer.bias * layer.cout + 2 * layer.norm
        for layer in layers
    )


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What is known about a model without importing it."""

    name: str  # the config's model: value
    builder: str  # "package.module:Name", the Flax module class (or factory) that builds it
    input_shape: tuple[int, int, int]  # (H, W, C) of the images it takes
    # The network's convolutions and dense layers, as a function of
    # (num_classes, **options): what its FLOPs and parameters are counted from
    # (tests/test_model.py checks both against the real network).
    layers: Callable[..., list[Layer]]
    source: str  # where the architecture comes from, for the README and reports
    # Whether the model keeps batch statistics (BatchNorm) beside its parameters.
    has_batch_stats: bool = False
    # Keyword arguments of the builder beyond (num_classes, conv, dtype), as
    # (name, value) pairs: the depth and width of a ResNet.
    options: tuple[tuple[str, object], ...] = ()

    def load(self) -> Callable:
        """The builder (imports its module, and so JAX and Flax)."""
        module, _, attr = self.builder.partition(":")
        return getattr(importlib.import_module(module), attr)

    def build(self, num_classes: int, conv: str, dtype):
        """The Flax module for ``num_classes`` classes (imports JAX and Flax)."""
        return self.load()(num_classes=num_classes, conv=conv, dtype=dtype, **dict(self.options))

    def flops_per_image_step(self, num_classes: int) -> int:
        """FLOPs of one training step on one image (``count_flops``, border taps counted)."""
        return count_flops(self.layers(num_classes, **dict(self.options)))

    def parameter_count(self, num_classes: int) -> int:
        return count_parameters(self.layers(num_classes, **dict(self.options)))


def _small_cnn_layers(num_classes: int) -> list[Layer]:
    # conv1 32*32*32*27, conv2 16*16*64*288, fc1 4096*512, fc2 512*C multiply-adds.
    return [
        Layer(32, 3, 32, first=True, bias=True),
        Layer(16, 32, 64, bias=True),
        Layer(1, 8 * 8 * 64, 512, kernel=1, bias=True),
        Layer(1, 512, num_classes, kernel=1, bias=True),
    ]


def _wrn_layers(num_classes: int, depth: int = 28, width: int = 2) -> list[Layer]:
    # jaxmia/models/wrn.py: pre-activation blocks, a BatchNorm before each 3x3 conv.
    n = (depth - 4) // 6
    layers = [Layer(32, 3, 16, first=True)]
    size, cin = 32, 16
    for g, features in enumerate((16 * width, 32 * width, 64 * width)):
        for b in range(n):
            stride = 2 if g > 0 and b == 0 else 1
            conv1 = Layer(size, cin, features, stride=stride, norm=cin)
            layers += [conv1, Layer(conv1.out_size(), features, features, norm=features)]
            if cin != features or stride != 1:
                layers.append(Layer(size, cin, features, kernel=1, stride=stride))
            size, cin = conv1.out_size(), features
    return layers + [Layer(1, cin, num_classes, kernel=1, bias=True, norm=cin)]


def _resnet9_layers(num_classes: int, width: int = 64) -> list[Layer]:
    # jaxmia/models/resnet9.py: conv -> BN -> ReLU everywhere, pools after layer1-3.
    c = width
    return [
        Layer(32, 3, c, first=True, norm=c),
        Layer(32, c, 2 * c, norm=2 * c),
        Layer(16, 2 * c, 2 * c, norm=2 * c),
        Layer(16, 2 * c, 2 * c, norm=2 * c),
        Layer(16, 2 * c, 4 * c, norm=4 * c),
        Layer(8, 4 * c, 8 * c, norm=8 * c),
        Layer(4, 8 * c, 8 * c, norm=8 * c),
        Layer(4, 8 * c, 8 * c, norm=8 * c),
        Layer(1, 8 * c, num_classes, kernel=1),
    ]


MODELS: dict[str, ModelSpec] = {
    "cnn": ModelSpec(
        name="cnn",
        builder="jaxmia.models.cnn:SmallCNN",
        input_shape=(32, 32, 3),
        layers=_small_cnn_layers,
        source="the PyTorch single-point MIA pipeline's small CNN (two 3x3 convolutions, "
        "two dense layers)",
    ),
    # 1,467,610 parameters (10 classes); 1.285 GFLOP per image-step counting
    # border taps, 1.169 without (XLA's cost analysis of the compiled step:
    # 1.193, BatchNorm and the rest included).
    "wrn28_2": ModelSpec(
        name="wrn28_2",
        builder="jaxmia.models.wrn:WideResNet",
        input_shape=(32, 32, 3),
        layers=_wrn_layers,
        source="WRN-28-2 (Zagoruyko & Komodakis 2016) as objax's WideResNet, the network of "
        "the LiRA reference code (tensorflow/privacy research/mi_lira_2021) and of RMIA's "
        "CIFAR-10 experiments: pre-activation blocks, BatchNorm, ReLU",
        has_batch_stats=True,
        options=(("depth", 28), ("width", 2)),
    ),
    # 6,573,120 parameters (10 classes); 2.272 GFLOP per image-step counting
    # border taps, 1.968 without (XLA: 1.983).
    "resnet9": ModelSpec(
        name="resnet9",
        builder="jaxmia.models.resnet9:ResNet9",
        input_shape=(32, 32, 3),
        layers=_resnet9_layers,
        source="ResNet-9 of Page's DAWNBench entry (Myrtle.ai, cifar10-fast), the ancestor "
        "of airbench: BatchNorm, three stages, two residual blocks",
        has_batch_stats=True,
        options=(("width", 64),),
    ),
}
