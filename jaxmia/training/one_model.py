"""One model's training, written for one model: the chunk trainer maps it over many.

``init_state``, ``train_epoch`` and ``evaluate_model`` take one model's arrays
(its rows, mask and ids from plan.py, its ``TrainState``) and the data set on the
device (``DeviceData``); ``train_one`` strings them together.  The model is the
one ``TrainSetup.model`` names, built through the registry (jaxmia.models).

Exactness of the padding (see plan.py for the rows): a padded or masked-out
slot adds exactly zero to the batch's summed loss (``where``, not a multiply,
so even an infinite loss on a masked slot stays out) and to a BatchNorm's
batch statistics (models/layers.py), the batch mean divides by the number of
real examples, and a batch without any real example leaves parameters,
optimizer state and running averages untouched, so momentum and weight decay
do not move the model on steps the unpadded model would not take (only the
last batch of an epoch can be such a batch, so only that step carries the
check).

A model with BatchNorm trains with the statistics of its own batch (per model,
under vmap and lax.map alike) and keeps their running averages in
``TrainState.batch_stats``; scoring and the accuracies run it in inference
mode, on those averages, so that a scored image's logits do not depend on the
images scored beside it.  (The LiRA reference code scores in training mode; a
fix once moved its demo's online TPR at 0.1% FPR from 1.69% to 1.04%.)

Training batches are augmented (``TrainSetup.augment``, training/augment.py)
with keys from (seed, model, epoch, step) alone, the learning rate follows
``make_schedule`` by the global step, and the loss may smooth its labels.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmia.data import Dataset
from jaxmia.models import MODELS
from jaxmia.training import augment, dp
from jaxmia.training.queries import query_view
from jaxmia.training.setup import TrainSetup, make_optimizer, step_lr
from jaxmia.training.state import TrainState


@dataclasses.dataclass(frozen=True)
class DeviceData:
    """The data set as device arrays, replicated on every device of the mesh."""

    train_images: jax.Array  # uint8[N, H, W, C]
    train_labels: jax.Array  # int32[N]
    test_images: jax.Array  # uint8[E, H, W, C], E = eval_batches * eval_batch
    test_labels: jax.Array  # int32[E]
    test_mask: jax.Array  # bool[E], False on padding
    mean: jax.Array  # float32[C]
    std: jax.Array  # float32[C]


jax.tree_util.register_dataclass(
    DeviceData,
    data_fields=[f.name for f in dataclasses.fields(DeviceData)],
    meta_fields=[],
)


def put_data(dataset: Dataset, setup: TrainSetup, mesh: Mesh) -> DeviceData:
    """``dataset`` on every device of ``mesh``, the test set padded to whole eval batches.

    Raises ValueError when the setup was made for images of another shape.
    """
    if dataset.image_shape != setup.image_shape:
        raise ValueError(
            f"the setup was made for images of shape {setup.image_shape}, the data set has "
            f"{dataset.image_shape} (make_setup(cfg, dataset, ...))"
        )
    e = setup.eval_batches * setup.eval_batch
    n_eval = min(setup.test_samples, len(dataset.test_labels))
    test_images = np.zeros((e, *setup.image_shape), np.uint8)
    test_labels = np.zeros((e,), np.int32)
    test_images[:n_eval] = dataset.test_images[:n_eval]
    test_labels[:n_eval] = dataset.test_labels[:n_eval]
    test_mask = np.arange(e) < n_eval
    replicated = NamedSharding(mesh, P())
    host = DeviceData(
        train_images=np.asarray(dataset.train_images, np.uint8),
        train_labels=np.asarray(dataset.train_labels, np.int32),
        test_images=test_images,
        test_labels=test_labels,
        test_mask=test_mask,
        mean=np.asarray(dataset.mean, np.float32),
        std=np.asarray(dataset.std, np.float32),
    )
    return jax.device_put(host, replicated)


def make_model(setup: TrainSetup) -> nn.Module:
    """The Flax module of ``setup.model``: normalised float32[B, H, W, C] -> float32[B, classes]."""
    dtype = jnp.bfloat16 if setup.compute_dtype == "bfloat16" else jnp.float32
    return MODELS[setup.model].build(setup.num_classes, setup.conv, dtype)


def apply_model(setup: TrainSetup, model: nn.Module, params, batch_stats, x, *, train_mask=None):
    """(float32 logits[B, classes], batch statistics) of ``model`` on images x float32[B, H, W, C].

    ``train_mask`` None: inference (a BatchNorm model normalises with its
    running averages; they come back unchanged).  ``train_mask`` bool[B]: a
    training forward pass, whose BatchNorm statistics are those of the True
    slots; the updated running averages come back.  A model without batch
    statistics ignores both and returns ``batch_stats`` as it was (``{}``).
    """
    if not MODELS[setup.model].has_batch_stats:
        return model.apply({"params": params}, x), batch_stats
    variables = {"params": params, "batch_stats": batch_stats}
    if train_mask is None:
        return model.apply(variables, x, train=False), batch_stats
    logits, new = model.apply(variables, x, train=True, mask=train_mask, mutable=["batch_stats"])
    return logits, new["batch_stats"]


def model_key(ids):
    """One model's base key from uint32[4] = (seed, stream, round, member) alone."""
    key = jax.random.key(ids[0])
    for part in (ids[1], ids[2], ids[3]):
        key = jax.random.fold_in(key, part)
    return key


