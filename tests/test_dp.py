"""DP-SGD training (training/dp.py) and the audit of a whole run, on the tiny CNN.

What is checked: sigma 0 with C = inf under shuffle trains exactly like the
non-private path; every clipped per-example gradient of a run's step has norm
at most C and their sum is what the step uses (also against jax_privacy's
``clipped_grad`` where it is installed); the noise has the law N(0, σ²C²)/B and
comes from (seed, model, epoch, step) alone; the chunking does not change a
DP model; and a DP run writes the privacy block that ``jaxmia analyze``
recomputes from the saved arrays byte for byte.
"""

from __future__ import annotations

import json
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmia.kinds.single_target.plan import calibration_jobs
from jaxmia.training import dp
from jaxmia.training.one_model import init_state, make_model, model_inputs, model_key, put_data
from jaxmia.training.setup import make_setup

from conftest import TINY_TARGET, chunk_trainer, single_target_plan, tiny_config
from numerics import assert_close, assert_tree_close

pytest.importorskip("dp_accounting")

# The private path sums clipped per-example gradients where the non-private one
# differentiates a batch mean: the same float32 terms added in another order, a few
# unit roundoffs (2**-24) of a gradient's scale per step; over the tiny run's 9
# steps, with momentum carrying each difference ~10 steps on, under 1e-4 of a
# parameter's scale (tests/test_train.py derives the same bound for other orders).
PARAMS_BOUND = 1e-4
# One step's clipped sum against the same sum of materialised per-example
# gradients: one sum of <= 40 float32 terms, 40 * 2**-24 = 2.4e-6 of its scale.
STEP_BOUND = 1e-5


def _trainer(ds, cfg, k=4, strategy="map"):
    plan = single_target_plan(cfg, ds, TINY_TARGET)
    setup = make_setup(cfg.replace(strategy=strategy, conv="im2col"), ds, "cpu", plan)
    return chunk_trainer(cfg, ds, plan, setup, k)


@pytest.mark.slow
def test_sigma_zero_without_clipping_under_shuffle_is_non_private_training(tiny_dataset):
    jobs = calibration_jobs(2)
    plain = _trainer(tiny_dataset, tiny_config()).run(jobs, keep_params=True)
    cfg = tiny_config(dp={"noise_multiplier": 0, "l2_clip": None, "sampling": "shuffle"})
    private = _trainer(tiny_dataset, cfg).run(jobs, keep_params=True)
    assert_tree_close(private.params, plain.params, PARAMS_BOUND, what="parameters")
    assert_close(private.loss, plain.loss, PARAMS_BOUND, scale=1.0, what="target loss")
    assert_close(private.epoch_loss, plain.epoch_loss, PARAMS_BOUND, scale=1.0, what="epoch loss")


def _one_step(ds, l2_clip, sigma=0.0):
    """A run's first Poisson step: the model as initialised, the sample of epoch 0's step 0."""
    cfg = tiny_config(dp={"noise_multiplier": sigma, "l2_clip": l2_clip})
    plan = single_target_plan(cfg, ds, TINY_TARGET)
    setup = make_setup(cfg.replace(strategy="map", conv="im2col"), ds, "cpu", plan)
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("models",))
    data = put_data(ds, setup, mesh)
    idx, mask, ids = plan.rows(calibration_jobs(1)[:1])
    state = init_state(setup, ids[0], jnp.float32(sigma))
    rows, take = dp.poisson_batches(setup.dp, idx[0], mask[0], model_key(ids[0]), jnp.int32(0))
    model = make_model(setup)

    def batch_losses(p, r):
        x, y = model_inputs(data, r)
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y)

    return setup, state, rows[0], take[0], batch_losses, ids[0]


