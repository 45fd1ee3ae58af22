"""The command line end to end: outputs that agree, and bad input refused cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.special import log_softmax

import reference_stats as ref
from numerics import F32_UNIT_ROUNDOFF, assert_close

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "target_index": 3,
    "num_classes": 10,
    "n_iterations": 6,
    "subset_size": 24,
    "epochs": 2,
    "batch_size": 16,
    "lr": 0.05,
    "alpha": 0.2,
    "save_plots": True,
    "seed": 1,
    "dataset": "synthetic",
    "eval_pairs": 2,
    "models_per_chunk": 4,
    "test_samples": 32,
}


def write_config(tmp_path: Path, name="tiny", **changes) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def jaxmia(*args, cwd=None, env_extra=None, check_rc=None):
    env = {**os.environ, "JAXMIA_NO_DOWNLOAD": "1"}  # the session's compile cache (conftest)
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's laptop has
    env.update(env_extra or {})
    # --cpu-devices 1 (a later one in args wins): one device, whatever the load, so
    # that no "machine is busy" line joins the output the tests read.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxmia.run",
            "--no-progress",
            "--cpu-devices",
            "1",
            *map(str, args),
        ],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=600,
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


@pytest.mark.slow
def test_demo_config_end_to_end(tmp_path):
    out = tmp_path / "out"
    proc = jaxmia("--config", "configs/demo.yaml", "--output-dir", out, check_rc=0)
    run = out / "demo"
    for name in (
        "config.yaml",
        "results.json",
        "losses.npz",
        "single_point_mia_histograms.png",
        "roc.png",
        "target.png",
    ):
        assert (run / name).is_file(), name
    res = json.loads((run / "results.json").read_text())
    cfg = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    with np.load(run / "losses.npz") as z:
        assert bool(z["synthetic"])
        assert len(z["eval_member_losses"]) == cfg["eval_pairs"]
        assert z["member_logits"].shape == (cfg["n_iterations"], cfg["num_classes"])
        label = int(z["target_label"])
        device = z["member_losses"]
        # The loss score comes from the logits in float64 (the saved float32 losses are
        # what the device computed, kept beside them).
        member = -log_softmax(z["member_logits"].astype(np.float64), axis=1)[:, label]
        nonmember = -log_softmax(z["nonmember_logits"].astype(np.float64), axis=1)[:, label]
        # The device's float32 cross-entropy against float64 from the same logits:
        # absolute rounding of a few unit roundoffs of the logits' size.
        assert_close(device, member, 16 * F32_UNIT_ROUNDOFF, scale=np.abs(z["member_logits"]).max())
    assert member.shape == nonmember.shape == (cfg["n_iterations"],)
    # results.json agrees with the logits it came from.
    again = ref.summarize(member, nonmember, cfg["alpha"])
    for key in ("threshold", "power", "fpr", "auc", "member_loss_mean", "nonmember_loss_mean"):
        assert res[key] == pytest.approx(again[key], rel=1e-9), key
    assert res["power"] == pytest.approx(np.mean(member < res["threshold"]))
    assert res["fpr"] <= cfg["alpha"]
    assert res["synthetic"] is True and res["dataset"] == "synthetic"
    assert res["n_iterations"] == cfg["n_iterations"]
    assert len(res["evaluation"]["items"]) == 2 * cfg["eval_pairs"]
    for item in res["evaluation"]["items"]:
        assert item["predicted_member"] == (item["loss"] < res["threshold"])
        assert item["correct"] == (item["predicted_member"] == item["member"])
    # The attack works on the demo: members have clearly lower loss.
    assert res["auc"] > 0.8
    assert "SYNTHETIC" in proc.stdout
    assert f"{res['threshold']:.4f}" in proc.stdout


@pytest.mark.slow
def test_rerun_reuses_everything_and_changes_nothing(tmp_path):
    cfg = write_config(tmp_path)
    out = tmp_path / "out"
    jaxmia("--config", cfg, "--output-dir", out, check_rc=0)
    first = json.loads((out / "tiny/results.json").read_text())
    jaxmia("--config", cfg, "--output-dir", out, check_rc=0)
    second = json.loads((out / "tiny/results.json").read_text())
    assert second["models_trained"] == 0
    assert second["models_reused"] == 2 * (TINY["n_iterations"] + TINY["eval_pairs"])
    for key in ("threshold", "power", "auc", "member_loss_mean", "evaluation"):
        assert first[key] == second[key]


def assert_one_line_exit_2(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "changes, fragments",
    [
        ({"alpha": 2}, ["alpha must be strictly between 0 and 1"]),
        ({"n_iteratoins": 5}, ["unknown key 'n_iteratoins'", "'n_iterations'"]),
        ({"batch_size": "big"}, ["batch_size must be an integer in [1, 65,536]"]),
        ({"target_index": 50_000}, ["target_index must be in [0, 49999]"]),
        ({"subset_size": 50_000}, ["subset_size must be below"]),
    ],
)
def test_bad_config_values(tmp_path, changes, fragments):
    out = tmp_path / "out"
    proc = jaxmia("--config", write_config(tmp_path, **changes), "--output-dir", out)
    assert_one_line_exit_2(proc, *fragments)
    assert not out.exists()


@pytest.mark.slow
def test_bad_files_and_paths(tmp_path):
    out = tmp_path / "out"
    assert_one_line_exit_2(
        jaxmia("--config", tmp_path / "missing.yaml", "--output-dir", out), "config file not found"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("alpha: [0.1\nseed: 1\n")
    assert_one_line_exit_2(jaxmia("--config", bad, "--output-dir", out), "malformed YAML")
    assert not out.exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    assert_one_line_exit_2(
        jaxmia("--config", write_config(tmp_path), "--output-dir", a_file), "not a folder"
    )
    assert a_file.read_text() == "keep me"
    assert_one_line_exit_2(jaxmia("--config", write_config(tmp_path), "--seed", "x"), "--seed")
    assert_one_line_exit_2(jaxmia("--bogus"), "unrecognized arguments")


def test_missing_cifar_says_what_to_put_where(tmp_path):
    cfg = write_config(tmp_path, dataset="cifar100", num_classes=100)
    proc = jaxmia("--config", cfg, "--data-dir", tmp_path / "data", "--output-dir", tmp_path / "o")
    assert_one_line_exit_2(proc, "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage", ["wrong bytes", "truncated"])
def test_damaged_cifar_archive_is_refused(tmp_path, damage):
    # Any archive whose md5 is not the official one is refused before it is read
    # (a truncated download has the wrong md5 too).
    home = tmp_path / "data" / "cifar100"
    home.mkdir(parents=True)
    content = b"not an archive" * 1000 if damage == "wrong bytes" else b"\x1f\x8b\x08"
    (home / "cifar-100-python.tar.gz").write_bytes(content)
    cfg = write_config(tmp_path, dataset="cifar100", num_classes=100)
    proc = jaxmia("--config", cfg, "--data-dir", tmp_path / "data", "--output-dir", tmp_path / "o")
    assert_one_line_exit_2(proc, "checksum mismatch", "eb9058c3a382ffc7106e4002c42a8d85")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_bad_input_never_destroys_an_earlier_run(tmp_path):
    out = tmp_path / "out"
    jaxmia("--config", write_config(tmp_path), "--output-dir", out, check_rc=0)
    before = {p.name: p.read_bytes() for p in (out / "tiny").iterdir() if p.is_file()}
    # Same run name, different settings: refused, pointing at --fresh.
    other = write_config(tmp_path, lr=0.07)
    assert_one_line_exit_2(jaxmia("--config", other, "--output-dir", out), "--fresh")
    # Same run name, an impossible value: refused before anything is touched.
    broken = write_config(tmp_path, alpha=-1)
    assert_one_line_exit_2(jaxmia("--config", broken, "--output-dir", out), "alpha")
    after = {p.name: p.read_bytes() for p in (out / "tiny").iterdir() if p.is_file()}
    # .lock records the pid of the last process that held it; nothing else may change.
    before.pop(".lock"), after.pop(".lock")
    assert after == before


# --------------------------------------------------------------------------
# Issue 7's reproductions: nothing the user has is ever destroyed.


@pytest.mark.slow
def test_fresh_never_deletes_a_folder_jaxmia_did_not_make(tmp_path):
    out = tmp_path / "o"
    precious = out / "precious"
    precious.mkdir(parents=True)
    (precious / "thesis.tex").write_text("thesis")
    cfg = write_config(tmp_path)
    for extra in ([], ["--fresh"]):
        proc = jaxmia("--config", cfg, "--output-dir", out, "--run-name", "precious", *extra)
        assert_one_line_exit_2(proc, "is not a jaxmia run folder")
    assert [p.name for p in precious.iterdir()] == ["thesis.tex"]
    assert (precious / "thesis.tex").read_text() == "thesis"


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"seed": 2**32}, "seed must be an integer in [0, 4,294,967,295]"),
        ({"n_iterations": 1_000_000_000}, "n_iterations must be an integer in [1, 1,000,000]"),
        ({"batch_size": 100_000_000_000}, "batch_size must be an integer in [1, 65,536]"),
        ({"run_name": "a\x00b"}, "run_name must be a plain folder name"),
        ({"run_name": "n" * 300}, "run_name must be at most 255 bytes"),
        ({"batch_size": 64}, "batch_size must be at most subset_size + 1 = 25"),
    ],
)
@pytest.mark.slow
def test_fresh_with_an_impossible_value_touches_nothing(tmp_path, changes, fragment):
    out = tmp_path / "out"
    jaxmia("--config", write_config(tmp_path), "--output-dir", out, check_rc=0)
    before = snapshot(out)
    before.pop(Path("tiny/.lock"))
    bad = write_config(tmp_path, **changes)
    proc = jaxmia("--config", bad, "--output-dir", out, "--run-name", "tiny", "--fresh")
    assert_one_line_exit_2(proc, fragment)
    assert len(proc.stderr) < 300
    after = snapshot(out)
    after.pop(Path("tiny/.lock"), None)
    assert after == before


def test_an_over_long_output_path_is_one_line(tmp_path):
    deep = tmp_path.joinpath(*["d" * 250] * 20)
    proc = jaxmia("--config", write_config(tmp_path), "--output-dir", deep)
    assert_one_line_exit_2(proc, "keep --output-dir and --run-name within 3974 bytes")
    proc = jaxmia("--config", write_config(tmp_path), "--output-dir", tmp_path / ("n" * 300))
    assert_one_line_exit_2(proc, "over 255 bytes")


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_analyze_reproduces_results_and_tries_other_attacks(tmp_path):
    out = tmp_path / "out"
    jaxmia("--config", write_config(tmp_path), "--output-dir", out, check_rc=0)
    run = out / "tiny"
    before = (run / "results.json").read_bytes()
    env = {**os.environ}
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "-m", "jaxmia.analyze", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (run / "results.json").read_bytes() == before  # byte for byte
    proc = subprocess.run(cmd + ["--score", "lira", "--threshold-rule", "conformal"], env=env)
    assert proc.returncode == 0
    res = json.loads((run / "results.json").read_text())
    assert res["score"] == "lira" and res["threshold_rule"] == "conformal"
    bad = subprocess.run(cmd + ["--alpha", "3"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "alpha must be strictly between 0 and 1" in bad.stderr
    no_run = subprocess.run(
        [sys.executable, "-m", "jaxmia.run", "analyze", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert no_run.returncode == 2 and "not a jaxmia run folder" in no_run.stderr


@pytest.mark.slow
def test_cpu_devices_split_the_chunk_and_change_no_result(tmp_path):
    cfg = write_config(tmp_path)
    jaxmia("--config", cfg, "--output-dir", tmp_path / "one", check_rc=0)
    jaxmia("--config", cfg, "--output-dir", tmp_path / "two", "--cpu-devices", "2", check_rc=0)
    res = json.loads((tmp_path / "two" / "tiny" / "results.json").read_text())
    assert res["devices"] == ["cpu:0", "cpu:1"]
    with (
        np.load(tmp_path / "one/tiny/losses.npz") as a,
        np.load(tmp_path / "two/tiny/losses.npz") as b,
    ):
        # Single-threaded devices compile other programs than one multi-threaded
        # one: equal up to rounding (tests/test_experiment.py's LOSS_BOUND).
        for key in ("member_losses", "nonmember_losses", "eval_member_losses"):
            assert_close(b[key], a[key], 1e-4, scale=1.0, what=key)
        assert_close(b["member_logits"], a["member_logits"], 1e-4, what="member_logits")
    proc = jaxmia("--config", cfg, "--output-dir", tmp_path / "x", "--cpu-devices", "0")
    assert_one_line_exit_2(proc, "--cpu-devices must be in [1, 1024]")


def test_cpu_devices_auto_chooses_by_the_machine(monkeypatch):
    from jaxmia.errors import UserError
    from jaxmia.run import choose_cpu_devices

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    quiet = dict(cores=4, load=1.5, accelerator=False)
    assert choose_cpu_devices("auto", **quiet) == (4, None)  # one device per core
    devices, note = choose_cpu_devices("auto", **{**quiet, "load": 4.5})
    assert devices is None  # XLA's one device on every core
    assert note.startswith("jaxmia: the machine is busy (load average 4.5 on 4 cores)")
    assert "\n" not in note
    # A resumed run starts the devices its run.json records, whatever the load.
    assert choose_cpu_devices("auto", recorded=2, **{**quiet, "load": 9.0}) == (2, None)
    assert choose_cpu_devices("auto", **{**quiet, "cores": 1}) == (None, None)
    assert choose_cpu_devices("auto", **{**quiet, "accelerator": True}) == (None, None)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")
    assert choose_cpu_devices("auto", **quiet) == (None, None)  # the user's count stays
    # A number is taken as it is: 1 is XLA's own device, more are single-threaded.
    assert choose_cpu_devices(1, **quiet) == (None, None)
    assert choose_cpu_devices(3, **{**quiet, "load": 9.0}) == (3, None)
    with pytest.raises(UserError, match=r"--cpu-devices must be in \[1, 1024\], got 0"):
        choose_cpu_devices(0, **quiet)


def test_xla_workarounds_are_added_before_jax_starts_and_yield_to_the_user(monkeypatch):
    # jaxmia.run.XLA_WORKAROUNDS: flags set before JAX starts, unless XLA_FLAGS names them.
    code = (
        "import os, sys\n"
        "from jaxmia.run import use_xla_workarounds\n"
        "assert 'jax' not in sys.modules\n"
        "print(use_xla_workarounds())\n"
        "print(os.environ['XLA_FLAGS'])\n"
    )

    def run(flags):
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        if flags is not None:
            env["XLA_FLAGS"] = flags
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    flag = "--xla_gpu_enable_triton_gemm=false"
    assert run(None) == [f"['{flag}']", flag]
    assert run("--xla_cpu_max_isa=AVX2") == [f"['{flag}']", f"--xla_cpu_max_isa=AVX2 {flag}"]
    user = "--xla_gpu_enable_triton_gemm=true"
    assert run(user) == ["[]", user]  # the user's choice wins
    assert run("--xla_gpu_enable_triton_gemm") == ["[]", "--xla_gpu_enable_triton_gemm"]
    # A longer flag name that starts with it, or a path that holds it, is another flag.
    other = "--xla_gpu_enable_triton_gemm_int4=true --xla_dump_to=/tmp/xla_gpu_enable_triton_gemm"
    assert run(other) == [f"['{flag}']", f"{other} {flag}"]
    # Once JAX is imported (as here, in the test process) XLA has read its flags:
    # nothing is added, and XLA_FLAGS is left alone.
    from jaxmia.run import use_xla_workarounds

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")
    assert use_xla_workarounds() == []
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_max_isa=AVX2"


def test_cpu_devices_must_be_a_number_or_auto():
    proc = subprocess.run(
        [sys.executable, "-m", "jaxmia.run", "--cpu-devices", "many"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert_one_line_exit_2(proc, "argument --cpu-devices: expected auto or a number, got 'many'")


# ---------------------------------------------------------------- an unreachable coordinator


def _coordinator_args(tmp_path, timeout):
    # Only ever 127.0.0.1: port 1 has nobody listening, so process 1 waits for a
    # coordinator that never answers.
    return (
        "--config",
        write_config(tmp_path),
        "--output-dir",
        tmp_path / "out",
        "--coordinator",
        "127.0.0.1:1",
        "--num-processes",
        "2",
        "--process-id",
        "1",
        "--coordinator-timeout",
        str(timeout),
    )


def _jaxmia_lines(stderr: str) -> list[str]:
    # XLA's own runtime may log to stderr too; jaxmia's lines start with "jaxmia:".
    return [line for line in stderr.splitlines() if line.startswith("jaxmia:")]


@pytest.mark.slow
def test_an_unreachable_coordinator_says_what_it_waits_for_and_ends_with_one_line(tmp_path):
    proc = jaxmia(*_coordinator_args(tmp_path, 3))
    lines = _jaxmia_lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Check failure" not in proc.stderr
    assert len(lines) == 2, proc.stderr
    assert "waiting up to 3 s for the coordinator at 127.0.0.1:1" in lines[0]
    assert lines[1].startswith("jaxmia: error: no contact with the coordinator at 127.0.0.1:1")
    assert not (tmp_path / "out").exists()


def test_the_no_contact_line_asks_by_process_id():
    from jaxmia.run import _what_to_check

    assert _what_to_check(1, 2) == (
        "is process 0 running, and can this host reach that address and port?"
    )
    zero = _what_to_check(0, 4)
    assert zero.startswith("this is process 0, the coordinator: are processes 1 .. 3 running")
    assert "is process 0 running" not in zero
    assert "coordinator: is process 1 running with the same" in _what_to_check(0, 2)


@pytest.mark.slow
def test_ctrl_c_while_waiting_for_the_coordinator_stops_at_once(tmp_path):
    import signal
    import time

    env = {**os.environ, "JAXMIA_NO_DOWNLOAD": "1"}
    env.pop("XLA_FLAGS", None)
    # --cpu-devices 1: no "machine is busy" line before the waiting line.
    args = [sys.executable, "-m", "jaxmia.run", "--no-progress", "--cpu-devices", "1"]
    args += [str(a) for a in _coordinator_args(tmp_path, 300)]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()  # the waiting line, once JAX has started
        assert "waiting up to 300 s" in first, first
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 130, rest
    assert time.monotonic() - t0 < 10
    lines = _jaxmia_lines(rest)
    assert lines == [
        "jaxmia: interrupted while waiting for the coordinator at 127.0.0.1:1; nothing was written"
    ], rest


# ---------------------------------------------------------------- every model diverged


KIND_CHANGES = {
    "single_target": {},
    "targets": {
        "experiment": "targets",
        "n_targets": 4,
        "n_models": 4,
        "eval_models": 2,
        "target_index": None,
        "n_iterations": 100,
        "eval_pairs": 1,
    },
    "population": {
        "experiment": "population",
        "repetitions": 2,
        "target_index": None,
        "n_iterations": 100,
        "eval_pairs": 1,
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KIND_CHANGES))
def test_every_model_diverging_is_one_line_and_exit_2_in_every_kind(tmp_path, kind):
    # lr 1e6 under on_nonfinite: skip: every model diverges; many targets used to end in
    # KeyError: 'auc' after training, single target exited 1 and population 2.
    changes = {**KIND_CHANGES[kind], "lr": 1e6, "on_nonfinite": "skip", "save_plots": False}
    config = write_config(tmp_path, **{k: v for k, v in changes.items() if v is not None})
    if None in changes.values():  # keys the kind does not take: left out of the file
        raw = yaml.safe_load(config.read_text())
        for key, value in changes.items():
            if value is None:
                raw.pop(key, None)
        config.write_text(yaml.safe_dump(raw))
    proc = jaxmia("--config", config, "--output-dir", tmp_path / "out")
    # Besides the line per trained chunk (--no-progress), one line: the error.
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("jaxmia: chunk ")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("jaxmia: error: nothing to analyse: ")
    assert "lower lr" in lines[0]
