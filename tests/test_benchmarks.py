"""The PyTorch baseline and the benchmark harness: tiny smoke runs, and the baseline against jaxmia.

No timing is asserted here; speed is the harness's business.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxmia.kinds.single_target.plan import (  # noqa: E402
    calibration_jobs,
    evaluation_jobs,
    job_rows,
)

from conftest import (  # noqa: E402
    RECIPE,
    TINY_MODELS,
    TINY_TARGET,
    single_target_plan,
    tiny_config,
)
from numerics import assert_close  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TARGET = TINY_TARGET


def _load(name: str):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pb = _load("pytorch_baseline")
harness = _load("harness")


def tiny_cfg(**kw):
    # The tiny training as a whole single-target run: 3 rounds and 1 evaluation pair.
    run = dict(n_iterations=3, eval_pairs=1, epochs=2, target_index=TARGET, run_name="tiny")
    return tiny_config(**{**run, "models_per_chunk": 4, **kw})


def test_baseline_trains_on_the_plans_subsets(tiny_dataset):
    cfg = tiny_cfg()
    jobs = pb.all_jobs(cfg)
    assert jobs == calibration_jobs(3) + evaluation_jobs(1)
    sets = pb.training_sets(cfg, jobs, len(tiny_dataset.train_labels), TARGET)
    idx, mask, _ = job_rows(
        jobs, seed=cfg.seed, n_train=240, target=TARGET, subset_size=40, batch_size=16
    )
    for job, rows, row, keep in zip(jobs, sets, idx, mask, strict=True):
        assert sorted(rows.tolist()) == sorted(row[keep].tolist())
        assert len(rows) == cfg.subset_size + int(job.member)
        assert (TARGET in rows.tolist()) == job.member
    # IN and OUT model of a round share their subset.
    for r in range(3):
        assert sets[2 * r][1:].tolist() == sets[2 * r + 1].tolist()


@pytest.fixture(scope="module")
def three_modes(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline")
    cfg = tiny_cfg()
    # One torch thread: on a shared 2-core machine two threads can be 10x slower.
    runs = {m: pb.run_baseline(cfg, tiny_dataset, m, out, threads=1) for m in pb.MODES}
    return cfg, out, runs


@pytest.mark.parametrize("mode", pb.MODES)
@pytest.mark.slow
def test_each_mode_writes_jaxmias_products(three_modes, mode):
    cfg, out, runs = three_modes
    run_dir = out / f"tiny-torch-{mode}"
    results = json.loads((run_dir / "results.json").read_text())
    for key in (
        "threshold",
        "power",
        "auc",
        "member_loss_mean",
        "evaluation",
        "train_accuracy",
        "test_accuracy",
        "rounds_used",
        "target_index",
        "models_per_second",
        "image_steps_per_second",
        "train_seconds",
        "compile_seconds",
    ):
        assert key in results, key
    assert results["implementation"] == f"pytorch-{mode}"
    assert results["models_trained"] == 2 * cfg.n_iterations + 2 * cfg.eval_pairs
    assert results["rounds_used"] == cfg.n_iterations
    with np.load(run_dir / "losses.npz") as z:
        for name in ("member_losses", "nonmember_losses"):
            assert z[name].shape == (cfg.n_iterations,)
            assert np.all(np.isfinite(z[name]))
        assert z["eval_member_losses"].shape == (cfg.eval_pairs,)
        assert z["train_accuracy"].shape == (cfg.n_iterations, 2)
        assert z["job_epoch_loss"].shape == (8, cfg.epochs)
    assert 0 <= results["test_accuracy"] <= 1


def test_modes_train_the_same_models(three_modes):
    # Same init seed and the same batch order in every mode: the per-example
    # DataLoader, the in-memory tensors and the vmapped functional SGD must agree.
    _, out, _ = three_modes
    losses = {}
    for mode in pb.MODES:
        with np.load(out / f"tiny-torch-{mode}" / "losses.npz") as z:
            losses[mode] = (z["job_target_loss"], z["job_epoch_loss"])
    for mode in ("seed", "func"):
        # The same float32 SGD in three torch programs (per-example DataLoader,
        # in-memory batches, vmapped torch.func): other kernels and sum orders,
        # carried over every step of training, on one nat of loss.
        assert_close(losses[mode][0], losses["tuned"][0], 2e-3, scale=1.0, what=f"{mode} loss")
        assert_close(losses[mode][1], losses["tuned"][1], 1e-3, scale=1.0, what=f"{mode} epochs")


def test_max_jobs_trains_only_the_first_jobs(tiny_dataset, tmp_path):
    res = pb.run_baseline(tiny_cfg(), tiny_dataset, "tuned", tmp_path, max_jobs=3, threads=1)
    assert res["partial"] and res["models_trained"] == 3
    with np.load(tmp_path / "tiny-torch-tuned" / "losses.npz") as z:
        assert z["job_round"].tolist() == [0, 0, 1]


def torch_state_from_flax(params) -> dict:
    """jaxmia's parameter tree as the baseline's state_dict.

    Conv kernels HWIO -> OIHW, dense kernels [in, out] -> [out, in], and fc1's
    input rows from jaxmia's NHWC flatten order (h, w, c) to torch's (c, h, w).
    """

    def t(a):
        return torch.from_numpy(np.array(a, np.float32))

    fc1 = np.asarray(params["fc1"]["kernel"]).reshape(8, 8, 64, 512)
    return {
        "0.weight": t(params["conv1"]["kernel"]).permute(3, 2, 0, 1).contiguous(),
        "0.bias": t(params["conv1"]["bias"]),
        "3.weight": t(params["conv2"]["kernel"]).permute(3, 2, 0, 1).contiguous(),
        "3.bias": t(params["conv2"]["bias"]),
        "7.weight": t(fc1.transpose(3, 2, 0, 1).reshape(512, 4096)),
        "7.bias": t(params["fc1"]["bias"]),
        "9.weight": t(params["fc2"]["kernel"]).T.contiguous(),
        "9.bias": t(params["fc2"]["bias"]),
    }


def _jaxmia_start(cfg, job, tiny_dataset):
    """jaxmia's side of one job: (trained outputs, initial variables, the torch orders of its
    epochs, its augmentation as fit_tuned's ``augment(e, s, n)``)."""
    import jax
    import jax.numpy as jnp

    from jaxmia.training import augment
    from jaxmia.training.chunk import ChunkTrainer
    from jaxmia.training.one_model import init_state, model_key, model_keys
    from jaxmia.training.setup import make_setup

    plan = single_target_plan(cfg, tiny_dataset, TARGET)
    setup = make_setup(cfg.replace(conv="im2col", strategy="vmap"), tiny_dataset, "cpu", plan)
    trainer = ChunkTrainer(
        setup, tiny_dataset, plan=plan, models_per_chunk=1, devices=jax.local_devices()[:1]
    )
    res = trainer.run([job], keep_params=True)
    idx, mask, ids = job_rows(
        [job],
        seed=cfg.seed,
        n_train=240,
        target=TARGET,
        subset_size=cfg.subset_size,
        batch_size=cfg.batch_size,
    )
    idx, mask, ids = idx[0], mask[0], jnp.asarray(ids[0])
    state = init_state(setup, ids)
    _, order_key = model_keys(ids)
    real = np.flatnonzero(mask)  # positions of the real slots; rows = idx[real]
    orders = []
    for e in range(cfg.epochs):
        u = jax.random.uniform(jax.random.fold_in(order_key, e), idx.shape)
        order = np.asarray(jnp.argsort(jnp.where(mask, u, 2.0)))[: len(real)]
        orders.append(torch.as_tensor(np.searchsorted(real, order)))

    def jaxmia_augmentation(e, s, n):
        key = augment.batch_key(model_key(ids), e, s)
        flip, offsets = augment.draw(cfg.augment, key, cfg.batch_size)
        # np.array copies: a jax array's numpy view is read-only, which torch warns about.
        return torch.as_tensor(np.array(flip)[:n]), torch.as_tensor(np.array(offsets)[:n])

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return res, jax.device_get(variables), orders, jaxmia_augmentation, setup.steps_per_epoch


