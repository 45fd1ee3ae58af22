"""Shared fixtures: tiny data sets and configs so that every test runs in seconds on a CPU."""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile

# Four fake CPU devices, so the sharding over devices is exercised on any machine.
# Must be set before JAX is imported anywhere in the test session.  Added to
# whatever XLA_FLAGS the caller set (.ci/run's lower-ISA pass sets
# --xla_cpu_max_isa), unless the caller chose a device count already.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_force_host_platform_device_count=4".strip()
# jaxmia.run's XLA workarounds (a GPU compiler fault), for the tests that train in
# this process as for the runs they start (which add them themselves).
from jaxmia.run import use_xla_workarounds  # noqa: E402  (imports no JAX)

use_xla_workarounds()
os.environ.setdefault("JAXMIA_NO_DOWNLOAD", "1")
# One persistent compilation cache for the whole session, shared with the runs
# the tests start as subprocesses: many tests compile the same tiny programs.
# It starts empty, so nothing from outside the session is reused.
if "JAXMIA_CACHE_DIR" not in os.environ:
    os.environ["JAXMIA_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxmia-test-xla-")
    atexit.register(shutil.rmtree, os.environ["JAXMIA_CACHE_DIR"], ignore_errors=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxmia.data import Dataset  # noqa: E402
from jaxmia.kinds.single_target.plan import SingleTargetPlan  # noqa: E402
from jaxmia.run import enable_compile_cache  # noqa: E402

enable_compile_cache()  # the in-process trainers use the same cache as the subprocesses

# The tolerances in tests/numerics.py are derived from float32 rounding (2^-24).  On
# a GPU, XLA's default precision runs float32 convolutions and products in TF32
# (10-bit mantissa, 2^-11): on an H200 (benchmarks/README.md, "GPU") vmapped models
# then differed from one model trained alone by 9.2e-4 of a parameter's scale, above
# the float32 bound 1e-4.  The suite checks float32 exactness, so on a GPU it asks for
# full float32 products, in process and in the runs it starts.  A CPU is left as is.
import jax  # noqa: E402

if jax.default_backend() == "gpu":
    jax.config.update("jax_default_matmul_precision", "highest")
    os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"


def make_tiny_dataset(n_train=240, n_test=40, num_classes=5, seed=0) -> Dataset:
    """Random but learnable images: a class-coloured square on noise."""
    rng = np.random.default_rng(seed)

    def images(labels):
        x = rng.integers(0, 160, (len(labels), 32, 32, 3))
        for c in range(num_classes):
            x[labels == c, 8:24, 8:24, c % 3] += 40 + 15 * c
        return np.clip(x, 0, 255).astype(np.uint8)

    train_labels = (np.arange(n_train) % num_classes).astype(np.int32)
    test_labels = (np.arange(n_test) % num_classes).astype(np.int32)
    train_images = images(train_labels)
    flat = train_images.reshape(-1, 3) / 255.0
    return Dataset(
        name="synthetic",
        train_images=train_images,
        train_labels=train_labels,
        test_images=images(test_labels),
        test_labels=test_labels,
        class_names=tuple(f"class_{c}" for c in range(num_classes)),
        synthetic=True,
        fingerprint=f"tiny:{n_train}:{n_test}:{num_classes}:{seed}",
        mean=flat.mean(0).astype(np.float32),
        std=flat.std(0).astype(np.float32),
    )


# The target of the tiny single-target trainings (a training-set index of the
# tiny data set), and their configuration: 40 points in batches of 16, so that
# the IN model's last batch is partial (41 = 2 * 16 + 9) and the OUT model's too.
TINY_TARGET = 7
TINY_TRAINING = dict(
    dataset="synthetic",
    num_classes=5,
    subset_size=40,
    batch_size=16,
    epochs=3,
    lr=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    test_samples=40,
)


def tiny_config(**overrides):
    """A Config of the tiny training above, with ``overrides``."""
    from jaxmia.config import Config

    return Config(**{**TINY_TRAINING, **overrides})


def single_target_plan(cfg, dataset: Dataset, target: int) -> SingleTargetPlan:
    """The single-target plan of ``cfg`` (seed, subset_size, batch_size) on ``dataset``."""
    return SingleTargetPlan(
        seed=cfg.seed,
        n_train=len(dataset.train_labels),
        target=target,
        subset_size=cfg.subset_size,
        batch_size=cfg.batch_size,
    )


def chunk_trainer(cfg, dataset: Dataset, plan, setup, k: int):
    """A ChunkTrainer of ``k`` models on one device, each at its DP noise level of ``cfg``."""
    import jax

    from jaxmia import privacy
    from jaxmia.training.chunk import ChunkTrainer

    return ChunkTrainer(
        setup,
        dataset,
        plan=plan,
        models_per_chunk=k,
        devices=jax.local_devices()[:1],
        noise_multipliers=lambda jobs: privacy.noise_multipliers(cfg, jobs),
    )


@pytest.fixture(scope="session")
def tiny_dataset() -> Dataset:
    return make_tiny_dataset()


# Narrow variants of the registered ResNets, the same modules at another depth
# and width (name: (registered model, options)); tests train these.
TINY_MODELS = {
    "wrn10_1": ("wrn28_2", (("depth", 10), ("width", 1))),
    "resnet9_w8": ("resnet9", (("width", 8),)),
}
# Every lever of the training recipe at once (issue 15), at a gentle rate.
RECIPE = dict(
    augment="flip_crop",
    lr_schedule="cosine",
    warmup_epochs=1.0,
    nesterov=True,
    label_smoothing=0.1,
    lr=0.01,
)


def tiny_model_spec(name: str):
    """The registry entry of one of TINY_MODELS."""
    from jaxmia.models import MODELS

    base, options = TINY_MODELS[name]
    return dataclasses.replace(MODELS[base], name=name, options=options)


@pytest.fixture
def tiny_models(monkeypatch):
    """TINY_MODELS in the model registry for the test's duration."""
    from jaxmia.models import MODELS

    for name in TINY_MODELS:
        monkeypatch.setitem(MODELS, name, tiny_model_spec(name))


def job_start(cfg, dataset: Dataset, job, target: int):
    """One single-target job's (idx int32[P], mask bool[P], ids uint32[4], root key, init key,
    order key), the keys derived as plan.py documents them: fold_in of the seed's key with
    stream, round and member, split into init and order."""
    import jax

    from jaxmia.kinds.single_target.plan import job_rows

    idx, mask, ids = job_rows(
        [job],
        seed=cfg.seed,
        n_train=len(dataset.train_labels),
        target=target,
        subset_size=cfg.subset_size,
        batch_size=cfg.batch_size,
    )
    idx, mask, ids = idx[0], mask[0], ids[0]
    root = jax.random.key(ids[0])
    for part in ids[1:]:
        root = jax.random.fold_in(root, part)
    init_key, order_key = jax.random.split(root)
    return idx, mask, ids, root, init_key, order_key


@pytest.fixture
def read_only_lock(monkeypatch):
    """Makes creating a run folder's .lock fail as on a read-only file system (EROFS):
    the tests run as root, for whom a chmod does not make a folder read-only."""
    import errno

    from jaxmia.runs import store

    real_open = os.open

    def read_only(path, flags, *a, **kw):
        if str(path).endswith(store.LOCK_NAME):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(store.os, "open", read_only)
