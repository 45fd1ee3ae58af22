"""Training many with/without models at once.

The per-model code below (``init_state``, ``train_epoch``, ``evaluate_model``,
and ``train_one`` that strings them together) is written for one model.
``ChunkTrainer`` stacks a chunk of K models along a leading axis, maps the
per-model code over it (``jax.vmap``, or ``lax.map`` where that is
faster, e.g. on CPU), spreads the axis over the local devices with
``jax.shard_map``, and compiles one program per stage.  The host loop calls the
compiled epoch once per epoch (a ``lax.scan`` over that epoch's steps runs
inside), donating the stacked state, and updates the progress bars between
calls (and only waits for an epoch when a progress bar wants to know).

Exactness of the padding (see plan.py for the rows): a padded or masked-out
slot adds exactly zero to the batch's summed loss (``where``, not a multiply,
so even an infinite loss on a masked slot stays out), the batch mean divides by
the number of real examples, and a batch without any real example leaves
parameters and optimizer state untouched, so momentum and weight decay do not
move the model on steps the unpadded model would not take (only the last batch
of an epoch can be such a batch, so only that step carries the check).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmia.config import Config
from jaxmia.data import Dataset
from jaxmia.models.cnn import SmallCNN
from jaxmia.outputs import ModelOutputs
from jaxmia.plan import Job, SingleTargetPlan, steps_per_epoch

AXIS = "models"


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """Everything static about one model's training (hashable: it keys the compile)."""

    num_classes: int
    batch_size: int
    steps_per_epoch: int
    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    conv: str  # "xla" | "im2col" | "winograd"
    strategy: str  # "vmap" | "map"
    compute_dtype: str  # "float32" | "bfloat16"
    eval_batch: int  # images per forward pass when counting accuracies
    eval_batches: int  # test batches of eval_batch (the last one padded and masked)
    test_samples: int  # test images the test accuracy counts, exactly
    full_steps: int  # the first full_steps batches of an epoch always hold a real example
    score_batch: int  # scored images go through the network score_batch at a time
    score_batches: int  # S scored images padded to score_batches * score_batch

    @property
    def slots(self) -> int:
        return self.steps_per_epoch * self.batch_size


def resolve_backend_choices(cfg: Config, platform: str) -> tuple[str, str]:
    """(conv, strategy) for 'auto': the formulation measured fastest on that backend.

    CPU: Winograd for conv2 and im2col for conv1, mapped (benchmarks/README.md:
    1,362 against im2col's 1,112 image-steps/s side by side in one harness run).
    GPU: vmapped lax.conv until benchmarks/gpu_check.sh has measured it against
    vmapped im2col.
    """
    conv = cfg.conv
    strategy = cfg.strategy
    if conv == "auto":
        conv = "winograd" if platform == "cpu" else "xla"
    if strategy == "auto":
        strategy = "map" if platform == "cpu" else "vmap"
    return conv, strategy


# Scored images per forward pass: all of them up to this many (one pass for a
# single target or a few hundred targets), else batches of it.
MAX_SCORE_BATCH = 512
# Accuracy passes over the training rows and the test set: under lax.map one
# model is in memory at a time, and large batches make large, efficient GEMMs
# (the PyTorch baseline evaluates 500 at a time too); under vmap the whole
# chunk's activations are live at once, so they keep the training batch.
MAX_EVAL_BATCH = 512