@pytest.mark.parametrize(
    ("model", "member", "subset_size"),
    [
        ("cnn", True, 40),
        ("cnn", False, 40),
        ("wrn10_1", True, 40),
        ("resnet9_w8", False, 40),
        # 48 + x = 49 = 3 x 16 + 1: each epoch ends with a batch of one image, whose
        # BatchNorm statistics come from that image alone (the IN models of
        # configs/bench_faithfulness_resnets.yaml end their epochs so: 8 + x = 9).
        ("wrn10_1", True, 48),
    ],
)
@pytest.mark.slow
def test_baseline_equals_jaxmia_from_the_same_start(
    tiny_dataset, tiny_models, model, member, subset_size
):
    # jaxmia's initial weights (and running averages) copied into the torch twin,
    # jaxmia's batch order and augmentation fed to the tuned baseline: the two
    # must train the same model.  The CNN with the seed's recipe checks the loss,
    # the partial last batch and SGD with momentum and weight decay; the
    # BatchNorm networks add BatchNorm (momentum and eps converted, training and
    # inference mode), the crop-and-flip augmentation, the cosine schedule with
    # warm-up, Nesterov momentum and label smoothing.
    from jaxmia.runs.plan import CALIBRATION, Job

    recipe = {} if model == "cnn" else RECIPE
    cfg = tiny_cfg(
        epochs=3 if model == "cnn" else 2, model=model, subset_size=subset_size, **recipe
    )
    job = Job(CALIBRATION, 0, member)
    res, variables, orders, augmentation, steps = _jaxmia_start(cfg, job, tiny_dataset)
    rows = pb.training_sets(cfg, [job], 240, TARGET)[0]
    twin = pb.build_model(model, cfg.num_classes)
    if model == "cnn":
        twin.load_state_dict(torch_state_from_flax(variables["params"]))
    else:
        pb.load_flax_variables(twin, variables)
    data = pb.TensorData(cfg, tiny_dataset, torch.device("cpu"), channels_last=False)
    epoch_loss = pb.fit_tuned(cfg, twin, data, rows, orders, steps, augmentation)
    loss, logits, train_acc, test_acc = pb.evaluate_tuned(twin, data, rows, TARGET, 64)

    # PyTorch's oneDNN kernels and jaxmia's XLA program sum in other orders:
    # rounding of a few unit roundoffs per step, over this model's few dozen
    # steps with momentum 0.9 (x10): 1e-4 of one nat for losses, of the logits'
    # scale for logits, 1e-3 of each parameter's scale (the smallest layers
    # move most relative to their size).  BatchNorm's division by each batch's
    # standard deviation carries rounding further (tests/test_train.py's
    # BN_BOUND): 1e-3 for the losses and logits, 1e-2 for the parameters.
    bn = model != "cnn"
    out_bound, param_bound = (1e-3, 1e-2) if bn else (1e-4, 1e-3)
    assert_close(epoch_loss, res.epoch_loss[0], out_bound, scale=1.0, what="epoch losses")
    assert_close(loss, res.target_loss[0], out_bound, scale=1.0, what="target loss")
    assert_close(logits, res.target_logits[0], out_bound, what="target logits")
    # Hit counts, equal (no argmax within rounding); jaxmia reports hits / n in
    # float32, the baseline in float64 (0.6000000238 against 0.6), so the
    # counts are compared.
    n_test = len(data.test_y)
    assert round(train_acc * len(rows)) == round(float(res.train_accuracy[0]) * len(rows))
    assert round(test_acc * n_test) == round(float(res.test_accuracy[0]) * n_test)
    final = {
        "params": jax_tree_first(res.params),
        "batch_stats": jax_tree_first(res.batch_stats),
    }
    want = pb.build_model(model, cfg.num_classes)
    if model == "cnn":
        want.load_state_dict(torch_state_from_flax(final["params"]))
    else:
        pb.load_flax_variables(want, final)
    wanted = want.state_dict()
    for name, value in twin.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert_close(value.numpy(), wanted[name].numpy(), param_bound, what=name)


