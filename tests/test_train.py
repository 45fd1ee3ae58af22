"""The vmapped trainer against plain one-model-at-a-time training, and its invariances."""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmia.errors import UserError
from jaxmia.kinds.population.plan import PopulationPlan
from jaxmia.kinds.single_target.plan import calibration_jobs, job_rows, steps_per_epoch
from jaxmia.kinds.targets.plan import TargetsPlan
from jaxmia.models import MODELS
from jaxmia.runs.plan import CALIBRATION, Job
from jaxmia.training import augment
from jaxmia.training.chunk import ChunkTrainer
from jaxmia.training.one_model import (
    init_state,
    make_model,
    model_inputs,
    put_data,
    train_one,
    training_loss,
)
from jaxmia.training.setup import make_optimizer, make_schedule, make_setup, step_lr
from jaxmia.training.state import TrainState

from conftest import RECIPE, TINY_MODELS, TINY_TARGET, job_start, single_target_plan, tiny_config
from numerics import assert_close, assert_tree_close

TARGET = TINY_TARGET
# Tolerances (tests/numerics.py: max |difference| over each array's scale).  The
# chunk trainer and the references below compute the same float32 steps in
# differently compiled programs (vmapped or mapped, padded and masked, other
# chunk widths), so their sums round in another order: a few unit roundoffs
# (2**-24 = 6e-8) of a gradient's scale per step.  Over the 9-27 steps here,
# with momentum 0.9 carrying each difference up to 1/(1 - 0.9) = 10 steps on,
# that is at most ~27 * 10 * 4 * 6e-8 = 6.5e-5 of a parameter's scale; a
# max-pool whose two inputs nearly tie can add one update's worth.
PARAMS_BOUND = 1e-4
# Losses and epoch losses: the same, measured on one nat (a cross-entropy's
# rounding is absolute, set by the logits' size, not relative to the loss).
LOSS_BOUND = 1e-4


tiny_cfg = tiny_config


def trainer(ds, cfg, k, strategy="vmap", devices=None, conv="im2col"):
    plan = single_target_plan(cfg, ds, TARGET)
    setup = make_setup(cfg.replace(strategy=strategy, conv=conv), ds, "cpu", plan)
    return ChunkTrainer(
        setup, ds, plan=plan, models_per_chunk=k, devices=devices or jax.local_devices()[:1]
    )


def reference_train(ds, cfg, job: Job):
    """One model, no padding, no masks, no vmap: real examples only, PyTorch-style batches.

    The data order is the trainer's (same keys), so any difference would come
    from the padding, the masking or the vmapping.
    """
    plan = single_target_plan(cfg, ds, TARGET)
    setup = make_setup(cfg.replace(conv="im2col"), ds, "cpu", plan)
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("models",))
    data = put_data(ds, setup, mesh)
    idx, mask, _, _, init_key, order_key = job_start(cfg, ds, job, TARGET)
    model, tx = make_model(setup), make_optimizer(setup)
    params = model.init(init_key, jnp.zeros((1, *ds.image_shape)))["params"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, b_idx):
        x, y = model_inputs(data, b_idx)

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
            params, opt_state = step(params, opt_state, jnp.asarray(real[s : s + cfg.batch_size]))
    x, y = model_inputs(data, jnp.asarray([TARGET]))
    logits = model.apply({"params": params}, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)[0]
    return params, float(loss)


@pytest.mark.parametrize("subset_size", [40, 47])
@pytest.mark.slow
def test_vmapped_models_equal_models_trained_alone(tiny_dataset, subset_size):
    # subset_size=47, batch 16: n+1 = 48 fills three batches exactly, so the OUT
    # model's third batch has 15 points.  subset_size=40: the IN model's last
    # batch is partial.  Both must equal plain, unpadded training.
    cfg = tiny_cfg(subset_size=subset_size)
    jobs = calibration_jobs(2)
    res = trainer(tiny_dataset, cfg, k=4).run(jobs, keep_params=True)
    for i, job in enumerate(jobs):
        params, loss = reference_train(tiny_dataset, cfg, job)
        one = jax.tree.map(lambda a, i=i: a[i], res.params)
        assert_tree_close(one, params, PARAMS_BOUND, what=f"model {i}")
        assert_close(res.target_loss[i], loss, LOSS_BOUND, scale=1.0, what=f"model {i} loss")