def make_setup(cfg: Config, n_test: int, platform: str, plan=None) -> TrainSetup:
    """The static training setup of ``cfg`` on ``platform``; ``plan`` gives the row shapes.

    Without a plan, the single-target shapes follow from subset_size (x plus n points).
    """
    conv, strategy = resolve_backend_choices(cfg, platform)
    n_eval = n_test if cfg.test_samples is None else cfg.test_samples
    b = cfg.batch_size
    if plan is None:
        slots, min_real, n_scored = steps_per_epoch(cfg.subset_size, b) * b, cfg.subset_size, 1
    else:
        slots, min_real, n_scored = plan.slots, plan.min_real, plan.n_scored
    score_batch = min(n_scored, MAX_SCORE_BATCH)
    eval_batch = b if strategy == "vmap" else max(b, min(MAX_EVAL_BATCH, slots, n_eval))
    return TrainSetup(
        num_classes=cfg.num_classes,
        batch_size=b,
        steps_per_epoch=slots // b,
        epochs=cfg.epochs,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        conv=conv,
        strategy=strategy,
        compute_dtype=cfg.compute_dtype,
        eval_batch=eval_batch,
        eval_batches=-(-n_eval // eval_batch),
        test_samples=n_eval,
        full_steps=-(-min_real // b),
        score_batch=score_batch,
        score_batches=-(-n_scored // score_batch),
    )


def make_optimizer(setup: TrainSetup) -> optax.GradientTransformation:
    """SGD as torch.optim.SGD does it: grad + wd * param, then heavy-ball momentum."""
    sgd = optax.sgd(setup.lr, momentum=setup.momentum or None)
    if setup.weight_decay:
        return optax.chain(optax.add_decayed_weights(setup.weight_decay), sgd)
    return sgd


@dataclasses.dataclass(frozen=True)
class DeviceData:
    """The data set as device arrays, replicated on every device of the mesh."""

    train_images: jax.Array  # uint8[N, 32, 32, 3]
    train_labels: jax.Array  # int32[N]
    test_images: jax.Array  # uint8[E, 32, 32, 3], E = eval_batches * eval_batch
    test_labels: jax.Array  # int32[E]
    test_mask: jax.Array  # bool[E], False on padding
    mean: jax.Array  # float32[3]
    std: jax.Array  # float32[3]


jax.tree_util.register_dataclass(
    DeviceData,
    data_fields=[f.name for f in dataclasses.fields(DeviceData)],
    meta_fields=[],
)


def put_data(dataset: Dataset, setup: TrainSetup, mesh: Mesh) -> DeviceData:
    e = setup.eval_batches * setup.eval_batch
    n_eval = min(setup.test_samples, len(dataset.test_labels))
    test_images = np.zeros((e, 32, 32, 3), np.uint8)
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


# --------------------------------------------------------------------------
# One model.  These functions take one model's arrays; the chunk trainer maps
# them over a stack of models.


def make_model(setup: TrainSetup) -> SmallCNN:
    dtype = jnp.bfloat16 if setup.compute_dtype == "bfloat16" else jnp.float32
    return SmallCNN(setup.num_classes, setup.conv, dtype)


def model_keys(ids):
    """(init key, order key) of one model from uint32[4] = (seed, stream, round, member)."""
    key = jax.random.key(ids[0])
    for part in (ids[1], ids[2], ids[3]):
        key = jax.random.fold_in(key, part)
    init_key, order_key = jax.random.split(key)
    return init_key, order_key


def model_inputs(data: DeviceData, idx):
    """(float32[..., 32, 32, 3] normalised images, int32[...] labels) of training rows idx."""
    x = data.train_images[idx].astype(jnp.float32) / 255.0
    return (x - data.mean) / data.std, data.train_labels[idx]


def init_state(setup: TrainSetup, ids):
    """(params, optimizer state) of one model, initialised from its ids."""
    init_key, _ = model_keys(ids)
    params = make_model(setup).init(init_key, jnp.zeros((1, 32, 32, 3), jnp.float32))["params"]
    return params, make_optimizer(setup).init(params)


def _masked_mean_loss(logits, labels, mask):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    count = mask.sum()
    return jnp.where(mask, ce, 0.0).sum() / jnp.maximum(count, 1), count


def train_epoch(setup: TrainSetup, data: DeviceData, state, idx, mask, ids, epoch):
    """One epoch of one model: shuffle its real slots, then scan over the batches.

    idx int32[P] and mask bool[P] are the model's rows (plan.py), ids uint32[4]
    its identity, epoch an int32 scalar.  Returns the new state and the mean
    training loss over the epoch's real examples.
    """
    model = make_model(setup)
    tx = make_optimizer(setup)
    _, order_key = model_keys(ids)
    u = jax.random.uniform(jax.random.fold_in(order_key, epoch), idx.shape)
    # Real slots get a random key in [0, 1), padding 2: padding sorts to the end,
    # so every batch but the last holds exactly batch_size real examples.
    order = jnp.argsort(jnp.where(mask, u, 2.0))
    batches_idx = idx[order].reshape(setup.steps_per_epoch, setup.batch_size)
    batches_mask = mask[order].reshape(setup.steps_per_epoch, setup.batch_size)

    def step(carry, batch, guard):
        params, opt_state, loss_sum = carry
        b_idx, b_mask = batch
        x, y = model_inputs(data, b_idx)

        def loss_fn(p):
            return _masked_mean_loss(model.apply({"params": p}, x), y, b_mask)

        (loss, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, new_opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if guard:
            take = count > 0
            new_params, new_opt_state = jax.tree.map(
                lambda new, old: jnp.where(take, new, old),
                (new_params, new_opt_state),
                (params, opt_state),
            )
        return (new_params, new_opt_state, loss_sum + loss * count), None

    # Padding sorts last, so only the batches past the fewest real examples any
    # model has (full_steps) can lack a real one (an OUT model, a model without
    # some targets): only those steps pay for the select that keeps the state.
    carry = (*state, jnp.zeros((), jnp.float32))
    f, s = setup.full_steps, setup.steps_per_epoch
    if f > 0:
        carry, _ = lax.scan(partial(step, guard=False), carry, (batches_idx[:f], batches_mask[:f]))
    if s > f:
        carry, _ = lax.scan(partial(step, guard=True), carry, (batches_idx[f:], batches_mask[f:]))
    params, opt_state, loss_sum = carry
    return (params, opt_state), loss_sum / jnp.maximum(mask.sum(), 1)


def evaluate_model(setup: TrainSetup, data: DeviceData, params, idx, mask, scored):
    """What one trained model reports.

    scored int32[S'] are the training-set indices of the images to score (S'
    = score_batches * score_batch, padded).  Returns (loss float32[S'], logits
    float32[S', C], train accuracy, test accuracy): the scored images go
    through the network score_batch at a time (in one pass for up to
    MAX_SCORE_BATCH); the accuracies count hits over the model's own real
    training slots and the (masked) test set.
    """
    model = make_model(setup)

    def apply(x):
        return model.apply({"params": params}, x).astype(jnp.float32)

    def score_batch(_, rows):
        x, y = model_inputs(data, rows)
        logits = apply(x)
        return None, (optax.softmax_cross_entropy_with_integer_labels(logits, y), logits)

    _, (loss, logits) = lax.scan(
        score_batch, None, scored.reshape(setup.score_batches, setup.score_batch)
    )
    loss, logits = loss.reshape(-1), logits.reshape(-1, logits.shape[-1])

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
        data.test_images.reshape(-1, b, 32, 32, 3),
        data.test_labels.reshape(-1, b),
        data.test_mask.reshape(-1, b),
    )
    test_hits, _ = lax.scan(test_batch, jnp.zeros((), jnp.int32), test)
    train_acc = train_hits / jnp.maximum(mask.sum(), 1)
    test_acc = test_hits / jnp.maximum(data.test_mask.sum(), 1)
    return loss, logits, train_acc.astype(jnp.float32), test_acc.astype(jnp.float32)


def train_one(setup: TrainSetup, data: DeviceData, idx, mask, ids, scored):
    """Trains one model from scratch and evaluates it: the whole job, for one model.

    Returns (params, (loss, logits, train accuracy, test accuracy, epoch losses
    float32[epochs])).  The chunk trainer runs the same three stages, mapped
    over a stack of models, with the host loop between epochs.
    """
    state = init_state(setup, ids)
    epoch_losses = []
    for e in range(setup.epochs):
        state, loss = train_epoch(setup, data, state, idx, mask, ids, jnp.int32(e))
        epoch_losses.append(loss)
    loss, logits, train_acc, test_acc = evaluate_model(setup, data, state[0], idx, mask, scored)
    return state[0], (loss, logits, train_acc, test_acc, jnp.stack(epoch_losses))


# --------------------------------------------------------------------------
# A chunk of models.


def _over_models(strategy: str, fn: Callable, shared, *per_model):
    """Applies fn(shared, *one_model_args) to every model of the local stack."""
    if strategy == "vmap":
        return jax.vmap(fn, in_axes=(None,) + (0,) * len(per_model))(shared, *per_model)
    return lax.map(lambda args: fn(shared, *args), per_model)


class Interrupted(Exception):
    """The run was asked to stop (Ctrl-C, SIGTERM) between two epochs of a chunk."""


class ChunkTrainer:
    """Compiles and runs the three stages (init, epoch, evaluate) for K models at once.

    ``plan`` (plan.py) says which rows each job trains on and which images every
    model scores.  The keywords seed/target/subset_size build the single-target
    plan, for callers that have no plan at hand.
    """

    def __init__(
        self,
        setup: TrainSetup,
        dataset: Dataset,
        *,
        plan=None,
        seed: int | None = None,
        target: int | None = None,
        subset_size: int | None = None,
        models_per_chunk: int,
        devices: Sequence[jax.Device] | None = None,
    ):
        devices = list(devices if devices is not None else jax.local_devices())
        if models_per_chunk % len(devices):
            raise ValueError("models_per_chunk must be a multiple of the device count")
        if plan is None:
            plan = SingleTargetPlan(
                seed=seed,
                n_train=len(dataset.train_labels),
                target=target,
                subset_size=subset_size,
                batch_size=setup.batch_size,
            )
        if plan.slots != setup.slots or -(-plan.min_real // setup.batch_size) != setup.full_steps:
            raise ValueError("the setup was made for another plan (make_setup(..., plan=plan))")
        self.setup = setup
        self.plan = plan
        self.models_per_chunk = models_per_chunk
        self.mesh = Mesh(np.array(devices), (AXIS,))
        self.data = put_data(dataset, setup, self.mesh)
        self._stacked = NamedSharding(self.mesh, P(AXIS))
        self._compiled = None
        self.compile_seconds = 0.0

    def _sharded(self, fn, n_in, n_out):
        """jit(shard_map(models-stacked fn)) with data replicated and models sharded."""
        in_specs = (P(),) + (P(AXIS),) * n_in
        out_specs = (P(AXIS),) * n_out if n_out > 1 else P(AXIS)
        return jax.shard_map(
            fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
        )

    def _build(self):
        setup, strategy = self.setup, self.setup.strategy

        def init(data, ids):
            del data
            return _over_models(strategy, lambda _, i: init_state(setup, i), None, ids)

        def epoch(data, state, idx, mask, ids, ep):
            fn = lambda d, s, i, m, k, e: train_epoch(setup, d, s, i, m, k, e)  # noqa: E731
            return _over_models(strategy, fn, data, state, idx, mask, ids, ep)

        def evaluate(data, state, idx, mask, scored):
            fn = lambda d, s, i, m, sc: evaluate_model(setup, d, s[0], i, m, sc)  # noqa: E731
            return _over_models(strategy, fn, data, state, idx, mask, scored)

        k = self.models_per_chunk
        rows = jax.ShapeDtypeStruct((k, setup.slots), jnp.int32, sharding=self._stacked)
        masks = jax.ShapeDtypeStruct((k, setup.slots), jnp.bool_, sharding=self._stacked)
        ids = jax.ShapeDtypeStruct((k, 4), jnp.uint32, sharding=self._stacked)
        eps = jax.ShapeDtypeStruct((k,), jnp.int32, sharding=self._stacked)

        init_fn = jax.jit(self._sharded(init, 1, 1))
        t0 = time.perf_counter()
        init_c = init_fn.lower(self.data, ids).compile()
        state_shape = jax.eval_shape(init_fn, self.data, ids)
        state_shape = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self._stacked), state_shape
        )
        epoch_fn = jax.jit(self._sharded(epoch, 5, 2), donate_argnums=(1,))
        epoch_c = epoch_fn.lower(self.data, state_shape, rows, masks, ids, eps).compile()
        n_scored = setup.score_batches * setup.score_batch
        scored = jax.ShapeDtypeStruct((k, n_scored), jnp.int32, sharding=self._stacked)
        eval_fn = jax.jit(self._sharded(evaluate, 4, 4))
        eval_c = eval_fn.lower(self.data, state_shape, rows, masks, scored).compile()
        self.compile_seconds = time.perf_counter() - t0
        self._compiled = (init_c, epoch_c, eval_c)

    def compile(self) -> float:
        """Compiles all stages (once); returns the seconds it took."""
        if self._compiled is None:
            self._build()
        return self.compile_seconds

    def run(
        self,
        jobs: Sequence[Job],
        on_epoch: Callable[[int], None] | None = None,
        keep_params: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> ModelOutputs:
        """Trains and evaluates up to models_per_chunk jobs.

        ``on_epoch(e)`` runs after epoch e has finished on the device (so only
        pass it when something, a progress bar, wants to know); without it the
        host queues every epoch at once and waits only for the results.
        ``should_stop()`` is asked between epochs; when it says yes the chunk is
        abandoned with ``Interrupted``.
        """
        k = self.models_per_chunk
        if not 0 < len(jobs) <= k:
            raise ValueError(f"a chunk takes 1..{k} jobs, got {len(jobs)}")
        self.compile()
        init_c, epoch_c, eval_c = self._compiled
        # Fill a short chunk with copies of its last job: same shapes, one compile;
        # the copies' results are dropped.
        padded = list(jobs) + [jobs[-1]] * (k - len(jobs))
        idx, mask, ids = self.plan.rows(padded)
        n_scored = self.plan.n_scored
        scored = np.zeros((k, self.setup.score_batches * self.setup.score_batch), np.int32)
        scored[:, :n_scored] = self.plan.scored_rows(padded)
        put = partial(jax.device_put, device=self._stacked)
        idx, mask, ids, scored = put(idx), put(mask), put(ids), put(scored)
        state = init_c(self.data, ids)
        epoch_losses = []
        for e in range(self.setup.epochs):
            if should_stop is not None and should_stop():
                raise Interrupted
            ep = put(np.full((k,), e, np.int32))
            state, loss = epoch_c(self.data, state, idx, mask, ids, ep)
            epoch_losses.append(loss)
            if on_epoch is not None:
                loss.block_until_ready()
                on_epoch(e)
        loss, logits, train_acc, test_acc = eval_c(self.data, state, idx, mask, scored)
        fetched = jax.device_get((loss, logits, train_acc, test_acc, epoch_losses))
        params = None
        if keep_params:
            params = jax.tree.map(lambda a: np.asarray(a)[: len(jobs)], state[0])
        return ModelOutputs.for_jobs(
            jobs,
            params=params,
            loss=np.asarray(fetched[0])[:, :n_scored],
            logits=np.asarray(fetched[1])[:, :n_scored],
            train_accuracy=fetched[2],
            test_accuracy=fetched[3],
            epoch_loss=np.stack(fetched[4], axis=1),
        )


def model_footprint_bytes(setup: TrainSetup) -> int:
    """Bytes one model of a vmapped chunk needs on the device during a training step.

    From ``jax.eval_shape`` of the real model, nothing compiled or allocated: the
    parameters and the optimizer state (the epoch donates them, so its output
    reuses their buffers), one more parameter tree for the gradients (XLA fuses
    the update into the step), the VJP's residuals (the activations kept for the
    backward pass of one batch) and the batch itself.  tests/test_formulations.py
    checks it against the per-model growth of a compiled vmapped chunk's
    ``memory_analysis()``: the estimate is 10-30% above it.
    """
    dtype = jnp.bfloat16 if setup.compute_dtype == "bfloat16" else jnp.float32
    model = SmallCNN(setup.num_classes, setup.conv, dtype)
    x = jax.ShapeDtypeStruct((setup.batch_size, 32, 32, 3), jnp.float32)
    y = jax.ShapeDtypeStruct((setup.batch_size,), jnp.int32)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    params = params["params"]
    opt_state = jax.eval_shape(make_optimizer(setup).init, params)

    def loss(p, xb, yb):
        logits = model.apply({"params": p}, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    # jax.vjp's backward function is a pytree whose leaves are the residuals.
    residuals = jax.eval_shape(
        lambda p, xb, yb: jax.vjp(partial(loss, xb=xb, yb=yb), p)[1], params, x, y
    )

    def nbytes(tree):
        return sum(a.size * jnp.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))

    return nbytes((params, opt_state)) + nbytes(params) + nbytes((residuals, x, y))


def auto_models_per_chunk(setup: TrainSetup, n_jobs: int, devices: Sequence[jax.Device]) -> int:
    """The largest chunk that fits the devices' memory, capped by the work there is.

    CPU: a few models per device (more only adds memory traffic there).  GPU and
    other accelerators: 60% of the device's memory limit divided by
    ``model_footprint_bytes`` (the rest for the data set, XLA's temporaries and
    fragmentation), capped at 1024 per device.
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