def jax_tree_first(tree):
    import jax

    return jax.tree.map(lambda a: np.asarray(a)[0], tree)


@pytest.mark.parametrize("model", sorted(TINY_MODELS))
def test_twin_forward_equals_jaxmia_in_both_modes(tiny_dataset, tiny_models, model):
    # The same weights and running averages in both: equal logits in inference
    # mode, and in training mode equal logits and equal running averages after
    # the step (torch's momentum 0.1 is jaxmia's 0.9; its unbiased running
    # variance is turned back into Flax's biased one).
    import jax

    from jaxmia.models import MODELS

    spec = MODELS[model]
    net = spec.build(5, "xla", np.float32)
    x = (tiny_dataset.train_images[:8] / 255.0 - tiny_dataset.mean) / tiny_dataset.std
    x = np.asarray(x, np.float32)
    variables = net.init(jax.random.key(0), x)
    # Move the running averages off their initial values first.
    _, moved = net.apply(variables, 2 * x, train=True, mutable=["batch_stats"])
    variables = {"params": variables["params"], **moved}
    twin = pb.build_model(model, 5)
    pb.load_flax_variables(twin, jax.device_get(variables))
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    twin.eval()
    with torch.no_grad():
        got = twin(xt).numpy()
    # One forward pass through ~10 layers in two libraries: a few 1e-7 of the
    # logits' scale (bound 1e-5).
    assert_close(got, net.apply(variables, x), 1e-5, what="inference logits")
    # Training mode as the tuned baseline runs it: channels_last, with a
    # backward pass (oneDNN's kernel keeps the running variance for it, so the
    # twin must not change that tensor in place).
    twin.train()
    twin = twin.to(memory_format=torch.channels_last)
    out = twin(xt.contiguous(memory_format=torch.channels_last))
    out.sum().backward()
    got = out.detach().numpy()
    want, new = net.apply(variables, x, train=True, mutable=["batch_stats"])
    assert_close(got, want, 1e-5, what="training logits")
    stats = twin.state_dict()
    # A batch mean over 8 x 32 x 32 values, which oneDNN sums in another order
    # than XLA: about sqrt(8192) = 90 unit roundoffs (5e-6) of the values' scale.
    for layer, leaves in new["batch_stats"].items():
        for leaf, name in (("mean", "running_mean"), ("var", "running_var")):
            assert_close(
                stats[f"layers.{layer}.{name}"].numpy(), leaves[leaf], 2e-5, what=f"{layer} {leaf}"
            )


