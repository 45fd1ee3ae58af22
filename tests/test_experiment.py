"""Resume, growth, failures and devices: results never depend on how the work was split."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmia import experiment
from jaxmia.config import Config
from jaxmia.errors import NothingToAnalyse, UserError
from jaxmia.experiment import NonFiniteLoss, run_experiment
from jaxmia.runs.plan import CALIBRATION, Job
from jaxmia.runs.products import RUN_KEYS
from jaxmia.training.chunk import ChunkTrainer

from conftest import TINY_MODELS
from numerics import assert_close
from reference_stats import naive_loss

ROOT = Path(__file__).resolve().parents[1]
# Runs that split the same models differently (chunk widths, device counts,
# processes) run other compiled programs, so their losses agree to float32
# rounding, not to the bit: a few unit roundoffs (6e-8) per step of the tiny
# models' ~10 steps, carried by momentum 0.9 (x10): 1e-4 of one nat bounds it
# (a cross-entropy's rounding is absolute, set by the logits, not by the loss).
# Runs of one program (a resume at the recorded width) are compared bit for bit.
LOSS_BOUND = 1e-4


# The tiny experiment every test here runs, in process (cfg) or as a CLI run (CLI_CFG).
TINY = dict(
    dataset="synthetic",
    num_classes=10,
    target_index=3,
    n_iterations=4,
    subset_size=24,
    epochs=2,
    batch_size=16,
    lr=0.05,
    alpha=0.25,
    seed=2,
    eval_pairs=1,
    models_per_chunk=2,
    test_samples=16,
    save_plots=False,
)


def cfg(**kw) -> Config:
    return Config(**{**TINY, "run_name": "run", **kw})


def losses(out: Path, name="run"):
    with np.load(out / name / "losses.npz") as z:
        return {k: z[k] for k in z.files}


def run(c: Config, out: Path, **kw):
    return run_experiment(c, data_dir=out / "data", output_dir=out, progress=False, **kw)


@pytest.mark.slow
def test_more_rounds_later_trains_only_the_new_ones(tmp_path):
    small = run(cfg(n_iterations=4), tmp_path / "grow")
    assert small["models_trained"] == 10 and small["models_reused"] == 0
    # What analyze checks the arrays against: run.json's train_size and target_index, the
    # epoch-loss flags beside the outputs, and the run's record kept apart from results.
    folder = tmp_path / "grow" / "run"
    ident = json.loads((folder / "run.json").read_text())
    held = losses(tmp_path / "grow")
    assert ident["train_size"] == 50_000  # the synthetic data's training split
    assert int(held["target_index"]) == ident["config"]["target_index"]
    assert held["train_finite"].all() and held["eval_train_finite"].all()
    record = json.loads((folder / "record.json").read_text())
    assert record == {k: small[k] for k in RUN_KEYS}
    grown = run(cfg(n_iterations=6, eval_pairs=2), tmp_path / "grow")
    assert grown["models_trained"] == 2 * 2 + 2 and grown["models_reused"] == 10
    direct = run(cfg(n_iterations=6, eval_pairs=2, models_per_chunk=4), tmp_path / "direct")
    a, b = losses(tmp_path / "grow"), losses(tmp_path / "direct")
    for key in ("member_losses", "nonmember_losses", "eval_member_losses"):
        assert_close(a[key], b[key], LOSS_BOUND, scale=1.0, what=key)  # other chunk widths
    assert_close(direct["threshold"], grown["threshold"], LOSS_BOUND, scale=1.0)


@pytest.mark.slow
def test_several_devices_give_the_one_device_results(tmp_path):
    devices = jax.local_devices()
    if len(devices) < 4:  # conftest fakes 4 CPU devices; a 1-GPU host has one
        pytest.skip(f"needs 4 devices, this host has {len(devices)}")
    one = run(cfg(models_per_chunk=4), tmp_path / "one", devices=devices[:1])
    four = run(cfg(models_per_chunk=4), tmp_path / "four", devices=devices)
    a, b = losses(tmp_path / "one"), losses(tmp_path / "four")
    for key in ("member_losses", "nonmember_losses"):
        assert_close(a[key], b[key], LOSS_BOUND, scale=1.0, what=key)  # another program
    assert four["models_per_chunk"] == 4 and len(four["devices"]) == 4
    # The AUC ranks the losses: equal unless an IN and an OUT loss lie within
    # rounding of each other, which these well-separated losses do not.
    assert one["auc"] == four["auc"]


@pytest.mark.slow
def test_different_config_in_the_same_folder_is_refused(tmp_path):
    run(cfg(), tmp_path)
    with pytest.raises(UserError, match="the configuration changed"):
        run(cfg(lr=0.01), tmp_path)
    again = run(cfg(lr=0.01), tmp_path, fresh=True)
    assert again["models_trained"] == 10


@pytest.mark.parametrize("strategy", ["map", "vmap"])
@pytest.mark.slow
def test_resume_with_auto_chunks_is_bit_identical(tmp_path, strategy):
    # models_per_chunk: auto sizes a chunk from the work left.  Under vmap the
    # batch width reaches the last bits of a loss, so a resumed run must train
    # its remaining models at the width the run started with.
    one_device = jax.local_devices()[:1]
    c = cfg(models_per_chunk="auto", strategy=strategy)
    whole = run(c, tmp_path / "whole", devices=one_device)
    assert whole["models_per_chunk"] == 4  # 10 jobs: chunks of 4, 4 and 2
    cut = tmp_path / "cut"
    run(c, cut, devices=one_device)
    chunks = sorted((cut / "run" / "chunks").glob("chunk-*.npz"))
    for p in chunks[1:]:  # as if killed after the first chunk: 6 models left
        p.unlink()
    resumed = run(c, cut, devices=one_device)
    assert resumed["models_trained"] == 6 and resumed["models_per_chunk"] == 4
    a, b = losses(tmp_path / "whole"), losses(cut)
    for key in ("member_losses", "nonmember_losses", "member_logits", "eval_member_losses"):
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.slow
def test_a_different_computation_is_refused_with_what_changed(tmp_path):
    run(cfg(conv="im2col"), tmp_path)
    with pytest.raises(UserError, match=r"the computation changed \(conv: 'im2col' -> 'xla'\)"):
        run(cfg(conv="xla"), tmp_path)


def test_changed_data_is_named_as_such(tmp_path, monkeypatch):
    run(cfg(), tmp_path)
    real = experiment.load_dataset

    def other_data(*a, **kw):
        import dataclasses

        return dataclasses.replace(real(*a, **kw), fingerprint="synthetic:changed")

    monkeypatch.setattr(experiment, "load_dataset", other_data)
    with pytest.raises(UserError, match="the data changed"):
        run(cfg(), tmp_path)


@pytest.mark.slow
def test_damaged_chunk_is_trained_again(tmp_path, capsys):
    one_device = jax.local_devices()[:1]  # so that a chunk is exactly models_per_chunk=2 jobs
    first = run(cfg(), tmp_path, devices=one_device)
    chunks = sorted((tmp_path / "run" / "chunks").glob("chunk-*.npz"))
    original = {p: p.read_bytes() for p in chunks}
    chunks[1].write_bytes(chunks[1].read_bytes()[:100])  # as if killed mid-write
    data = bytearray(chunks[2].read_bytes())
    data[len(data) // 2] ^= 0x10  # one flipped bit
    chunks[2].write_bytes(bytes(data))
    again = run(cfg(), tmp_path, devices=one_device)
    assert again["models_trained"] == 4 and again["models_reused"] == 6
    assert capsys.readouterr().err.count("damaged") == 2
    for key in ("threshold", "power", "auc", "evaluation"):
        assert again[key] == first[key]
    for p in chunks[1:3]:
        # Set aside, and trained again to the very same bytes (so the same name).
        assert p.with_name(p.name + ".corrupt").exists()
        assert p.read_bytes() == original[p]


def _poison(target_job: Job):
    """Wraps ChunkTrainer.run so that one job's epoch losses come back NaN."""
    real_run = ChunkTrainer.run

    def run_with_nan(self, jobs, *a, **kw):
        res = real_run(self, jobs, *a, **kw)
        for i, job in enumerate(jobs):
            if job == target_job:
                res.epoch_loss[i, -1] = np.nan
        return res

    return run_with_nan