def test_empty_padding_batch_is_not_a_step(tiny_dataset):
    # n = 48 = 3 batches of 16: the IN model (49 points) needs 4 batches, so the
    # OUT model's 4th batch is pure padding.  With momentum 0.9 and weight decay a
    # zero-gradient step would still move the weights; the trainer must skip it.
    cfg = tiny_cfg(subset_size=48)
    assert steps_per_epoch(48, 16) == 4
    out_job = Job(CALIBRATION, 0, False)
    res = trainer(tiny_dataset, cfg, k=1).run([out_job], keep_params=True)
    params, loss = reference_train(tiny_dataset, cfg, out_job)
    # A skipped step that was wrongly taken moves every weight by lr * (weight
    # decay + momentum) ~ 1e-2 of its scale: far above the rounding bound.
    assert_tree_close(jax.tree.map(lambda a: a[0], res.params), params, PARAMS_BOUND)
    assert_close(res.target_loss[0], loss, LOSS_BOUND, scale=1.0, what="loss")


def test_member_and_nonmember_differ_only_by_the_target(tiny_dataset):
    cfg = tiny_cfg()
    idx, mask, ids = job_rows(
        calibration_jobs(1), seed=0, n_train=240, target=TARGET, subset_size=40, batch_size=16
    )
    np.testing.assert_array_equal(idx[0], idx[1])
    assert mask[0].sum() == cfg.subset_size + 1 and mask[1].sum() == cfg.subset_size
    assert np.flatnonzero(mask[0] != mask[1]).tolist() == [0] and idx[0, 0] == TARGET
    assert TARGET not in idx[0, 1 : cfg.subset_size + 1]
    assert len(set(idx[0, 1 : cfg.subset_size + 1].tolist())) == cfg.subset_size


@pytest.mark.slow
def test_chunk_size_strategy_and_devices_do_not_change_results(tiny_dataset):
    cfg = tiny_cfg(epochs=2)
    jobs = calibration_jobs(3)  # 6 models
    whole = trainer(tiny_dataset, cfg, k=6).run(jobs)
    by_two = [trainer(tiny_dataset, cfg, k=2).run(jobs[i : i + 2]) for i in range(0, 6, 2)]
    mapped = trainer(tiny_dataset, cfg, k=6, strategy="map").run(jobs)
    # A short last chunk is padded with copies; the real jobs' results are unchanged.
    padded = trainer(tiny_dataset, cfg, k=4).run(jobs[4:])
    ref = whole.target_loss
    # Other chunk widths, lax.map and sharding are other programs (other sum
    # orders), so the same models agree to rounding, not to the bit.
    two = np.concatenate([r.target_loss for r in by_two])
    assert_close(two, ref, LOSS_BOUND, scale=1.0, what="chunks of 2")
    assert_close(mapped.target_loss, ref, LOSS_BOUND, scale=1.0, what="lax.map")
    assert_close(padded.target_loss, ref[4:], LOSS_BOUND, scale=1.0, what="padded chunk")
    devs = jax.local_devices()
    if len(devs) < 4:  # conftest fakes 4 CPU devices; a 1-GPU host has one
        pytest.skip(f"the sharded part needs 4 devices, this host has {len(devs)}")
    sharded = trainer(tiny_dataset, cfg, k=8, devices=devs).run(jobs)
    assert_close(sharded.target_loss, ref, LOSS_BOUND, scale=1.0, what="4 devices")
    # Accuracies are hit counts over 40 images: equal unless a rounding-sized
    # change flips an argmax, which these trained logits are far from.
    np.testing.assert_array_equal(sharded.test_accuracy, whole.test_accuracy)


@pytest.mark.slow
def test_conv_formulations_agree(tiny_dataset):
    cfg = tiny_cfg(epochs=1)
    jobs = calibration_jobs(1)
    a = trainer(tiny_dataset, cfg, k=2, conv="im2col").run(jobs)
    b = trainer(tiny_dataset, cfg, k=2, conv="xla").run(jobs)
    # The vmapped lax.conv is a grouped convolution that sums in yet another
    # order (tests/test_formulations.py measured 1.5e-6 per step); 3 steps at lr
    # 0.05 carry that to the loss within LOSS_BOUND of one nat.
    assert_close(a.target_loss, b.target_loss, LOSS_BOUND, scale=1.0, what="im2col vs xla")


