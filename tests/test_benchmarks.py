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

from conftest import TINY_TARGET, single_target_plan, tiny_config  # noqa: E402
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


@pytest.mark.parametrize("member", [True, False])
@pytest.mark.slow
def test_baseline_equals_jaxmia_from_the_same_start(tiny_dataset, member):
    # jaxmia's initial weights copied into torch and jaxmia's batch order fed to
    # the tuned baseline: the two must train the same model.  This checks the
    # CNN, the loss, the partial last batch and SGD with momentum and weight decay.
    import jax
    import jax.numpy as jnp

    from jaxmia.runs.plan import CALIBRATION, Job
    from jaxmia.training.chunk import ChunkTrainer
    from jaxmia.training.one_model import init_state, model_keys
    from jaxmia.training.setup import make_setup

    cfg = tiny_cfg(epochs=3)
    job = Job(CALIBRATION, 0, member)
    plan = single_target_plan(cfg, tiny_dataset, TARGET)
    setup = make_setup(cfg.replace(conv="im2col", strategy="vmap"), tiny_dataset, "cpu", plan)
    trainer = ChunkTrainer(
        setup, tiny_dataset, plan=plan, models_per_chunk=1, devices=jax.local_devices()[:1]
    )
    res = trainer.run([job], keep_params=True)

    idx, mask, ids = job_rows(
        [job], seed=cfg.seed, n_train=240, target=TARGET, subset_size=40, batch_size=16
    )
    idx, mask = idx[0], mask[0]
    init_params = init_state(setup, jnp.asarray(ids[0])).params
    _, order_key = model_keys(jnp.asarray(ids[0]))
    real = np.flatnonzero(mask)  # positions of the real slots; rows = idx[real]
    orders = []
    for e in range(cfg.epochs):
        u = jax.random.uniform(jax.random.fold_in(order_key, e), idx.shape)
        order = np.asarray(jnp.argsort(jnp.where(mask, u, 2.0)))[: len(real)]
        orders.append(torch.as_tensor(np.searchsorted(real, order)))

    rows = pb.training_sets(cfg, [job], 240, TARGET)[0]
    np.testing.assert_array_equal(rows, idx[real])
    model = pb.build_cnn(cfg.num_classes)
    model.load_state_dict(torch_state_from_flax(jax.device_get(init_params)))
    data = pb.TensorData(cfg, tiny_dataset, torch.device("cpu"), channels_last=False)
    epoch_loss = pb.fit_tuned(cfg, model, data, rows, orders)
    loss, logits, train_acc, test_acc = pb.evaluate_tuned(model, data, rows, TARGET, 64)

    # PyTorch's oneDNN kernels and jaxmia's XLA program sum in other orders:
    # rounding of a few unit roundoffs per step, over this model's few dozen
    # steps with momentum 0.9 (x10): 1e-4 of one nat for losses, of the logits'
    # scale for logits, 1e-3 of each parameter's scale (the smallest layers
    # move most relative to their size).
    assert_close(epoch_loss, res.epoch_loss[0], 1e-4, scale=1.0, what="epoch losses")
    assert_close(loss, res.target_loss[0], 1e-4, scale=1.0, what="target loss")
    assert_close(logits, res.target_logits[0], 1e-4, what="target logits")
    # Hit counts, equal (no argmax within rounding); jaxmia reports hits / n in
    # float32, the baseline in float64 (0.6000000238 against 0.6), so the
    # counts are compared.
    n_test = len(data.test_y)
    assert round(train_acc * len(rows)) == round(float(res.train_accuracy[0]) * len(rows))
    assert round(test_acc * n_test) == round(float(res.test_accuracy[0]) * n_test)
    final = torch_state_from_flax(jax.tree.map(lambda a: a[0], res.params))
    for name, value in model.state_dict().items():
        assert_close(value.numpy(), final[name].numpy(), 1e-3, what=name)


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

    monkeypatch.setitem(MODELS, "other", dataclasses.replace(MODELS["cnn"], name="other"))
    cfg_path = tmp_path / "other.yaml"
    cfg_path.write_text("dataset: synthetic\nnum_classes: 10\nmodel: other\n")
    assert pb.main(["--config", str(cfg_path), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "pytorch_baseline: error: the baseline trains model: cnn only, got model: other"


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
    assert [p["models_per_chunk"] for p in report["sweep"]] == [1, 2]
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