@pytest.mark.slow
def test_nonfinite_loss_stops_or_skips(tmp_path, monkeypatch):
    bad = Job(CALIBRATION, 2, False)
    monkeypatch.setattr(ChunkTrainer, "run", _poison(bad))
    with pytest.raises(NonFiniteLoss, match="epoch 1 for calibration round 2, OUT model"):
        run(cfg(), tmp_path / "stop")
    res = run(cfg(on_nonfinite="skip"), tmp_path / "skip")
    assert res["rounds_used"] == 3
    assert res["skipped"] == ["calibration round 2, OUT model"]
    assert losses(tmp_path / "skip")["round_used"].tolist() == [True, True, False, True]


def test_no_finite_round_left_is_one_clear_stop(tmp_path, monkeypatch):
    real_run = ChunkTrainer.run

    def every_in_model_diverges(self, jobs, *a, **kw):
        res = real_run(self, jobs, *a, **kw)
        for i, job in enumerate(jobs):
            if job.member:
                res.epoch_loss[i, -1] = np.nan
        return res

    monkeypatch.setattr(ChunkTrainer, "run", every_in_model_diverges)
    with pytest.raises(NothingToAnalyse, match="nothing to analyse: no calibration round"):
        run(cfg(on_nonfinite="skip"), tmp_path)