def test_conv_gradients_agree_with_xla_autodiff():
    # The im2col path has a hand-written VJP for conv1; every parameter's gradient
    # must equal XLA's own convolution differentiated by JAX.
    from jaxmia.models.cnn import SmallCNN

    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    y = jnp.array([0, 1, 2, 1])
    params = SmallCNN(3, "xla").init(jax.random.key(1), x)["params"]

    def grads(impl):
        def loss(p):
            logits = SmallCNN(3, impl).apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        return jax.grad(loss)(params)

    want, got = grads("xla"), grads("im2col")
    # One backward pass: the same products summed in another order through four
    # layers, ~170 unit roundoffs of each gradient's scale at most.
    assert_tree_close(got, want, 1e-5)


@pytest.mark.slow
def test_accuracies_count_exactly(tiny_dataset):
    # lr = 0 keeps the initial weights: accuracies then follow from one forward pass.
    # test_samples = 25 is not a multiple of the batch (16): exactly 25 count.
    cfg = tiny_cfg(lr=1e-12, momentum=0.0, weight_decay=0.0, epochs=1, test_samples=25)
    job = Job(CALIBRATION, 0, True)
    res = trainer(tiny_dataset, cfg, k=1).run([job], keep_params=True)
    plan = single_target_plan(cfg, tiny_dataset, TARGET)
    setup = make_setup(cfg.replace(conv="im2col"), tiny_dataset, "cpu", plan)
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("models",))
    data = put_data(tiny_dataset, setup, mesh)
    params = jax.tree.map(lambda a: a[0], res.params)
    idx, mask, _ = job_rows(
        [job], seed=0, n_train=240, target=TARGET, subset_size=40, batch_size=16
    )
    x, y = model_inputs(data, jnp.asarray(idx[0][mask[0]]))
    logits = np.asarray(make_model(setup).apply({"params": params}, x))
    pred = np.argmax(logits, -1)
    # Counted exactly: the forward pass here and the trainer's are other
    # programs, but a hit count can only differ if rounding (~1e-6 of these
    # logits) flips an argmax, so the top two logits of every image must be
    # further apart than that for exact equality to be the right test.  The
    # trainer reports hits / n in float32, which a float64 mean does not equal
    # (12/41), so the counts are compared: n * accuracy rounds to the hit count.
    n = len(pred)
    assert round(float(res.train_accuracy[0]) * n) == int((pred == np.asarray(y)).sum())
    xt = (tiny_dataset.test_images / 255.0 - tiny_dataset.mean) / tiny_dataset.std
    logits_t = np.asarray(make_model(setup).apply({"params": params}, jnp.asarray(xt, jnp.float32)))
    pred_t = np.argmax(logits_t, -1)[:25]
    hits_t = int((pred_t == tiny_dataset.test_labels[:25]).sum())
    assert round(float(res.test_accuracy[0]) * 25) == hits_t
    for z in (logits, logits_t[:25]):
        top2 = np.sort(z, -1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0]).min() > 1e-5 * np.abs(z).max()
    assert int(np.asarray(data.test_mask).sum()) == 25


@pytest.mark.slow
def test_members_end_with_lower_target_loss(tiny_dataset):
    # The effect the attack measures.  With shuffled labels nothing but
    # memorisation can fit x's label, so only the IN model (which saw x) does.
    rng = np.random.default_rng(1)
    shuffled = dataclasses.replace(
        tiny_dataset, train_labels=rng.permutation(tiny_dataset.train_labels)
    )
    cfg = tiny_cfg(epochs=8, lr=0.05)
    res = trainer(shuffled, cfg, k=8).run(calibration_jobs(4))
    member, nonmember = res.target_loss[0::2], res.target_loss[1::2]
    assert np.all(np.isfinite(res.target_loss))
    # The median: one IN model that fails to fit x (an outlier loss) must not
    # decide the comparison of four pairs.
    assert np.median(member) < np.median(nonmember)