@pytest.mark.slow
def test_clipped_gradients_are_at_most_c_and_are_what_the_step_sums(tiny_dataset):
    c = 0.5
    setup, state, rows, take, batch_losses, ids = _one_step(tiny_dataset, c)
    n = int(take.sum())
    assert 0 < n <= setup.dp.buffer
    real = rows[:n]
    per_example = jax.jit(jax.vmap(jax.grad(lambda p, r: batch_losses(p, r[None])[0]), (None, 0)))
    grads = per_example(state.params, real)
    norms = np.sqrt(
        sum(np.sum(np.square(np.asarray(g).reshape(n, -1)), 1) for g in jax.tree.leaves(grads))
    )
    factor = np.asarray(dp.clip_factors(jnp.asarray(norms), jnp.ones(n, bool), c))
    clipped = [
        np.asarray(g) * factor.reshape(-1, *[1] * (g.ndim - 1)) for g in jax.tree.leaves(grads)
    ]
    clipped_norms = np.sqrt(sum(np.sum(np.square(g.reshape(n, -1)), 1) for g in clipped))
    assert (norms > c).any()  # clipping binds on this step
    # ||g * min(1, C/||g||)|| <= C, up to float32 rounding of the product (2**-23 relative).
    assert (clipped_norms <= c * (1 + 1e-6)).all()
    np.testing.assert_allclose(clipped_norms[norms > c], c, rtol=1e-6)
    want = [g.sum(0) for g in clipped]
    step = jax.jit(partial(dp.private_gradient, setup.dp, batch_losses))
    (_, count), got = step(state.params, rows, take, jnp.float32(0.0), jax.random.key(0))
    assert int(count) == n
    b = setup.dp.expected_batch  # sigma 0: the clipped sum over the expected batch size
    for g, w in zip(jax.tree.leaves(got), want, strict=True):
        assert_close(np.asarray(g) * b, w, STEP_BOUND, what="clipped sum")
    clipping = pytest.importorskip("jax_privacy.clipping")
    theirs = jax.jit(clipping.clipped_grad(lambda p, r: batch_losses(p, r).sum(), l2_clip_norm=c))(
        state.params, real
    )
    for g, w in zip(jax.tree.leaves(theirs), want, strict=True):
        assert_close(np.asarray(g), w, STEP_BOUND, what="jax_privacy.clipped_grad")


def test_noise_has_the_law_and_comes_from_seed_model_epoch_step(tiny_dataset):
    sigma, c = 2.0, 0.5
    setup, state, rows, take, batch_losses, ids = _one_step(tiny_dataset, c, sigma)
    empty = jnp.zeros_like(take)  # an empty sample still takes its noisy step

    step = jax.jit(partial(dp.private_gradient, setup.dp, batch_losses))

    def noise(key):
        _, g = step(state.params, rows, empty, jnp.float32(sigma), key)
        return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(g)])

    base = model_key(ids)
    a = noise(dp.step_key(base, 1, 0))
    # N(0, (sigma C / B)^2) per coordinate: the sample std of ~2.1M draws is within
    # 5 standard errors (sqrt(1/(2N)) relative) of sigma C / B, and the mean of 0.
    want = sigma * c / setup.dp.expected_batch
    se = 1 / np.sqrt(2 * a.size)
    assert abs(a.std() / want - 1) < 5 * se
    assert abs(a.mean()) < 5 * want / np.sqrt(a.size)
    np.testing.assert_array_equal(a, noise(dp.step_key(base, 1, 0)))  # the same key, the same noise
    b = noise(dp.step_key(base, 1, 1))  # another step: independent noise
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(a.size)


@pytest.mark.slow
def test_a_dp_model_does_not_depend_on_its_chunk(tiny_dataset):
    cfg = tiny_config(dp={"noise_multiplier": [0.5, 2.0], "l2_clip": 1.0})
    jobs = calibration_jobs(2)
    four = _trainer(tiny_dataset, cfg, k=4).run(jobs)
    two = [_trainer(tiny_dataset, cfg, k=2).run(jobs[i : i + 2]) for i in (0, 2)]
    # lax.map runs each model alone: the same program per model, whatever the chunk.
    np.testing.assert_array_equal(four.loss, np.concatenate([t.loss for t in two]))
    # Different levels do train differently.
    assert not np.allclose(four.loss[0], four.loss[2])


# ---------------------------------------------------------------- whole runs