def model_keys(ids):
    """(init key, order key) of one model from uint32[4] = (seed, stream, round, member).

    Its augmentation and DP-SGD's draws come from the base key by other paths
    (augment.batch_key, dp.dp_key), so they never meet these two.
    """
    init_key, order_key = jax.random.split(model_key(ids))
    return init_key, order_key


def model_inputs(data: DeviceData, idx):
    """(float32[..., H, W, C] normalised images, int32[...] labels) of training rows idx."""
    x = data.train_images[idx].astype(jnp.float32) / 255.0
    return (x - data.mean) / data.std, data.train_labels[idx]


def init_state(setup: TrainSetup, ids, noise_multiplier=None) -> TrainState:
    """One model's initial TrainState (parameters, optimizer state, batch statistics) from
    uint32[4] ids.

    Under DP-SGD (``setup.dp``) ``noise_multiplier`` (float32 scalar, the
    model's sigma) is kept in ``noise_state``; without it, noise_state stays empty.
    """
    init_key, _ = model_keys(ids)
    dummy = jnp.zeros((1, *setup.image_shape), jnp.float32)
    variables = make_model(setup).init(init_key, dummy)
    params = variables["params"]
    state = TrainState(
        params=params,
        opt_state=make_optimizer(setup).init(params),
        batch_stats=variables.get("batch_stats", {}),
    )
    if setup.dp is not None:
        sigma = jnp.zeros((), jnp.float32) if noise_multiplier is None else noise_multiplier
        state = state.replace(noise_state={"noise_multiplier": jnp.asarray(sigma, jnp.float32)})
    return state


def training_loss(setup: TrainSetup, logits, labels):
    """float32[B]: each example's training loss, the cross-entropy against labels smoothed
    by ``setup.label_smoothing`` (optax.smooth_labels: (1 - a) one-hot + a / classes, as
    torch's ``CrossEntropyLoss(label_smoothing=a)``)."""
    if not setup.label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), setup.label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def _masked_mean_loss(setup, logits, labels, mask):
    ce = training_loss(setup, logits, labels)
    count = mask.sum()
    return jnp.where(mask, ce, 0.0).sum() / jnp.maximum(count, 1), count