@pytest.mark.parametrize("kind", ["targets", "population"])
@pytest.mark.slow
def test_every_plan_trains_like_one_model_at_a_time(tiny_dataset, kind):
    # The many-targets and population plans through the vmapped chunk trainer
    # equal train_one, the plain one-model function, model by model.
    if kind == "targets":
        plan = TargetsPlan(
            seed=0, n_train=240, targets=(3, 5, 9, 11), subset_size=30, batch_size=16, inclusion=0.5
        )
    else:
        plan = PopulationPlan(seed=0, n_train=240, subset_size=40, batch_size=16)
    cfg = tiny_cfg(subset_size=plan.subset_size, epochs=2)
    setup = make_setup(cfg.replace(strategy="vmap", conv="im2col"), tiny_dataset, "cpu", plan)
    jobs = [Job(0, m, False) for m in range(4)]
    device = jax.local_devices()[:1]
    res = ChunkTrainer(setup, tiny_dataset, plan=plan, models_per_chunk=4, devices=device).run(
        jobs, keep_params=True
    )
    assert res.loss.shape == (4, plan.n_scored) and res.logits.shape == (4, plan.n_scored, 5)
    data = put_data(tiny_dataset, setup, jax.sharding.Mesh(np.array(device), ("models",)))
    one = jax.jit(lambda d, i, m, k, s: train_one(setup, d, i, m, k, s))
    for i, job in enumerate(jobs):
        idx, mask, ids = plan.rows([job])
        scored = np.zeros(setup.score_batches * setup.score_batch, np.int32)
        scored[: plan.n_scored] = plan.scored_rows([job])[0]
        state, outputs = one(data, idx[0], mask[0], ids[0], scored)
        loss, logits, train_acc, _, epoch_loss, _ = outputs
        one_model = jax.tree.map(lambda a, i=i: a[i], res.params)
        assert_tree_close(one_model, state.params, PARAMS_BOUND, what=f"model {i}")
        loss = np.asarray(loss)[: plan.n_scored]
        assert_close(res.loss[i], loss, LOSS_BOUND, scale=1.0, what=f"model {i} losses")
        assert_close(res.epoch_loss[i], epoch_loss, LOSS_BOUND, scale=1.0, what="epoch losses")
        assert res.train_accuracy[i] == np.float32(train_acc)  # hit counts, as above
    if kind == "targets":  # the OUT models of a target have a masked slot, the IN ones not
        member = plan.membership(jobs)
        assert member.sum(0).tolist() == [2, 2, 2, 2]


def test_train_state_is_a_pytree_of_params_and_optimizer_state(tiny_dataset):
    # The CNN carries no batch statistics and no noise state: those fields are
    # empty and add no leaf, so the leaves (what vmap stacks, scan carries and
    # the epoch donates) are the parameters' and then the optimizer state's.
    cfg = tiny_cfg()
    setup = make_setup(cfg, tiny_dataset, "cpu", single_target_plan(cfg, tiny_dataset, TARGET))
    state = init_state(setup, jnp.asarray([0, 0, 0, 1], jnp.uint32))
    assert isinstance(state, TrainState)
    assert state.batch_stats == {} and state.noise_state == {}
    leaves = jax.tree.leaves(state)
    want = jax.tree.leaves(state.params) + jax.tree.leaves(state.opt_state)
    assert len(leaves) == len(want) and all(a is b for a, b in zip(leaves, want, strict=True))
    doubled = jax.tree.map(lambda a: 2 * a, state)
    assert isinstance(doubled, TrainState)
    np.testing.assert_array_equal(doubled.params["fc2"]["bias"], 2 * state.params["fc2"]["bias"])


def test_setup_takes_the_image_shape_from_the_data(tiny_dataset):
    cfg = tiny_cfg()
    plan = single_target_plan(cfg, tiny_dataset, TARGET)
    setup = make_setup(cfg, tiny_dataset, "cpu", plan)
    assert setup.model == "cnn" and setup.image_shape == (32, 32, 3)
    small = dataclasses.replace(
        tiny_dataset,
        train_images=tiny_dataset.train_images[:, :28, :28],
        test_images=tiny_dataset.test_images[:, :28, :28],
    )
    with pytest.raises(UserError, match=r"model cnn takes 32x32x3 images, .* has 28x28x3"):
        make_setup(cfg, small, "cpu", plan)
    with pytest.raises(ValueError, match=r"made for images of shape \(32, 32, 3\)"):
        put_data(small, setup, jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("models",)))


# --------------------------------------------------------------------------
# The BatchNorm networks, augmentation and schedules (issue 15).

# The whole recipe at once: every lever must agree with the reference below.
RECIPE = {**RECIPE, "epochs": 2}