def test_twin_augmentation_equals_jaxmias():
    # The same flips and offsets: the same images, bit for bit (data movement).
    import jax.numpy as jnp

    from jaxmia.training import augment

    x = np.random.default_rng(0).normal(size=(5, 32, 32, 3)).astype(np.float32)
    flip = np.array([1, 0, 1, 0, 1], bool)
    offsets = np.array([[0, 0], [8, 8], [2, 6], [4, 4], [7, 0]], np.int64)
    for kind in ("flip", "flip_crop"):
        off = offsets if kind == "flip_crop" else np.full_like(offsets, augment.CROP_PAD)
        want = np.asarray(augment.apply(kind, jnp.asarray(x), flip, jnp.asarray(off)))
        got = pb.augment_batch(
            torch.from_numpy(x).permute(0, 3, 1, 2),
            kind,
            torch.from_numpy(flip),
            torch.from_numpy(off),
        )
        np.testing.assert_array_equal(got.permute(0, 2, 3, 1).numpy(), want)
    # And the baseline's own draws follow jaxmia's law: offsets 0..8, flips 1/2.
    g = torch.Generator().manual_seed(0)
    flips, offs = pb.draw_augmentation("flip_crop", 20_000, g)
    assert abs(flips.float().mean().item() - 0.5) < 5 * 0.5 / np.sqrt(20_000)
    assert offs.min().item() == 0 and offs.max().item() == 2 * augment.CROP_PAD


