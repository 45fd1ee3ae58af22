"""A chunk of K models trained at once: the per-model code mapped, sharded and compiled.

``ChunkTrainer`` stacks a chunk of K models along a leading axis, maps the
per-model code of one_model.py over it (``jax.vmap``, or ``lax.map`` where that
is faster, e.g. on CPU), spreads the axis over the local devices with
``jax.shard_map``, and compiles one program per stage.  The host loop calls the
compiled epoch once per epoch (a ``lax.scan`` over that epoch's steps runs
inside), donating the stacked ``TrainState``, and updates the progress bars
between calls (and only waits for an epoch when a progress bar wants to know).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmia.data import Dataset
from jaxmia.runs.outputs import ModelOutputs
from jaxmia.runs.plan import Job, Plan
from jaxmia.training.one_model import evaluate_model, init_state, put_data, train_epoch
from jaxmia.training.setup import TrainSetup

AXIS = "models"


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
    model scores; ``setup`` must have been made for it and for ``dataset``
    (``make_setup(cfg, dataset, platform, plan)``), else ValueError.  K =
    ``models_per_chunk``, a multiple of the number of ``devices`` (default: the
    local devices), else ValueError.  Under DP-SGD (``setup.dp``)
    ``noise_multipliers(jobs)`` gives each job's sigma (float32[K],
    privacy.noise_multipliers); without it every model's sigma is 0.
    """

    def __init__(
        self,
        setup: TrainSetup,
        dataset: Dataset,
        *,
        plan: Plan,
        models_per_chunk: int,
        devices: Sequence[jax.Device] | None = None,
        noise_multipliers: Callable[[Sequence[Job]], np.ndarray] | None = None,
    ):
        devices = list(devices if devices is not None else jax.local_devices())
        if models_per_chunk % len(devices):
            raise ValueError("models_per_chunk must be a multiple of the device count")
        if plan.slots != setup.slots or -(-plan.min_real // setup.batch_size) != setup.full_steps:
            raise ValueError(
                "the setup was made for another plan (make_setup(cfg, dataset, platform, plan))"
            )
        self.setup = setup
        self.plan = plan
        self.models_per_chunk = models_per_chunk
        self.noise_multipliers = noise_multipliers
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

        def init(data, ids, sigma):
            del data
            return _over_models(strategy, lambda _, i, s: init_state(setup, i, s), None, ids, sigma)

        def epoch(data, state, idx, mask, ids, ep):
            fn = partial(train_epoch, setup)
            return _over_models(strategy, fn, data, state, idx, mask, ids, ep)

        def evaluate(data, state, idx, mask, scored):
            fn = partial(evaluate_model, setup)
            return _over_models(strategy, fn, data, state, idx, mask, scored)

        k = self.models_per_chunk
        rows = jax.ShapeDtypeStruct((k, setup.slots), jnp.int32, sharding=self._stacked)
        masks = jax.ShapeDtypeStruct((k, setup.slots), jnp.bool_, sharding=self._stacked)
        ids = jax.ShapeDtypeStruct((k, 4), jnp.uint32, sharding=self._stacked)
        eps = jax.ShapeDtypeStruct((k,), jnp.int32, sharding=self._stacked)
        sigmas = jax.ShapeDtypeStruct((k,), jnp.float32, sharding=self._stacked)

        init_fn = jax.jit(self._sharded(init, 2, 1))
        t0 = time.perf_counter()
        init_c = init_fn.lower(self.data, ids, sigmas).compile()
        state_shape = jax.eval_shape(init_fn, self.data, ids, sigmas)
        state_shape = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self._stacked), state_shape
        )
        epoch_fn = jax.jit(self._sharded(epoch, 5, 2), donate_argnums=(1,))
        epoch_c = epoch_fn.lower(self.data, state_shape, rows, masks, ids, eps).compile()
        n_scored = setup.score_batches * setup.score_batch
        scored = jax.ShapeDtypeStruct((k, n_scored), jnp.int32, sharding=self._stacked)
        eval_fn = jax.jit(self._sharded(evaluate, 4, 5))
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
        abandoned with ``Interrupted``.  ``keep_params`` hands back the final
        parameters and batch statistics (tests).
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
        sigma = np.zeros(k, np.float32)
        if self.setup.dp is not None and self.noise_multipliers is not None:
            sigma = np.asarray(self.noise_multipliers(padded), np.float32).reshape(k)
        idx, mask, ids, scored = put(idx), put(mask), put(ids), put(scored)
        state = init_c(self.data, ids, put(sigma))
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
        loss, logits, train_acc, test_acc, views = eval_c(self.data, state, idx, mask, scored)
        fetched = jax.device_get((loss, logits, train_acc, test_acc, epoch_losses, views))
        params = batch_stats = None
        if keep_params:
            params, batch_stats = jax.tree.map(
                lambda a: np.asarray(a)[: len(jobs)], (state.params, state.batch_stats)
            )
        return ModelOutputs.for_jobs(
            jobs,
            params=params,
            batch_stats=batch_stats,
            loss=np.asarray(fetched[0])[:, :n_scored],
            logits=np.asarray(fetched[1])[:, :n_scored],
            train_accuracy=fetched[2],
            test_accuracy=fetched[3],
            epoch_loss=np.stack(fetched[4], axis=1),
            view_logits=np.asarray(fetched[5])[:, :n_scored],
        )