def reference_bn_train(ds, cfg, job: Job):
    """One BatchNorm model trained on its real examples only, batch after batch, from flax and
    optax alone: no padding, no mask, no vmap, no guard.

    Keys as plan.py documents them (fold_in of the seed key with stream, round
    and member; split into init and order; the augmentation from the root key
    by augment.batch_key), the batch order the trainer's, each batch's
    augmentation the first len(batch) of its draw, the rate optax's warm-up
    cosine at the global step.  Returns (params, batch_stats, x's loss).
    """
    setup = make_setup(cfg, ds, "cpu", single_target_plan(cfg, ds, TARGET))
    idx, mask, _, root, init_key, order_key = job_start(cfg, ds, job, TARGET)
    model = MODELS[cfg.model].build(cfg.num_classes, setup.conv, jnp.float32)
    variables = model.init(init_key, jnp.zeros((1, *ds.image_shape)))
    params, stats = variables["params"], variables["batch_stats"]
    steps = setup.steps_per_epoch
    warm = round(cfg.warmup_epochs * steps)
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warm, cfg.epochs * steps, 0.0)
    sgd = optax.sgd(1.0, momentum=cfg.momentum, nesterov=cfg.nesterov)
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), sgd)
    opt_state = tx.init(params)
    images = (ds.train_images.astype(np.float32) / 255.0 - ds.mean) / ds.std

    @jax.jit
    def step(params, stats, opt_state, x, y, lr):
        def loss_fn(p):
            logits, new = model.apply(
                {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
            )
            targets = optax.smooth_labels(jax.nn.one_hot(y, cfg.num_classes), cfg.label_smoothing)
            return optax.softmax_cross_entropy(logits, targets).mean(), new["batch_stats"]

        grads, new_stats = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: lr * u, updates)  # sgd at rate 1, scaled
        return optax.apply_updates(params, updates), new_stats, opt_state

    for e in range(cfg.epochs):
        u = jax.random.uniform(jax.random.fold_in(order_key, e), idx.shape)
        order = np.asarray(jnp.argsort(jnp.where(mask, u, 2.0)))
        real = idx[order][: int(mask.sum())]
        for s, start in enumerate(range(0, len(real), cfg.batch_size)):
            b = real[start : start + cfg.batch_size]
            flip, offsets = augment.draw(cfg.augment, augment.batch_key(root, e, s), cfg.batch_size)
            x = augment.apply(cfg.augment, images[b], flip[: len(b)], offsets[: len(b)])
            lr = schedule(e * steps + s)
            params, stats, opt_state = step(params, stats, opt_state, x, ds.train_labels[b], lr)
    x = images[[TARGET]]
    logits = model.apply({"params": params, "batch_stats": stats}, x)  # inference mode
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, ds.train_labels[[TARGET]])
    return params, stats, float(loss[0])


# BatchNorm divides by each batch's standard deviation, so a rounding-sized
# change early on moves a whole channel's activations a little, and training
# carries that along: after the recipe's 2 epochs (6 steps) the chunk and the
# reference measured up to 1.1e-4 of a layer's scale for the WRN (map +
# Winograd and vmap + lax.conv alike), where the CNN stays at 4e-7
# (tests/test_formulations.py).  ResNet-9 adds max-pools (and a global max),
# where a near-tie that rounding flips routes a gradient to another input:
# measured 6.3e-4 under vmapped lax.conv, 2.4e-4 under map + Winograd natively
# (AVX2), and 3.45e-3 under map + Winograd compiled for SSE4_2 (CI's lower-ISA
# pass, whose 128-bit sums round in yet another order and flipped more ties).
# A layer's scale is the largest of its leaves, so that a BatchNorm's bias
# (started at 0, ~1e-3 after 6 steps) is measured against the unit scale of the
# normalised activations it shifts, as its scale is.  Bounds: about five times
# the worst measured for the WRN, three times for ResNet-9 (a flip is a jump,
# not a drift, so its worst case is the number of flips, which the ISA sets).
BN_BOUND = {"wrn10_1": 1e-3, "resnet9_w8": 1e-2}


def assert_layers_close(got, want, bound, what=""):
    """Each top-level layer of two parameter (or statistics) trees: max |got - want| over the
    layer's leaves, against the largest |want| among them."""
    for layer, leaves in want.items():
        scale = max(float(np.abs(np.asarray(a)).max()) for a in jax.tree.leaves(leaves))
        for name, w in leaves.items():
            assert_close(got[layer][name], w, bound, scale=scale, what=f"{what}{layer}.{name}")


def _bn_chunk_and_reference(ds, cfg, jobs, bound):
    plan = single_target_plan(cfg, ds, TARGET)
    setup = make_setup(cfg, ds, "cpu", plan)
    res = ChunkTrainer(
        setup, ds, plan=plan, models_per_chunk=len(jobs), devices=jax.local_devices()[:1]
    ).run(jobs, keep_params=True)
    for i, job in enumerate(jobs):
        params, stats, loss = reference_bn_train(ds, cfg, job)
        pick = partial(jax.tree.map, lambda a, i=i: a[i])
        assert_layers_close(pick(res.params), params, bound, what=f"model {i} ")
        assert_layers_close(pick(res.batch_stats), stats, bound, what=f"model {i} stats ")
        assert_close(res.target_loss[i], loss, bound, scale=1.0, what=f"model {i} loss")