def train_epoch(setup: TrainSetup, data: DeviceData, state: TrainState, idx, mask, ids, epoch):
    """One epoch of one model: shuffle its real slots, then scan over the batches.

    idx int32[P] and mask bool[P] are the model's rows (plan.py), ids uint32[4]
    its identity, epoch an int32 scalar.  Returns the new TrainState and the
    mean training loss over the epoch's real examples (float32 scalar; with
    label smoothing, the smoothed loss that is minimised).  Under DP-SGD
    (``setup.dp``, training/dp.py) the gradient is the private one and, with
    Poisson sampling, the batches are Poisson samples (the loss is then the
    mean over the examples the epoch's samples held).
    """
    model = make_model(setup)
    _, order_key = model_keys(ids)
    base = model_key(ids)
    poisson = setup.dp is not None and setup.dp.sampling == "poisson"
    if poisson:  # DP-SGD's batches: a Poisson sample per step (training/dp.py)
        batches_idx, batches_mask = dp.poisson_batches(setup.dp, idx, mask, base, epoch)
    else:
        u = jax.random.uniform(jax.random.fold_in(order_key, epoch), idx.shape)
        # Real slots get a random key in [0, 1), padding 2: padding sorts to the end,
        # so every batch but the last holds exactly batch_size real examples.
        order = jnp.argsort(jnp.where(mask, u, 2.0))
        batches_idx = idx[order].reshape(setup.steps_per_epoch, setup.batch_size)
        batches_mask = mask[order].reshape(setup.steps_per_epoch, setup.batch_size)

    def gradient(state, b_idx, b_mask, b_step):
        """((mean loss, (count, batch statistics)), gradient) of one batch: the hook
        DP-SGD replaces (the configuration refuses DP-SGD with batch statistics or
        augmentation, which would mix or redraw examples between its two passes)."""
        if setup.dp is not None:

            def batch_losses(p, rows):
                x, y = model_inputs(data, rows)
                return training_loss(setup, model.apply({"params": p}, x), y)

            sigma = state.noise_state["noise_multiplier"]
            key = dp.step_key(base, epoch, b_step)
            (loss, count), grads = dp.private_gradient(
                setup.dp, batch_losses, state.params, b_idx, b_mask, sigma, key
            )
            return (loss, (count, state.batch_stats)), grads
        x, y = model_inputs(data, b_idx)
        x = augment.augment(setup.augment, augment.batch_key(base, epoch, b_step), x)

        def loss_fn(p):
            logits, stats = apply_model(setup, model, p, state.batch_stats, x, train_mask=b_mask)
            loss, count = _masked_mean_loss(setup, logits, y, b_mask)
            return loss, (count, stats)

        return jax.value_and_grad(loss_fn, has_aux=True)(state.params)

    def step(carry, batch, guard):
        state, loss_sum = carry
        params, opt_state = state.params, state.opt_state
        b_idx, b_mask, b_step = batch
        (loss, (count, stats)), grads = gradient(state, b_idx, b_mask, b_step)
        tx = make_optimizer(setup, step_lr(setup, epoch * setup.updates_per_epoch + b_step))
        updates, new_opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        new_stats = stats
        if guard:
            take = count > 0
            new_params, new_opt_state, new_stats = jax.tree.map(
                lambda new, old: jnp.where(take, new, old),
                (new_params, new_opt_state, new_stats),
                (params, opt_state, state.batch_stats),
            )
        state = state.replace(params=new_params, opt_state=new_opt_state, batch_stats=new_stats)
        return (state, loss_sum + loss * count), None

    # Padding sorts last, so only the batches past the fewest real examples any
    # model has (full_steps) can lack a real one (an OUT model, a model without
    # some targets): only those steps pay for the select that keeps the state.
    # A Poisson step takes its noisy step whatever its sample holds: no guard.
    carry = (state, jnp.zeros((), jnp.float32))
    s = setup.updates_per_epoch
    f = s if poisson else setup.full_steps
    batches = (batches_idx, batches_mask, jnp.arange(s, dtype=jnp.int32))
    if f > 0:
        head = jax.tree.map(lambda a: a[:f], batches)
        carry, _ = lax.scan(partial(step, guard=False), carry, head)
    if s > f:
        carry, _ = lax.scan(
            partial(step, guard=True), carry, jax.tree.map(lambda a: a[f:], batches)
        )
    state, loss_sum = carry
    seen = batches_mask.sum() if poisson else mask.sum()  # examples the epoch's steps saw
    return state, loss_sum / jnp.maximum(seen, 1)


