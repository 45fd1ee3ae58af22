"""Training augmentation (jaxmia/training/augment.py): the transform, its law, its keys."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxmia.training import augment


def _images(n=6, h=32, w=32, c=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, c)).astype(np.float32)


def reference_apply(kind, x, flip, offsets):
    """numpy: reflect-pad by 4 (np.pad's "reflect": the edge pixel not repeated), cut the
    window at (dy, dx), mirror left-right where flip."""
    out = []
    h, w = x.shape[1:3]
    for im, f, (dy, dx) in zip(x, flip, offsets, strict=True):
        if kind == "flip_crop":
            im = np.pad(im, ((4, 4), (4, 4), (0, 0)), mode="reflect")[dy : dy + h, dx : dx + w]
        out.append(im[:, ::-1] if f else im)
    return np.stack(out)


@pytest.mark.parametrize("kind", ["flip", "flip_crop"])
def test_apply_is_a_reflect_padded_window_then_a_mirror(kind):
    x = _images()
    flip = np.array([0, 1, 0, 1, 1, 0], bool)
    offsets = np.array([[0, 0], [8, 8], [4, 4], [0, 8], [3, 5], [7, 1]], np.int32)
    if kind == "flip":
        offsets[:] = augment.CROP_PAD
    got = jax.jit(augment.apply, static_argnums=0)(kind, x, flip, offsets)
    # Pure data movement: every output value is one input value, bit for bit.
    np.testing.assert_array_equal(np.asarray(got), reference_apply(kind, x, flip, offsets))


def test_the_centre_window_without_a_flip_is_the_image():
    x = _images(2)
    same = augment.apply("flip_crop", x, np.zeros(2, bool), np.full((2, 2), augment.CROP_PAD))
    np.testing.assert_array_equal(np.asarray(same), x)
    assert augment.augment("none", jax.random.key(0), x) is x
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
        augment.augment("rotate", jax.random.key(0), x)


def test_draws_follow_the_law():
    # 40,000 slots from one key.  Flips: Binomial(n, 1/2), so the share lies within
    # 5 standard deviations (5 * 0.5 / sqrt(n) = 0.0125) of 1/2.  Offsets: uniform
    # on 0..8 on each axis, independent: a chi-square test of the 81 (dy, dx)
    # cells.  One fixed key, so the test is deterministic; p = 1e-4 would reject
    # a correct sampler once in ten thousand keys.
    n = 40_000
    flip, offsets = augment.draw("flip_crop", jax.random.key(3), n)
    flip, offsets = np.asarray(flip), np.asarray(offsets)
    assert abs(flip.mean() - 0.5) < 5 * 0.5 / np.sqrt(n)
    assert offsets.min() == 0 and offsets.max() == 2 * augment.CROP_PAD
    cells = np.bincount(offsets[:, 0] * 9 + offsets[:, 1], minlength=81)
    assert stats.chisquare(cells).pvalue > 1e-4
    # The flip draw does not see the crop's: flips equal those of "flip" alone.
    flip_only, centre = augment.draw("flip", jax.random.key(3), n)
    np.testing.assert_array_equal(np.asarray(flip_only), flip)
    assert (np.asarray(centre) == augment.CROP_PAD).all()


def test_batch_keys_come_from_the_model_epoch_and_step_alone():
    root = jax.random.key(11)

    def offsets(r, e, s):
        return augment.draw("flip_crop", augment.batch_key(r, e, s), 64)[1]

    def draw(r, e, s):
        return np.asarray(offsets(r, e, s))

    base = draw(root, 2, 5)
    np.testing.assert_array_equal(draw(root, 2, 5), base)  # the same batch, the same draw
    for other in (draw(root, 3, 5), draw(root, 2, 6), draw(jax.random.key(12), 2, 5)):
        assert (other != base).any()
    # Traced epoch and step (as inside the scan) give the eager draw.
    traced = jax.jit(offsets)(root, jnp.int32(2), jnp.int32(5))
    np.testing.assert_array_equal(np.asarray(traced), base)