def test_a_nonfinite_evaluation_model_is_left_out_of_everything(tmp_path, monkeypatch):
    monkeypatch.setattr(ChunkTrainer, "run", _poison(Job(1, 1, True)))
    res = run(cfg(on_nonfinite="skip", eval_pairs=3), tmp_path)
    assert res["skipped"] == ["evaluation pair 1, IN model"]
    assert res["eval_pairs_used"] == 2
    assert res["evaluation"]["n_member"] == 2 and res["evaluation"]["n_nonmember"] == 2


def test_unwritable_results_is_a_user_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    run(cfg(), tmp_path)
    results = tmp_path / "run" / "results.json"
    before = results.read_bytes()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(UserError, match="No space left on device"):
        run(cfg(alpha=0.3), tmp_path)
    assert results.read_bytes() == before
    assert not [p for p in (tmp_path / "run").iterdir() if ".tmp" in p.name]


# --------------------------------------------------------------------------
# Whole processes: kill -9 and resume; Ctrl-C; two hosts on loopback.

CLI_CFG = {**TINY, "n_iterations": 8, "epochs": 3, "seed": 5, "eval_pairs": 2}


def _env():
    env = {**os.environ, "JAXMIA_NO_DOWNLOAD": "1"}  # the session's compile cache (conftest)
    env.pop("XLA_FLAGS", None)
    return env


def _write_cfg(tmp_path, **kw) -> Path:
    import yaml

    p = tmp_path / "mia.yaml"
    p.write_text(yaml.safe_dump({**CLI_CFG, **kw}))
    return p


def _cmd(config, out, *extra):
    # One CPU device whatever the load (--cpu-devices auto would pick by the load
    # when each run starts, and print a line when the machine is busy).
    return [sys.executable, "-m", "jaxmia.run", "--no-progress", "--cpu-devices", "1"] + [
        "--config",
        str(config),
        "--output-dir",
        str(out),
        *extra,
    ]


def _said(err: str) -> list[str]:
    """The lines of stderr besides the line per finished chunk (--no-progress)."""
    return [line for line in err.strip().splitlines() if not line.startswith("jaxmia: chunk ")]