RUN = dict(
    dataset="synthetic",
    num_classes=10,
    target_index=3,
    n_iterations=4,
    subset_size=24,
    epochs=2,
    batch_size=8,
    lr=0.05,
    seed=2,
    eval_pairs=4,
    models_per_chunk=4,
    test_samples=16,
    canary="mislabeled",
    dp={"noise_multiplier": [0.5, 4.0], "l2_clip": 1.0},
    run_name="dp",
)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["single_target", "targets"])
def test_a_dp_run_reports_its_audit_and_analyze_recomputes_it(tmp_path, kind):
    from jaxmia.analyze import analyze
    from jaxmia.attack.accounting import dp_sgd_epsilon
    from jaxmia.config import Config
    from jaxmia.experiment import run_experiment

    extra = {}
    if kind == "targets":
        extra = dict(
            experiment="targets",
            targets=[3, 5, 8, 13],
            n_models=8,
            eval_models=4,
            target_index=None,
            n_iterations=100,
            eval_pairs=1,
        )
    cfg = Config(**{**RUN, **extra})
    results = run_experiment(cfg, data_dir=tmp_path / "data", output_dir=tmp_path, progress=False)
    run = tmp_path / "dp"
    block = results["privacy"]
    n = 25 if kind == "single_target" else 26  # n + 1, or n + T/2
    assert block["sampling_rate"] == 8 / n and block["steps"] == 2 * -(-n // 8)
    assert block["delta"] == 1 / (2 * n)
    for level, sigma in zip(block["levels"], (0.5, 4.0), strict=True):
        assert level["noise_multiplier"] == sigma
        assert level["epsilon"] == dp_sgd_epsilon(8 / n, sigma, block["steps"], 1 / (2 * n))
        assert level["empirical"] is not None
    with np.load(run / ("losses.npz" if kind == "single_target" else "targets.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    if kind == "single_target":
        np.testing.assert_array_equal(arrays["noise_multiplier"], [0.5, 4.0, 0.5, 4.0])
        assert arrays["target_label"] != arrays["original_label"]
        assert results["canary"]["kind"] == "mislabeled"
        cp = block["levels"][0]["empirical"]["clopper_pearson"]
        assert cp["n_member"] == cp["n_nonmember"] == 2
    else:
        np.testing.assert_array_equal(arrays["noise_multiplier"], [0.5, 0.5, 4.0, 4.0] * 2)
        assert (arrays["target_labels"] != arrays["original_labels"]).all()
        one = block["levels"][0]["empirical"]["one_run"]
        assert len(one["per_model"]) == 2 and one["confidence"] == 0.95
    before = (run / "results.json").read_bytes()
    analyze(run)
    assert (run / "results.json").read_bytes() == before
    assert (run / "privacy_audit.png").is_file()
    json.loads(before)


def test_a_schedule_counts_dp_sgds_steps(tiny_dataset):
    # Under Poisson sampling an epoch is DP-SGD's own step count (privacy.py), not
    # the shuffled batches of the slots: a cosine schedule must end at 0 on the
    # last of those steps, as optax.warmup_cosine_decay_schedule does over T of them.
    from jaxmia.training.setup import make_schedule

    cfg = tiny_config(
        dp={"noise_multiplier": 1.0}, subset_size=40, batch_size=16, epochs=3, lr_schedule="cosine"
    )
    plan = single_target_plan(cfg, tiny_dataset, TINY_TARGET)
    setup = make_setup(cfg, tiny_dataset, "cpu", plan)
    assert setup.dp.sampling == "poisson"
    assert setup.updates_per_epoch == setup.dp.steps_per_epoch
    total = cfg.epochs * setup.dp.steps_per_epoch
    t = np.arange(total + 1)
    want = cfg.lr * (1 + np.cos(np.pi * t / total)) / 2
    got = np.array([float(make_schedule(setup)(int(i))) for i in t])
    # optax evaluates the cosine in float32: a few roundoffs of lr.
    assert_close(got, want, 1e-6, scale=cfg.lr)