def test_twins_start_from_jaxmias_initial_distributions():
    # Each twin draws its own initial weights with torch; their laws must be
    # jaxmia's: He-normal over the fan-out for the WRN's convolutions (std
    # sqrt(2 / (9 cout))), Xavier truncated normal for its dense layer, PyTorch's
    # uniform for ResNet-9.  With thousands of weights per layer, the sample
    # standard deviation lies within a few percent of the law's.
    import jax

    from jaxmia.models import MODELS

    for name in ("wrn28_2", "resnet9"):
        net = MODELS[name].build(10, "xla", np.float32)
        variables = jax.jit(net.init)(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
        twin = pb.init_model(name, 10, seed=0)
        state = twin.state_dict()
        for layer, leaves in variables["params"].items():
            if "kernel" not in leaves:
                continue
            mine = np.asarray(leaves["kernel"])
            theirs = state[f"layers.{layer}.weight"].numpy()
            assert theirs.size == mine.size
            if mine.size >= 1000:
                ratio = theirs.std() / mine.std()
                # sample stds of n >= 1000 values: each within 4.5/sqrt(2n) of the law's
                assert abs(ratio - 1) < 9 / np.sqrt(2 * mine.size), (name, layer, ratio)


def test_baseline_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert pb.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pytorch_baseline: error:") and "\n" not in err
    with pytest.raises(SystemExit) as e:
        pb.main(["--config", "x.yaml", "--mode", "fast"])
    assert e.value.code == 2
    assert "\n" not in capsys.readouterr().err.strip()


def test_baseline_refuses_a_model_it_has_no_torch_twin_for(tmp_path, capsys, monkeypatch):
    import dataclasses

    from jaxmia.models import MODELS

    other = dataclasses.replace(MODELS["cnn"], name="other", builder="elsewhere:Net")
    monkeypatch.setitem(MODELS, "other", other)
    cfg_path = tmp_path / "other.yaml"
    cfg_path.write_text("dataset: synthetic\nnum_classes: 10\nmodel: other\n")
    assert pb.main(["--config", str(cfg_path), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "pytorch_baseline: error: the baseline has no torch twin of model: other (elsewhere:Net)"
    )
    # The func mode's hand-written SGD knows the CNN and the seed's recipe only.
    cfg_path.write_text("dataset: synthetic\nnum_classes: 10\nmodel: wrn28_2\n")
    argv = ["--config", str(cfg_path), "--mode", "func", "--output-dir", str(tmp_path / "o")]
    assert pb.main(argv + ["--data-dir", str(tmp_path / "d")]) == 2
    assert "--mode func trains model: cnn" in capsys.readouterr().err


def test_baseline_cli_writes_outputs(tmp_path):
    cfg_path = tmp_path / "cli.yaml"
    cfg_path.write_text(
        "dataset: synthetic\nnum_classes: 10\nn_iterations: 2\nsubset_size: 32\nepochs: 1\n"
        "batch_size: 16\neval_pairs: 0\ntest_samples: 32\nsave_plots: false\n"
    )
    rc = pb.main(
        ["--config", str(cfg_path), "--mode", "tuned", "--output-dir", str(tmp_path / "o")]
        + ["--data-dir", str(tmp_path / "d"), "--threads", "1"]
    )
    assert rc == 0
    results = json.loads((tmp_path / "o" / "cli-torch-tuned" / "results.json").read_text())
    assert results["n_iterations"] == 2 and results["synthetic"] is True


@pytest.mark.slow
def test_harness_smoke(tmp_path, monkeypatch):
    # The runs are subprocesses: measure the real CPU, not conftest's fake devices.
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    out = tmp_path / "results"
    # Only the tuned baseline: the three modes are smoke-tested in-process above.
    argv = ["--smoke", "--silent", "--modes", "tuned", "--baseline-threads", "1"]
    argv += ["--out", str(out)]
    argv += ["--data-dir", str(tmp_path / "data")]
    assert harness.main(argv) == 0
    (path,) = out.glob("*.json")
    report = json.loads(path.read_text())
    assert path.with_suffix(".png").stat().st_size > 0
    assert set(report["implementations"]) == {"jaxmia", "tuned"}
    assert report["speedup_vs_tuned"] > 0
    for m in report["implementations"].values():
        assert m["image_steps_per_second"] > 0 and m["peak_rss_mib"] > 0
        assert m["gflops_per_second"] > 0
    # --cpu-devices auto takes one device per core on a quiet machine and one on a
    # busy one, and a chunk is a whole number of models per device: the sweep's 1
    # and 2 are rounded up to the devices each point ran on.
    want = [
        -(-k // p["devices"]) * p["devices"] for k, p in zip((1, 2), report["sweep"], strict=True)
    ]
    assert [p["models_per_chunk"] for p in report["sweep"]] == want
    faith = report["faithfulness"]
    assert 0 <= faith["member_p"] <= 1 and 0 <= faith["nonmember_p"] <= 1


def test_harness_sweep_rounds_fill_whole_chunks():
    base = {"n_iterations": 5, "eval_pairs": 1}
    for k in (1, 2, 3, 4, 8, 16):
        rounds = harness.sweep_rounds(base, k)
        assert (2 * rounds) % k == 0 and 2 * rounds >= 12


def test_harness_variants_and_conv_sweep_table():
    opts = harness.parse(
        ["--variant", "2dev:host_devices=2,conv=im2col", "--sweep-convs", "xla,im2col"]
    )
    ((name, overrides, env),) = opts.variants
    assert name == "2dev" and overrides == {"conv": "im2col"}
    assert "--xla_force_host_platform_device_count=2" in env["XLA_FLAGS"]
    assert opts.sweep_convs == ["xla", "im2col"]
    with pytest.raises(SystemExit):
        harness.parse(["--variant", "no-colon"])
    report = {
        "sweep": [
            {
                "models_per_chunk": 4,
                "conv": "xla",
                "image_steps_per_second": 10.0,
                "peak_rss_mib": 5,
            },
            {
                "models_per_chunk": 4,
                "conv": "im2col",
                "image_steps_per_second": 20.0,
                "peak_device_mib": 7,
                "peak_rss_mib": 5,
            },
            {"models_per_chunk": 8, "conv": "xla", "error": "out of memory"},
        ]
    }
    table = harness.format_sweep(report).strip().splitlines()
    assert table[0] == "| models_per_chunk | im2col image-steps/s (MiB) | xla image-steps/s (MiB) |"
    assert table[2] == "| 4 | 20 (7) | 10 (5) |"
    assert table[3].startswith("| 8 |  | failed (out of memory")


def test_harness_model_option():
    # --model trains another network everywhere; the BatchNorm networks default
    # to the tuned baseline (func trains the CNN only) and, at GPU sizes, to
    # chunks sized from the device's memory on fewer images.
    assert harness.default_modes("cnn") == list(pb.MODES)
    assert harness.default_modes("wrn28_2") == ["tuned"]
    opts = harness.parse(["--gpu", "--model", "resnet9"])
    assert opts.model == "resnet9" and opts.modes is None
    assert opts.overrides["models_per_chunk"] == "auto"
    assert opts.overrides["subset_size"] == 500 and opts.overrides["epochs"] == 1
    assert harness.parse(["--gpu"]).overrides["models_per_chunk"] == 512
    report = {
        "model": "resnet9",
        "implementations": {
            "jaxmia": {
                "models_per_second": 0.5,
                "seconds_per_model": 2.0,
                "image_steps_per_second": 100.0,
                "gflops_per_second": 227.2,
                "share_of_sgemm_peak": 0.5,
                "train_seconds": 8.0,
                "compile_seconds": 20.0,
                "peak_rss_mib": 900.0,
                "peak_device_mib": None,
                "conv": "winograd",
                "strategy": "map",
                "devices": 2,
            }
        },
        "speedup_vs_tuned": None,
        "machine": {"Model name": "CPU", "sgemm_gflops": 454.4},
        "sweep": [],
    }
    table = harness.format_table(report).splitlines()
    assert table[0] == "model: resnet9"
    assert table[3] == (
        "| jaxmia (winograd, map, 2 dev) | 0.500 | 2.00 | 100 | 227.20 | 50.0% | 8.0 | 20.0 "
        "| 900 |  |"
    )
    assert "sgemm peak 454.4 GFLOP/s" in harness.format_table(report)


@pytest.mark.slow
def test_opacus_mode_trains_jaxmias_dp_sgd(tiny_dataset, tmp_path):
    pytest.importorskip("opacus")
    pytest.importorskip("dp_accounting")
    cfg = tiny_cfg(dp={"noise_multiplier": [0.5, 2.0], "l2_clip": 1.0}, canary="mislabeled")
    results = pb.run_baseline(cfg, tiny_dataset, "opacus", tmp_path, threads=1)
    assert results["implementation"] == "pytorch-opacus"
    assert results["models_trained"] == 8
    # The same mechanism and accountant as jaxmia's, per level.
    levels = results["privacy"]["levels"]
    assert [lv["noise_multiplier"] for lv in levels] == [0.5, 2.0]
    assert levels[0]["epsilon"]["pld"] > levels[1]["epsilon"]["pld"] > 0
    with np.load(tmp_path / "tiny-torch-opacus" / "losses.npz") as z:
        assert np.isfinite(z["member_losses"]).all()
        np.testing.assert_array_equal(z["noise_multiplier"], [0.5, 2.0, 0.5])
        assert z["target_label"] != z["original_label"]
    with pytest.raises(pb.UserError, match="needs a dp: section"):
        pb.run_baseline(tiny_cfg(), tiny_dataset, "opacus", tmp_path / "b", threads=1)