def _wait_for_chunks(path: Path, n: int, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if len(list(path.glob("chunk-*.npz"))) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"finished before it could be stopped: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("no chunk appeared")


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    # 40 rounds + 2 pairs = 84 models in 42 chunks: with a warm compile cache a
    # chunk takes a fraction of a second, and the kill must land mid-run.
    config = _write_cfg(tmp_path, n_iterations=40)
    n_models, n_chunks = 84, 42
    whole = subprocess.run(_cmd(config, tmp_path / "whole"), env=_env(), capture_output=True)
    assert whole.returncode == 0, whole.stderr
    killed_out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(config, killed_out), env=_env(), stderr=subprocess.PIPE, text=True)
    _wait_for_chunks(killed_out / "mia" / "chunks", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = len(list((killed_out / "mia" / "chunks").glob("chunk-*.npz")))
    assert 2 <= kept < n_chunks and not (killed_out / "mia" / "results.json").exists()
    again = subprocess.run(_cmd(config, killed_out), env=_env(), capture_output=True)
    assert again.returncode == 0, again.stderr
    res = json.loads((killed_out / "mia" / "results.json").read_text())
    assert res["models_reused"] == 2 * kept and res["models_trained"] == n_models - 2 * kept
    a, b = losses(tmp_path / "whole", "mia"), losses(killed_out, "mia")
    for key in ("member_losses", "nonmember_losses", "eval_member_losses", "test_accuracy"):
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_chunks(tmp_path):
    config = _write_cfg(tmp_path, n_iterations=500)  # far more than it gets to
    out = tmp_path / "out"
    # A shell's background job starts with SIGINT ignored, and children inherit
    # that; the run gets Python's usual Ctrl-C handler back, as under a terminal.
    restore = (
        "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "runpy.run_module('jaxmia.run', run_name='__main__', alter_sys=True)"
    )
    cmd = [sys.executable, "-c", restore, *_cmd(config, out)[3:]]
    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, text=True)
    _wait_for_chunks(out / "mia" / "chunks", 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert len(_said(err)) == 1, err
    assert list((out / "mia" / "chunks").glob("chunk-*.npz"))


@pytest.mark.parametrize("delay", [0.5, 3.0])
@pytest.mark.slow
def test_ctrl_c_while_starting_or_compiling_is_never_swallowed(tmp_path, delay):
    # Once a KeyboardInterrupt raised inside JAX (a GC callback, a compile) was
    # lost and the run trained to the end.  A signal now only sets a flag.
    config = _write_cfg(tmp_path, n_iterations=500)
    restore = (
        "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "runpy.run_module('jaxmia.run', run_name='__main__', alter_sys=True)"
    )
    cmd = [sys.executable, "-c", restore, *_cmd(config, tmp_path / "out")[3:]]
    env = {**_env(), "JAXMIA_CACHE_DIR": "off"}  # a cold compile: the signal lands in it
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert len(_said(err)) == 1, err
    assert not (tmp_path / "out" / "mia" / "results.json").exists()


@pytest.mark.slow
def test_sigterm_stops_with_143_and_a_second_process_is_refused(tmp_path):
    config = _write_cfg(tmp_path, n_iterations=500)
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(config, out), env=_env(), stderr=subprocess.PIPE, text=True)
    _wait_for_chunks(out / "mia" / "chunks", 1, proc)
    # The folder is locked: a second run on it stops at once, saying who holds it.
    second = subprocess.run(_cmd(config, out), env=_env(), capture_output=True, text=True)
    assert second.returncode == 2, second.stderr
    assert f"is in use by process {proc.pid}" in second.stderr
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    kept = list((out / "mia" / "chunks").glob("chunk-*.npz"))
    assert kept and not (out / "mia" / "results.json").exists()


