"""Every formulation `auto` can pick, trained as a chunk, against plain one-model training.

(strategy, conv) in {(vmap, xla), (vmap, im2col), (map, im2col), (vmap, winograd),
(map, winograd)}: the chunk trainer (padding, masks, vmap or lax.map, the
last-step guard) must give each model the parameters that an ordinary Flax/optax
loop over that model's real examples gives, with the same convolution.  The
reference below is written from flax and optax alone (it does not call the
trainer's per-model code), with the model's keys derived as plan.py documents:
fold_in(key(seed), stream, round, member), split into (init, order).

Tolerances, relative to each parameter's largest value.  One step's gradients
of the chunk and of the reference differ by float32 rounding only (measured
under "highest": 0 to 4e-7 for im2col and Winograd, whose chunk programs repeat
the reference's arithmetic, up to 1.5e-6 for the vmapped lax.conv, which XLA
turns into a grouped convolution that sums in another order).  Training carries
that along, and a max-pool whose two largest inputs nearly tie can route a
gradient to the other input after a rounding-sized change, a local difference
of the size of one update.  Measured after 3 epochs at lr 0.01: im2col and
Winograd 4e-7 (bound 2e-6; 2.2e-7 to 3.4e-7 on an AMD EPYC under its native
AVX2, and compiled for SSE4_2), vmapped lax.conv 4e-4 in conv2's kernel on an
Intel Xeon with AVX-512 (bound 1e-3; 2.4e-7 on the EPYC).  bfloat16 rounds every
activation to 8 bits (2**-9 = 2e-3), and another fusion rounds at other places,
a few 2**-9 of each gradient per step; over the 6 steps of 2 epochs, carried by
momentum, vmapped lax.conv measured 8.5e-3 under AVX2 and AVX-512 and 2.3e-2
compiled for SSE4_2, which fuses the bf16 conversions differently (bound 5e-2);
lax.map with Winograd (F(2x2, 3x3) in bf16) repeats the reference to 5e-6.
A higher lr (0.05) turns the same rounding into 1e-3 (Winograd) to 5e-2
(lax.conv) after 3 epochs: a chaotic trajectory, not a wrong gradient; tests/
test_model.py bounds the gradients themselves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmia.kinds.single_target.plan import calibration_jobs
from jaxmia.models.cnn import SmallCNN
from jaxmia.training.chunk import ChunkTrainer
from jaxmia.training.memory import auto_models_per_chunk, model_footprint_bytes
from jaxmia.training.setup import make_optimizer, make_setup

from conftest import (
    TINY_TARGET,
    chunk_trainer,
    job_start,
    single_target_plan,
    tiny_config,
    tiny_model_spec,
)
from numerics import assert_tree_close

TARGET = TINY_TARGET
FORMULATIONS = [
    ("vmap", "xla"),
    ("vmap", "im2col"),
    ("map", "im2col"),
    ("vmap", "winograd"),
    ("map", "winograd"),
]
# Max |difference| over each parameter's scale (tests/numerics.py), see above.
BOUND = {"xla": 1e-3, "im2col": 2e-6, "winograd": 2e-6, "bfloat16": 5e-2}


def tiny_cfg(**kw):
    # lr 0.01: at the tiny training's 0.05 three epochs are chaotic enough to
    # carry rounding far beyond the bounds above (module docstring).
    return tiny_config(lr=0.01, test_samples=32, **kw)


_REFERENCES: dict = {}


def reference_params(ds, cfg, job):
    """One model trained on its real examples only, batch after batch, in plain JAX.

    cfg.conv names the convolution; cfg.strategy is not used (one model).  Cached,
    so that (vmap, c) and (map, c) share the reference of conv c.
    """
    key = (id(ds), cfg.replace(strategy="auto"), job)
    if key not in _REFERENCES:
        _REFERENCES[key] = _reference_params(ds, cfg, job)
    return _REFERENCES[key]


def _reference_params(ds, cfg, job):
    setup = make_setup(cfg, ds, "cpu", single_target_plan(cfg, ds, TARGET))
    idx, mask, _, _, init_key, order_key = job_start(cfg, ds, job, TARGET)
    dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
    model = SmallCNN(cfg.num_classes, setup.conv, dtype)
    tx = make_optimizer(setup)
    params = model.init(init_key, jnp.zeros((1, *ds.image_shape)))["params"]
    opt_state = tx.init(params)
    images = (ds.train_images.astype(np.float32) / 255.0 - ds.mean) / ds.std

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for e in range(cfg.epochs):
        u = jax.random.uniform(jax.random.fold_in(order_key, e), idx.shape)
        order = np.asarray(jnp.argsort(jnp.where(mask, u, 2.0)))
        real = idx[order][: int(mask.sum())]
        for s in range(0, len(real), cfg.batch_size):
            b = real[s : s + cfg.batch_size]
            params, opt_state = step(params, opt_state, images[b], ds.train_labels[b])
    return params


def assert_params_match(chunk_params, i, ref, bound):
    one = jax.tree.map(lambda a: np.asarray(a)[i], chunk_params)
    assert_tree_close(one, jax.tree.map(lambda r: np.asarray(r, np.float32), ref), bound)


def train_and_compare(ds, cfg, strategy, conv, bound):
    cfg = cfg.replace(strategy=strategy, conv=conv)
    plan = single_target_plan(cfg, ds, TARGET)
    setup = make_setup(cfg, ds, "cpu", plan)
    assert (setup.strategy, setup.conv) == (strategy, conv)
    jobs = calibration_jobs(1)  # the IN and the OUT model of round 0
    with jax.default_matmul_precision("highest"):
        res = ChunkTrainer(
            setup, ds, plan=plan, models_per_chunk=2, devices=jax.local_devices()[:1]
        ).run(jobs, keep_params=True)
        for i, job in enumerate(jobs):
            ref = reference_params(ds, cfg, job)
            assert_params_match(res.params, i, ref, bound)


@pytest.mark.parametrize(("strategy", "conv"), FORMULATIONS)
@pytest.mark.slow
def test_chunk_equals_one_model_training(tiny_dataset, strategy, conv):
    # subset_size 40 + x = 41 real slots: the IN model's last batch is partial.
    cfg = tiny_cfg()
    train_and_compare(tiny_dataset, cfg, strategy, conv, BOUND[conv])


@pytest.mark.parametrize(("strategy", "conv"), [("vmap", "xla"), ("map", "winograd")])
@pytest.mark.slow
def test_chunk_equals_one_model_training_bfloat16(tiny_dataset, strategy, conv):
    cfg = tiny_cfg(compute_dtype="bfloat16", epochs=2)
    train_and_compare(tiny_dataset, cfg, strategy, conv, BOUND["bfloat16"])


def test_auto_picks_only_tested_formulations(tiny_dataset):
    cfg = tiny_cfg()
    plan = single_target_plan(cfg, tiny_dataset, TARGET)
    for platform in ("cpu", "gpu"):
        setup = make_setup(cfg, tiny_dataset, platform, plan)
        assert (setup.strategy, setup.conv) in FORMULATIONS


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "dp"),
    # DP-SGD refuses BatchNorm models (config.py), so the WRN runs without it.
    [("cnn", None), ("wrn10_1", None), ("cnn", {"noise_multiplier": 1.0, "l2_clip": 1.0})],
)
def test_model_footprint_bounds_a_compiled_chunk(tiny_dataset, monkeypatch, model, dp):
    # The per-model growth of a vmapped chunk's compiled epoch (arguments + outputs
    # + temporaries - donated aliases, from k = 2 to k = 6 models; the replicated
    # data set cancels out) must not exceed the eval_shape estimate, and the
    # estimate must not waste more than a third of the memory it reserves.  For
    # the BatchNorm WRN the estimate holds the batch statistics and BatchNorm's
    # training-mode residuals; under DP-SGD the per-example gradients, most of it.
    from jaxmia.models import MODELS

    monkeypatch.setitem(MODELS, "wrn10_1", tiny_model_spec("wrn10_1"))
    cfg = tiny_cfg(strategy="vmap", conv="xla", model=model, dp=dp)
    plan = single_target_plan(cfg, tiny_dataset, TARGET)
    setup = make_setup(cfg, tiny_dataset, "cpu", plan)
    total = {}
    for k in (2, 6):
        tr = chunk_trainer(cfg, tiny_dataset, plan, setup, k)
        tr.compile()
        ma = tr._compiled[1].memory_analysis()  # the epoch
        total[k] = (
            ma.argument_size_in_bytes
            + ma.output_size_in_bytes
            + ma.temp_size_in_bytes
            - ma.alias_size_in_bytes
        )
    measured = (total[6] - total[2]) / 4
    estimate = model_footprint_bytes(setup)
    assert measured <= estimate <= 1.5 * measured, (measured, estimate)


class _FakeGpu:
    platform = "gpu"

    def memory_stats(self):
        return {"bytes_limit": 80 * 2**30}


def test_auto_models_per_chunk_divides_the_memory_by_the_footprint(tiny_dataset):
    cfg = tiny_cfg(batch_size=64, num_classes=100)
    setup = make_setup(cfg, tiny_dataset, "gpu", single_target_plan(cfg, tiny_dataset, TARGET))
    per_model = model_footprint_bytes(setup)
    k = auto_models_per_chunk(setup, 100_000, [_FakeGpu()])
    assert k == min(1024, int(0.6 * 80 * 2**30) // per_model)
    assert auto_models_per_chunk(setup, 10, [_FakeGpu()] * 2) == 10  # capped by the work
    assert auto_models_per_chunk(setup, 100, jax.local_devices()[:1]) == 4  # CPU
