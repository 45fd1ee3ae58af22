"""How many models a chunk can hold: one model's device memory, from ``jax.eval_shape``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import optax

from jaxmia.training.one_model import apply_model, init_state, make_model
from jaxmia.training.setup import TrainSetup


def model_footprint_bytes(setup: TrainSetup) -> int:
    """Bytes one model of a vmapped chunk needs on the device during a training step.

    From ``jax.eval_shape`` of the real model, nothing compiled or allocated: the
    TrainState (parameters, optimizer state, batch statistics and whatever else
    the model carries; the epoch donates it, so its output reuses its buffers),
    one more parameter tree for the gradients (XLA fuses the update into the
    step), the VJP's residuals (the activations kept for the backward pass of
    one batch, BatchNorm's in training mode included) and the batch itself.
    tests/test_formulations.py checks it against the per-model growth of a
    compiled vmapped chunk's ``memory_analysis()``: the estimate is 10-30% above it.

    Under DP-SGD (``setup.dp``) a pass holds ``dp.buffer`` examples, each with its
    own gradient: the residuals and the batch are the buffer's, and the
    per-example gradients add buffer x one parameter tree.
    """
    model = make_model(setup)
    b = setup.batch_size if setup.dp is None else setup.dp.buffer
    x = jax.ShapeDtypeStruct((b, *setup.image_shape), jnp.float32)
    y = jax.ShapeDtypeStruct((b,), jnp.int32)
    state = jax.eval_shape(partial(init_state, setup), jax.ShapeDtypeStruct((4,), jnp.uint32))
    mask = jnp.ones((b,), bool)

    def loss(p, stats, xb, yb):
        logits, _ = apply_model(setup, model, p, stats, xb, train_mask=mask)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    # jax.vjp's backward function is a pytree whose leaves are the residuals.
    residuals = jax.eval_shape(
        lambda p, s, xb, yb: jax.vjp(partial(loss, stats=s, xb=xb, yb=yb), p)[1],
        state.params,
        state.batch_stats,
        x,
        y,
    )

    def nbytes(tree):
        return sum(a.size * jnp.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))

    # The buffer's gradients, then the clipped sum and the noise draw: one tree each.
    per_example = (b + 2) * nbytes(state.params) if setup.dp is not None else 0
    return nbytes(state) + nbytes(state.params) + nbytes((residuals, x, y)) + per_example


def auto_models_per_chunk(setup: TrainSetup, n_jobs: int, devices: Sequence[jax.Device]) -> int:
    """The largest chunk that fits the devices' memory, capped by the work there is.

    CPU: a few models per device (more only adds memory traffic there).  GPU and
    other accelerators: 60% of the device's memory limit divided by
    ``model_footprint_bytes`` (the rest for the data set, XLA's temporaries and
    fragmentation), capped at 1024 per device.  Returns a multiple of
    ``len(devices)``.
    """
    n_dev = len(devices)
    per_dev_needed = -(-n_jobs // n_dev)
    if devices[0].platform == "cpu":
        per_dev = 4
    else:
        stats = devices[0].memory_stats() or {}
        limit = stats.get("bytes_limit", 16 * 2**30)
        per_dev = max(1, min(1024, int(0.6 * limit) // model_footprint_bytes(setup)))
    return n_dev * max(1, min(per_dev, per_dev_needed))
