"""Random training augmentation, drawn on the device inside the training scan.

``augment(kind, key, x)`` transforms one batch of a model's training images:

* ``none``: the images as they are (the seed's training);
* ``flip``: each image mirrored left-right with probability 1/2;
* ``flip_crop``: each image reflect-padded by ``CROP_PAD`` = 4 pixels on every
  side, a random 32x32 window of that cut out (offsets uniform in 0..8 on each
  axis), then mirrored with probability 1/2: the CIFAR augmentation of the
  LiRA and RMIA code (FixMatch's "mirror, shift 4" with reflect padding) and
  of the ResNet literature.

The draw for a batch comes from ``batch_key(root, epoch, step)``, a key folded
from the model's own base key (its (seed, stream, round, member), see
training/one_model.py) with the epoch and the step alone, and the parameters
of slot j of the batch are the j-th of that draw.  So a model's augmentation
depends on (seed, model, epoch, step) only: not on the chunk, the devices or a
resumption.  Scoring and the accuracies never augment.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

AUGMENTATIONS = ("none", "flip", "flip_crop")
CROP_PAD = 4
# Folded into a model's base key to give its augmentation stream; the init and
# the data order split the base key itself, so this cannot meet them.
AUGMENT_TAG = 0x61756720  # "aug "


def batch_key(root: jax.Array, epoch, step) -> jax.Array:
    """The key of one training batch's augmentation: (model's base key, epoch, step)."""
    key = jax.random.fold_in(root, AUGMENT_TAG)
    return jax.random.fold_in(jax.random.fold_in(key, epoch), step)


def draw(kind: str, key: jax.Array, batch: int) -> tuple[jax.Array, jax.Array]:
    """(flip bool[batch], offsets int32[batch, 2]) of one batch; offsets are 0s without a crop."""
    k_flip, k_crop = jax.random.split(key)
    flip = jax.random.bernoulli(k_flip, 0.5, (batch,))
    if kind == "flip_crop":
        offsets = jax.random.randint(k_crop, (batch, 2), 0, 2 * CROP_PAD + 1, jnp.int32)
    else:
        offsets = jnp.full((batch, 2), CROP_PAD, jnp.int32)  # the centre: no shift
    return flip, offsets


def apply(kind: str, x: jax.Array, flip: jax.Array, offsets: jax.Array) -> jax.Array:
    """float[B, H, W, C] images with the given flips and crop offsets (pure data movement).

    ``offsets[j] = (dy, dx)`` cuts the H x W window starting at (dy, dx) of the
    image reflect-padded by CROP_PAD (dy = dx = CROP_PAD: the image itself);
    then ``flip[j]`` mirrors it left-right.
    """
    if kind == "none":
        return x
    _, h, w, c = x.shape
    if kind == "flip_crop":
        p = CROP_PAD
        padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
        x = jax.vmap(lambda im, o: lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(
            padded, offsets
        )
    return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def augment(kind: str, key: jax.Array, x: jax.Array) -> jax.Array:
    """One batch float[B, H, W, C], augmented as ``kind`` (one of AUGMENTATIONS) with ``key``.

    Raises ValueError for an unknown kind.
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; expected one of {AUGMENTATIONS}")
    if kind == "none":
        return x
    flip, offsets = draw(kind, key, x.shape[0])
    return apply(kind, x, flip, offsets)
