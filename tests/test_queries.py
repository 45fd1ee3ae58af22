"""Query views (training/queries.py), the plan's population points and the scoring pass."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmia.kinds.targets.plan import TargetsPlan, draw_population
from jaxmia.runs.outputs import ModelOutputs
from jaxmia.runs.plan import CALIBRATION, EVALUATION, Job
from jaxmia.training.chunk import ChunkTrainer
from jaxmia.training.one_model import make_model, model_inputs, put_data
from jaxmia.training.queries import max_shift, query_offsets, query_view
from jaxmia.training.setup import make_setup

from conftest import tiny_config
from numerics import F32_UNIT_ROUNDOFF, assert_close

# The view logits come from a scan over queries inside the compiled scoring pass,
# the reference from the same model applied alone to the numpy views: two
# programs whose float32 sums (a few thousand terms per logit) round in other
# orders, a few hundred unit roundoffs of the logits' scale at most.
VIEW_LOGITS_BOUND = 1000 * F32_UNIT_ROUNDOFF


def numpy_view(x: np.ndarray, mirror: int, dy: int, dx: int, s: int) -> np.ndarray:
    """The reference code's view: mirror, reflect-pad by s, crop at (s+dy, s+dx)."""
    img = x[:, :, ::-1] if mirror else x
    padded = np.pad(img, ((0, 0), (s, s), (s, s), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    return padded[:, s + dy : s + dy + h, s + dx : s + dx + w]


def test_query_tables():
    for q, s in ((1, 0), (2, 0), (18, 1), (50, 2)):
        offsets = query_offsets(q)
        assert max_shift(q) == s and len(offsets) == q
        assert offsets[0] == (0, 0, 0)  # query 0 is the plain image
        full = set(itertools.product((0, 1), range(-s, s + 1), range(-s, s + 1)))
        assert set(offsets) == (full if q > 1 else {(0, 0, 0)})
    assert query_offsets(18)[1:4] == ((0, -1, -1), (0, -1, 0), (0, -1, 1))  # reference order
    for bad in (0, 3, 8, 36, -2):
        with pytest.raises(ValueError, match="queries must be"):
            query_offsets(bad)


@pytest.mark.parametrize("queries", [2, 18, 50])
def test_views_are_exact_permutations_of_the_image(queries):
    rng = np.random.default_rng(queries)
    x = rng.normal(size=(3, 8, 7, 3)).astype(np.float32)  # H != W: rows and columns apart
    view = jax.jit(query_view, static_argnums=2)
    s = max_shift(queries)
    for q, (m, dy, dx) in enumerate(query_offsets(queries)):
        got = np.asarray(view(jnp.asarray(x), jnp.int32(q), queries))
        np.testing.assert_array_equal(got, numpy_view(x, m, dy, dx, s), err_msg=str(q))


def test_a_shift_and_a_mirror_on_a_test_image():
    # Every pixel holds its own index, so where each one lands can be read off.
    img = np.arange(5 * 6, dtype=np.float32).reshape(1, 5, 6, 1)
    offsets = query_offsets(18)
    down = offsets.index((0, 1, 0))  # dy = +1: the content moves up one row
    got = np.asarray(query_view(jnp.asarray(img), down, 18))[0, :, :, 0]
    np.testing.assert_array_equal(got[:4], img[0, 1:, :, 0])
    np.testing.assert_array_equal(got[4], img[0, 3, :, 0])  # reflected: row 5 is row 3
    left = offsets.index((0, 0, -1))  # dx = -1: the content moves right, column -1 is column 1
    got = np.asarray(query_view(jnp.asarray(img), left, 18))[0, :, :, 0]
    np.testing.assert_array_equal(got[:, 1:], img[0, :, :5, 0])
    np.testing.assert_array_equal(got[:, 0], img[0, :, 1, 0])
    mirror = offsets.index((1, 0, 0))
    got = np.asarray(query_view(jnp.asarray(img), mirror, 18))[0, :, :, 0]
    np.testing.assert_array_equal(got, img[0, :, ::-1, 0])


def test_views_commute_with_the_normalisation(tiny_dataset):
    # The scoring pass takes views of the normalised batch; they are the normalised views.
    cfg = tiny_config()
    plan = TargetsPlan(0, 240, (3, 5), 40, 16, 0.5, queries=18)
    setup = make_setup(cfg, tiny_dataset, "cpu", plan)
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("models",))
    data = put_data(tiny_dataset, setup, mesh)
    rows = jnp.asarray([3, 5, 11])
    x, _ = model_inputs(data, rows)
    raw = tiny_dataset.train_images[np.asarray(rows)]  # uint8

    def normalise(images):  # model_inputs' arithmetic, on images given directly
        return (jnp.asarray(images).astype(jnp.float32) / 255.0 - data.mean) / data.std

    for q, (m, dy, dx) in enumerate(query_offsets(18)):
        want = normalise(numpy_view(raw, m, dy, dx, 1))
        np.testing.assert_array_equal(np.asarray(query_view(x, q, 18)), np.asarray(want))


# ---------------------------------------------------------------- the plan


def test_population_points_come_from_the_seed_and_no_model_trains_on_them():
    targets = (3, 5, 9, 11)
    plan = TargetsPlan(7, 240, targets, 40, 16, 0.5, queries=2, population_size=20)
    pop = plan.population
    assert pop.dtype == np.int32 and pop.size == 20 and np.all(np.diff(pop) > 0)
    np.testing.assert_array_equal(pop, draw_population(7, 240, targets, 20))
    assert not set(pop) & set(targets)
    assert not np.array_equal(pop, draw_population(8, 240, targets, 20))
    jobs = [Job(s, m, False) for s in (CALIBRATION, EVALUATION) for m in range(6)]
    idx, mask, _ = plan.rows(jobs)
    trained = set(idx[:, len(targets) :][mask[:, len(targets) :]].tolist())
    assert not trained & set(pop.tolist())
    scored = plan.scored_rows(jobs)
    assert plan.n_scored == 24
    np.testing.assert_array_equal(scored[3], np.concatenate([targets, pop]))
    # Without population points the rows are those of a plan that never had them.
    old = TargetsPlan(7, 240, targets, 40, 16, 0.5).rows(jobs)
    new = TargetsPlan(7, 240, targets, 40, 16, 0.5, 2, 0).rows(jobs)
    for a, b in zip(old, new, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_chunk_without_view_logits_reads_as_one_query():
    jobs = [Job(0, m, False) for m in range(3)]
    cols = dict(
        loss=np.zeros((3, 4), np.float32),
        logits=np.zeros((3, 4, 5), np.float32),
        train_accuracy=np.zeros(3, np.float32),
        test_accuracy=np.zeros(3, np.float32),
        epoch_loss=np.zeros((3, 2), np.float32),
    )
    old = ModelOutputs.for_jobs(jobs, **cols)  # what a chunk written before the views holds
    assert old.view_logits.shape == (3, 4, 0, 5)
    arrays = {k: v for k, v in old.to_arrays().items() if k != "view_logits"}
    assert ModelOutputs.from_arrays(arrays).view_logits.shape == (3, 4, 0, 5)
    views = np.zeros((3, 4, 1, 5), np.float32)
    views[1, 2, 0, 3] = np.nan
    new = ModelOutputs.for_jobs(jobs, view_logits=views, **cols)
    assert new.finite().tolist() == [True, False, True]
    with pytest.raises(ValueError, match="view_logits and logits disagree"):
        ModelOutputs.for_jobs(jobs, view_logits=np.zeros((3, 4, 1, 6), np.float32), **cols)


# ---------------------------------------------------------------- the scoring pass


def _run(ds, queries, population=0, k=4, devices=None, jobs=range(4)):
    plan = TargetsPlan(0, 240, (3, 5, 9, 11), 30, 16, 0.5, queries, population)
    cfg = tiny_config(subset_size=30, epochs=2)
    setup = make_setup(cfg.replace(strategy="vmap", conv="im2col"), ds, "cpu", plan)
    devices = devices or jax.local_devices()[:1]
    trainer = ChunkTrainer(setup, ds, plan=plan, models_per_chunk=k, devices=devices)
    return plan, setup, trainer.run([Job(0, m, False) for m in jobs], keep_params=True)


@pytest.mark.slow
def test_query_zero_is_todays_logits_and_every_view_is_the_model_on_that_view(tiny_dataset):
    _, _, plain = _run(tiny_dataset, 1)
    plan, setup, two = _run(tiny_dataset, 2)
    _, _, many = _run(tiny_dataset, 18)
    assert plain.view_logits.shape == (4, 4, 0, 5)
    assert two.view_logits.shape == (4, 4, 1, 5) and many.view_logits.shape == (4, 4, 17, 5)
    # The plain image goes through today's code path: the same bits, and the same
    # models (training never sees the views).
    for other in (two, many):
        np.testing.assert_array_equal(other.logits, plain.logits)
        np.testing.assert_array_equal(other.loss, plain.loss)
        np.testing.assert_array_equal(other.epoch_loss, plain.epoch_loss)
    # Each view's logits are the trained model applied to the numpy view.
    model = make_model(setup)
    rows = plan.scored_rows([Job(0, 0, False)])[0]
    raw = tiny_dataset.train_images[rows].astype(np.float32) / 255.0
    mean, std = tiny_dataset.mean, tiny_dataset.std
    for res, q_count in ((two, 2), (many, 18)):
        s = max_shift(q_count)
        for i in range(4):
            params = jax.tree.map(lambda a, i=i: a[i], res.params)
            for q, (m, dy, dx) in enumerate(query_offsets(q_count)[1:], start=1):
                x = (numpy_view(raw, m, dy, dx, s) - mean) / std
                want = np.asarray(model.apply({"params": params}, jnp.asarray(x)))
                got = res.view_logits[i, :, q - 1]
                assert_close(got, want, VIEW_LOGITS_BOUND, what=f"model {i} query {q}")


@pytest.mark.slow
def test_views_do_not_depend_on_the_chunking_or_the_devices(tiny_dataset):
    _, _, whole = _run(tiny_dataset, 18, population=2)
    # Chunks of two models: another vmapped width, so rounding, not bits.
    halves = [_run(tiny_dataset, 18, population=2, k=2, jobs=(i, i + 1))[2] for i in (0, 2)]
    by_two = np.concatenate([h.view_logits for h in halves])
    assert_close(by_two, whole.view_logits, VIEW_LOGITS_BOUND, what="chunks of 2")
    devices = jax.local_devices()
    if len(devices) < 4:
        pytest.skip("needs 4 devices (tests/conftest.py fakes them on a CPU)")
    _, _, sharded = _run(tiny_dataset, 18, population=2, k=4, devices=devices)
    # Sharded over 4 devices the chunk is another program: rounding, not bits.
    assert_close(sharded.view_logits, whole.view_logits, VIEW_LOGITS_BOUND, what="views")
    assert_close(sharded.logits, whole.logits, VIEW_LOGITS_BOUND, what="query 0")