def evaluate_model(setup: TrainSetup, data: DeviceData, state: TrainState, idx, mask, scored):
    """What one trained model reports.

    scored int32[S'] are the training-set indices of the images to score (S'
    = score_batches * score_batch, padded).  Returns (loss float32[S'], logits
    float32[S', C], train accuracy, test accuracy, view logits float32[S', Q-1,
    C]): the scored images go through the network score_batch at a time (in
    one pass for up to MAX_SCORE_BATCH); the accuracies (float32 scalars)
    count hits over the model's own real training slots and the (masked) test
    set.  ``loss`` and ``logits`` are those of the plain image, query 0; with
    ``setup.queries`` Q > 1 the view logits are those of queries 1 .. Q-1
    (queries.py), one forward pass of score_batch images per query.
    """
    model = make_model(setup)

    def apply(x):  # inference mode: BatchNorm on its running averages
        logits, _ = apply_model(setup, model, state.params, state.batch_stats, x)
        return logits.astype(jnp.float32)

    def score_batch(_, rows):
        x, y = model_inputs(data, rows)
        logits = apply(x)
        if setup.queries > 1:
            views = jnp.arange(1, setup.queries, dtype=jnp.int32)
            extra = lax.map(lambda q: apply(query_view(x, q, setup.queries)), views)
            extra = jnp.swapaxes(extra, 0, 1)  # [B, Q-1, C]
        else:
            extra = jnp.zeros((x.shape[0], 0, logits.shape[-1]), jnp.float32)
        return None, (optax.softmax_cross_entropy_with_integer_labels(logits, y), logits, extra)

    _, (loss, logits, views) = lax.scan(
        score_batch, None, scored.reshape(setup.score_batches, setup.score_batch)
    )
    loss, logits = loss.reshape(-1), logits.reshape(-1, logits.shape[-1])
    views = views.reshape(loss.shape[0], *views.shape[2:])  # no -1: Q-1 may be 0

    def count_correct(carry, batch):
        b_x, b_y, b_mask = batch
        hit = (jnp.argmax(apply(b_x), axis=-1) == b_y) & b_mask
        return carry + hit.sum(), None

    b = setup.eval_batch
    pad = -len(idx) % b  # padded slots are masked: no hit counted
    train_x = jnp.pad(idx, (0, pad)).reshape(-1, b)
    train_m = jnp.pad(mask, (0, pad)).reshape(-1, b)

    def train_batch(carry, batch):
        b_idx, b_mask = batch
        xx, yy = model_inputs(data, b_idx)
        return count_correct(carry, (xx, yy, b_mask))

    train_hits, _ = lax.scan(train_batch, jnp.zeros((), jnp.int32), (train_x, train_m))

    def test_batch(carry, batch):
        b_img, b_y, b_mask = batch
        xx = (b_img.astype(jnp.float32) / 255.0 - data.mean) / data.std
        return count_correct(carry, (xx, b_y, b_mask))

    test = (
        data.test_images.reshape(-1, b, *data.test_images.shape[1:]),
        data.test_labels.reshape(-1, b),
        data.test_mask.reshape(-1, b),
    )
    test_hits, _ = lax.scan(test_batch, jnp.zeros((), jnp.int32), test)
    train_acc = train_hits / jnp.maximum(mask.sum(), 1)
    test_acc = test_hits / jnp.maximum(data.test_mask.sum(), 1)
    return loss, logits, train_acc.astype(jnp.float32), test_acc.astype(jnp.float32), views


def train_one(setup: TrainSetup, data: DeviceData, idx, mask, ids, scored, noise_multiplier=None):
    """Trains one model from scratch and evaluates it: the whole job, for one model.

    ``noise_multiplier``: the model's sigma under DP-SGD (``init_state``).

    Returns (the final TrainState, (loss, logits, train accuracy, test accuracy,
    epoch losses float32[epochs], view logits)), the outputs as ``evaluate_model``
    gives them.
    The chunk trainer runs the same three stages, mapped over a stack of
    models, with the host loop between epochs.
    """
    state = init_state(setup, ids, noise_multiplier)
    epoch_losses = []
    for e in range(setup.epochs):
        state, loss = train_epoch(setup, data, state, idx, mask, ids, jnp.int32(e))
        epoch_losses.append(loss)
    loss, logits, train_acc, test_acc, views = evaluate_model(setup, data, state, idx, mask, scored)
    return state, (loss, logits, train_acc, test_acc, jnp.stack(epoch_losses), views)