@pytest.mark.parametrize("model", sorted(TINY_MODELS))
@pytest.mark.parametrize(("strategy", "conv"), [("vmap", "xla"), ("map", "winograd")])
@pytest.mark.slow
def test_batchnorm_models_train_like_one_model_alone(
    tiny_dataset, tiny_models, model, strategy, conv
):
    # subset_size 47 in batches of 16: the OUT model's last batch holds 15
    # examples and one padding slot, and it carries the target in a masked
    # slot; BatchNorm's statistics must see neither.
    cfg = tiny_cfg(model=model, subset_size=47, strategy=strategy, conv=conv, **RECIPE)
    _bn_chunk_and_reference(tiny_dataset, cfg, calibration_jobs(1), BN_BOUND[model])


@pytest.mark.slow
def test_an_empty_batch_keeps_a_batchnorm_models_state(tiny_dataset, tiny_models):
    # subset_size 48: the OUT model's fourth batch of every epoch holds no real
    # example.  The guard must keep its weights, momentum and running averages:
    # a step taken on the empty batch would move the weights by weight decay
    # and momentum and the running averages by a tenth of the way to zero.
    cfg = tiny_cfg(model="wrn10_1", subset_size=48, strategy="map", conv="winograd", **RECIPE)
    assert steps_per_epoch(48, 16) == 4
    _bn_chunk_and_reference(tiny_dataset, cfg, [Job(CALIBRATION, 0, False)], BN_BOUND["wrn10_1"])


def test_defaults_train_the_seeds_way(tiny_dataset):
    # The new keys at their defaults: no augmentation, the constant Python-float
    # rate (no schedule is built), plain cross-entropy, heavy-ball momentum, and
    # a CNN without batch statistics.  (The CNN's training was checked bit for
    # bit against the code before these keys existed, in the commit that added them.)
    cfg = tiny_cfg()
    setup = make_setup(cfg, tiny_dataset, "cpu", single_target_plan(cfg, tiny_dataset, TARGET))
    assert (setup.augment, setup.lr_schedule, setup.warmup_epochs) == ("none", "constant", 0.0)
    assert not setup.nesterov and setup.label_smoothing == 0.0
    assert make_schedule(setup) is None and step_lr(setup, jnp.int32(3)) is None
    x = jnp.ones((2, 32, 32, 3))
    assert augment.augment(setup.augment, jax.random.key(0), x) is x
    logits = jnp.array([[1.0, 2.0, 0.5]])
    np.testing.assert_array_equal(
        training_loss(setup, logits, jnp.array([1])),
        optax.softmax_cross_entropy_with_integer_labels(logits, jnp.array([1])),
    )


@pytest.mark.parametrize("kind", ["constant", "cosine", "onecycle"])
def test_schedules_follow_their_formulas(tiny_dataset, kind):
    # 3 steps per epoch (41 slots in batches of 16), 4 epochs: T = 12, W = 3.
    cfg = tiny_cfg(epochs=4, lr=0.1, lr_schedule=kind, warmup_epochs=1.0)
    setup = make_setup(cfg, tiny_dataset, "cpu", single_target_plan(cfg, tiny_dataset, TARGET))
    t = np.arange(12)
    got = np.array([float(step_lr(setup, jnp.int32(s))) for s in t])
    w, total, lr = 3, 12, 0.1
    if kind == "constant":
        want = np.where(t < w, lr * t / w, lr)
    elif kind == "cosine":
        want = np.where(t < w, lr * t / w, lr * (1 + np.cos(np.pi * (t - w) / (total - w))) / 2)
    else:  # 1cycle: lr/25 -> lr over W (cosine), then lr -> lr/25/1e4 (cosine)
        lo, end = lr / 25, lr / 25 / 1e4
        up = lo + (lr - lo) * (1 - np.cos(np.pi * t / w)) / 2
        down = end + (lr - end) * (1 + np.cos(np.pi * (t - w) / (total - w))) / 2
        want = np.where(t < w, up, down)
    # float32 evaluation of the same formulas: a few unit roundoffs of lr.
    assert_close(got, want, 1e-6, scale=lr, what=kind)
    assert setup.lr_schedule == kind and make_schedule(setup) is not None