@pytest.mark.slow
def test_two_processes_on_loopback_equal_one(tmp_path):
    import socket

    config = _write_cfg(tmp_path, n_iterations=6, eval_pairs=1)
    single = subprocess.run(_cmd(config, tmp_path / "single"), env=_env(), capture_output=True)
    assert single.returncode == 0, single.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    multi = tmp_path / "multi"
    procs = [
        subprocess.Popen(
            _cmd(config, multi)
            + [
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    assert "Threshold" in outs[0][0] and "Threshold" not in outs[1][0]
    a, b = losses(tmp_path / "single", "mia"), losses(multi, "mia")
    for key in ("member_losses", "nonmember_losses", "eval_member_losses"):
        assert_close(a[key], b[key], LOSS_BOUND, scale=1.0, what=key)  # other processes


def test_experiment_module_imports_no_statistics_from_jax():
    # the attack library, plots, kinds and fileio stay host-side: no JAX on import.
    code = (
        "import sys, jaxmia.attack.summary, jaxmia.plotting, jaxmia.kinds, jaxmia.fileio; "
        "print('jax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
    assert experiment.run_experiment is run_experiment


KINDS = {
    "targets": dict(experiment="targets", targets=[3, 8, 15, 40], eval_models=2, inclusion=0.5),
    "population": dict(experiment="population"),
}
# Many targets with query views and population points: the same guarantees.
KINDS["targets-views"] = dict(KINDS["targets"], queries=18, population_size=3)
GROW = {"targets": ("n_models", 2, 6), "population": ("repetitions", 2, 5)}
GROW["targets-views"] = GROW["targets"]
ARRAYS = {"targets": "targets.npz", "population": "population.npz"}
ARRAYS["targets-views"] = ARRAYS["targets"]


@pytest.mark.parametrize("kind", ["targets", "targets-views", "population"])
@pytest.mark.slow
def test_new_kinds_grow_resume_and_shard_bit_identically(tmp_path, kind):
    key, small, full = GROW[kind]

    def arrays(out):
        with np.load(out / "run" / ARRAYS[kind]) as z:
            return {k: z[k] for k in z.files}

    devices = jax.local_devices()
    if len(devices) < 4:
        pytest.skip("needs 4 devices (tests/conftest.py fakes them on a CPU)")
    whole = run(cfg(**KINDS[kind], **{key: full}), tmp_path / "whole", devices=devices)
    assert whole["models_trained"] == full + (2 if kind != "population" else 0)
    one = run(cfg(**KINDS[kind], **{key: full}), tmp_path / "one", devices=devices[:1])
    assert one["models_trained"] == whole["models_trained"]
    # Four devices: a smaller run, grown, one chunk lost and trained again.
    out = tmp_path / "grown"
    run(cfg(**KINDS[kind], **{key: small}), out, devices=devices)
    grown = run(cfg(**KINDS[kind], **{key: full}), out, devices=devices)
    assert grown["models_reused"] == small + (2 if kind != "population" else 0)
    sorted((out / "run" / "chunks").glob("chunk-*.npz"))[-1].unlink()
    again = run(cfg(**KINDS[kind], **{key: full}), out, devices=devices)
    assert again["models_trained"] > 0
    # Grown, resumed and retrained on four devices: the program of the
    # uninterrupted four-device run, so the very same bits.
    a, b = arrays(tmp_path / "whole"), arrays(out)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # One device runs another program: the same models, up to rounding.
    c = arrays(tmp_path / "one")
    for name in a:
        if name.endswith("losses") or name.endswith("logits"):
            scale = 1.0 if name.endswith("losses") else None  # logits: their own scale
            assert_close(c[name], a[name], LOSS_BOUND, scale=scale, what=name)
        else:  # integers, masks and accuracies (hit counts: no argmax is within rounding)
            np.testing.assert_array_equal(c[name], a[name], err_msg=name)


def test_many_targets_statistics_equal_a_hand_computation(tmp_path):
    from jaxmia.attack import summary

    res = run(cfg(**KINDS["targets"], n_models=8), tmp_path)
    with np.load(tmp_path / "run" / "targets.npz") as z:
        member = z["membership"]
        # The loss score from the logits in float64, target by target.
        losses = np.stack(
            [naive_loss(z["logits"][:, t], z["target_labels"][t]) for t in range(4)], axis=1
        )
    assert member.sum(0).tolist() == [4, 4, 4, 4]  # balanced: every target IN for half
    rows = list(csv_rows(tmp_path / "run" / "targets.csv"))
    for t, row in enumerate(rows):
        mine = summary.summarize(
            losses[member[:, t], t], losses[~member[:, t], t], alpha=res["alpha"], items=False
        )
        assert float(row["auc"]) == pytest.approx(mine["auc"], abs=1e-12)
        assert float(row["power"]) == pytest.approx(mine["power"], abs=1e-12)
        assert int(row["index"]) == [3, 8, 15, 40][t]


def csv_rows(path):
    import csv

    with open(path, newline="") as f:
        yield from csv.DictReader(f)


# --------------------------------------------------------------------------
# The BatchNorm networks and augmentation (issue 15): resume and chunking.

TINY_WRN = dict(
    model="wrn10_1",
    augment="flip_crop",
    lr_schedule="cosine",
    warmup_epochs=1.0,
    nesterov=True,
    label_smoothing=0.1,
)
# The registry entry a child process (below) adds: conftest's tiny WRN.
REGISTER_WRN10_1 = (
    "import dataclasses; from jaxmia.models import MODELS; "
    "MODELS['wrn10_1'] = dataclasses.replace(MODELS['wrn28_2'], name='wrn10_1', "
    f"options={TINY_MODELS['wrn10_1'][1]!r})"
)


@pytest.mark.slow
def test_augmentation_does_not_depend_on_the_chunking(tmp_path):
    # Each model draws its crops and flips from (seed, model, epoch, step): in
    # chunks of 2 or of 4 (one compiled map body per model either way) the
    # same models come out.  Augmentation keyed by a model's place in its chunk
    # would give other crops, far beyond rounding.
    c = cfg(augment="flip_crop", strategy="map")
    four = run(c.replace(models_per_chunk=4), tmp_path / "four", devices=jax.local_devices()[:1])
    two = run(c.replace(models_per_chunk=2), tmp_path / "two", devices=jax.local_devices()[:1])
    run(c.replace(augment="none"), tmp_path / "plain", devices=jax.local_devices()[:1])
    a, b = losses(tmp_path / "four"), losses(tmp_path / "two")
    for key in ("member_losses", "nonmember_losses", "member_logits", "eval_member_losses"):
        scale = None if key.endswith("logits") else 1.0
        assert_close(b[key], a[key], LOSS_BOUND, scale=scale, what=key)  # another program
    assert four["models_per_chunk"] == 4 and two["models_per_chunk"] == 2
    # ... and the augmentation does change the models.
    p = losses(tmp_path / "plain")
    assert np.abs(p["member_losses"] - a["member_losses"]).max() > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(TINY_MODELS))
def test_a_batchnorm_model_resumes_bit_identically(tmp_path, tiny_models, model):
    # Each ResNet with the whole recipe (BatchNorm, augmentation, schedule): a run
    # cut after its first chunk and resumed equals the uninterrupted run, bit for bit.
    one_device = jax.local_devices()[:1]
    c = cfg(**{**TINY_WRN, "model": model}, strategy="map", n_iterations=2, eval_pairs=1)
    whole = run(c, tmp_path / "whole", devices=one_device)
    cut = tmp_path / "cut"
    run(c, cut, devices=one_device)
    for p in sorted((cut / "run" / "chunks").glob("chunk-*.npz"))[1:]:
        p.unlink()
    resumed = run(c, cut, devices=one_device)
    assert resumed["models_trained"] == whole["models_trained"] - 2
    a, b = losses(tmp_path / "whole"), losses(cut)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.slow
def test_kill_9_then_resume_a_batchnorm_model_on_the_recorded_devices(tmp_path):
    # A child process with the test registry entry trains the tiny WRN on two
    # single-threaded CPU devices, is killed, and resumes with --cpu-devices auto
    # (the default), which must start the two devices run.json records whatever
    # the load: the result equals an uninterrupted two-device run, bit for bit.
    config = _write_cfg(tmp_path, n_iterations=12, eval_pairs=0, **TINY_WRN)
    start = (
        f"{REGISTER_WRN10_1}; import runpy; "
        "runpy.run_module('jaxmia.run', run_name='__main__', alter_sys=True)"
    )

    def cmd(out, *devices):
        args = ["--no-progress", "--config", str(config), "--output-dir", str(out), *devices]
        return [sys.executable, "-c", start, *args]

    whole = subprocess.run(
        cmd(tmp_path / "whole", "--cpu-devices", "2"), env=_env(), capture_output=True, text=True
    )
    assert whole.returncode == 0, whole.stderr
    killed_out = tmp_path / "killed"
    proc = subprocess.Popen(
        cmd(killed_out, "--cpu-devices", "2"), env=_env(), stderr=subprocess.PIPE, text=True
    )
    _wait_for_chunks(killed_out / "mia" / "chunks", 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = len(list((killed_out / "mia" / "chunks").glob("chunk-*.npz")))
    again = subprocess.run(cmd(killed_out), env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    res = json.loads((killed_out / "mia" / "results.json").read_text())
    identity = json.loads((killed_out / "mia" / "run.json").read_text())
    assert identity["execution"]["cpu_devices"] == 2 and len(res["devices"]) == 2
    assert res["models_reused"] == 2 * kept and res["models_trained"] == 24 - 2 * kept
    a, b = losses(tmp_path / "whole", "mia"), losses(killed_out, "mia")
    for key in ("member_losses", "nonmember_losses", "member_logits", "test_accuracy"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_fresh_replaces_the_recorded_and_the_new_kinds_products_only(tmp_path):
    # --fresh in a single-target folder must leave the user's own targets.csv,
    # vulnerability.png and population.npz (names other kinds write) alone.
    from jaxmia import kinds
    from jaxmia.runs.store import RunStore

    run = tmp_path / "run"
    ident = {
        "results_hash": "h",
        "jaxmia_version": "v",
        "config": {"experiment": "single_target"},
        "execution": {},
    }
    RunStore.open(run, ident, product_files=()).close()
    same = experiment._product_files(run, kinds.get("single_target"))
    assert set(same) == set(kinds.product_files(kinds.get("single_target")))
    assert not {"targets.csv", "vulnerability.png", "population.npz"} & set(same)
    switched = experiment._product_files(run, kinds.get("targets"))
    assert {"losses.npz", "roc.png", "targets.csv", "targets.npz"} <= set(switched)
    assert "population.npz" not in switched
    assert experiment._product_files(tmp_path / "new", kinds.get("population")) == (
        kinds.product_files(kinds.get("population"))
    )


def test_a_chunk_is_never_larger_than_the_models_left_under_map(capsys):
    # models_per_chunk 64 for 16 models trained 48 copies of the last one (39.6 s and
    # 3.0 GB against 15.7 s and 0.9 GB, identical results).
    assert experiment._fit_chunk(64, 16, 1, 1, "map") == 16
    assert experiment._fit_chunk(64, 6, 4, 1, "map") == 8  # a multiple of the devices
    assert experiment._fit_chunk(64, 10, 2, 2, "map") == 6  # each process's share
    assert experiment._fit_chunk(4, 100, 4, 1, "map") == 4
    assert experiment._fit_chunk(8, 0, 4, 1, "map") == 4  # nothing left: no work, any size
    assert capsys.readouterr().err == ""
    # Under vmap the width is part of every loss's bits: kept, and said.
    assert experiment._fit_chunk(64, 16, 1, 1, "vmap") == 64
    err = capsys.readouterr().err
    assert "48 copies" in err and "models_per_chunk to 16" in err


@pytest.mark.slow
def test_no_progress_still_says_a_line_per_chunk(tmp_path, capsys):
    res = run(cfg(models_per_chunk=64), tmp_path)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("jaxmia: chunk ")]
    n_models = 2 * TINY["n_iterations"] + 2 * TINY.get("eval_pairs", 1)
    assert res["models_per_chunk"] == -(-n_models // 4) * 4  # 4 devices (conftest)
    assert len(lines) == 1
    assert lines[0].startswith(f"jaxmia: chunk 1 of 1 done: {n_models} of {n_models} models")


@pytest.mark.parametrize("queries", [1, 2])
def test_a_targets_run_without_evaluation_models_finishes(tmp_path, queries):
    # eval_models: 0 (configs/lira_cifar10.yaml's setting) once crashed after the
    # training: the finiteness check of no models reshaped an empty array to (0, -1).
    c = cfg(**{**KINDS["targets"], "eval_models": 0, "n_models": 2, "queries": queries})
    res = run(c, tmp_path)
    assert res["eval_models"] == 0 and res["models_trained"] == 2
    with np.load(tmp_path / "run" / "targets.npz") as z:
        assert z["eval_losses"].shape == (0, 4) and z["losses"].shape == (2, 4)
        assert z["eval_model_used"].shape == (0,) and z["model_used"].all()
    assert any("no evaluation models" in w for w in res["warnings"])
