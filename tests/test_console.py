"""Tests for jaxmia.fileio (atomic writes, JSON and npz round trips) and the console summaries."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from scipy import stats as sps

from jaxmia import fileio
from jaxmia.attack import metrics, summary
from jaxmia.attack.thresholds import GaussianFit
from jaxmia.kinds import format_summary

import reference_stats as ref


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = tmp_path / "a.txt"
    assert fileio.atomic_write_text(p, "hello") == p
    fileio.atomic_write_bytes(p, b"again")
    assert p.read_bytes() == b"again"
    assert [q.name for q in tmp_path.iterdir()] == ["a.txt"]
    # The result gets ordinary permissions, not tempfile's 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_replace_keeps_previous_file(tmp_path, monkeypatch):
    p = tmp_path / "results.json"
    fileio.write_json(p, {"v": 1})

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space") as info:
        fileio.write_json(p, {"v": 2})
    assert info.value.errno == 28
    assert json.loads(p.read_text()) == {"v": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["results.json"]


def test_failed_write_midway_keeps_previous_file(tmp_path, monkeypatch):
    p = tmp_path / "losses.npz"
    fileio.write_npz(p, a=np.arange(3))

    def fail(fd):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="Permission denied"):
        fileio.write_npz(p, a=np.arange(5))
    with np.load(p) as f:
        assert f["a"].tolist() == [0, 1, 2]
    assert [q.name for q in tmp_path.iterdir()] == ["losses.npz"]


def test_missing_folder_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        fileio.atomic_write_text(tmp_path / "missing" / "x.txt", "x")


def test_json_round_trip_with_numpy_types(tmp_path):
    obj = {
        "f32": np.float32(0.5),
        "i64": np.int64(7),
        "b": np.bool_(True),
        "arr": np.array([[1.0, 2.0], [3.0, np.nan]]),
        "tuple": (1, 2),
        "fit": GaussianFit(1.0, 2.0),
        "nan": float("nan"),
        "inf": np.inf,
        "ninf": -np.inf,
        "none": None,
        "s": "cattle",
    }
    p = fileio.write_json(tmp_path / "r.json", obj)
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert list(back) == list(obj)  # insertion order kept
    assert back["f32"] == 0.5 and back["i64"] == 7 and back["b"] is True
    assert back["arr"] == [[1.0, 2.0], [3.0, None]]
    assert back["tuple"] == [1, 2]
    assert back["fit"] == {"mean": 1.0, "std": 2.0}
    assert back["nan"] is None and back["inf"] is None and back["ninf"] is None
    assert back["s"] == "cattle"
    assert text.startswith('{\n  "f32"')  # indent=2
    with pytest.raises(TypeError):
        fileio.write_json(tmp_path / "bad.json", {"x": object()})


def test_npz_round_trip(tmp_path):
    arrays = {
        "member_losses": np.array([0.1, 0.2], np.float32),
        "synthetic": np.array(True),
        "acc": np.ones((2, 2)),
    }
    p = fileio.write_npz(tmp_path / "l.npz", **arrays)
    with np.load(p) as f:
        assert set(f.files) == set(arrays)
        for k, v in arrays.items():
            np.testing.assert_array_equal(f[k], v)
            assert f[k].dtype == v.dtype


def _results(**overrides):
    ev = ref.evaluate_predictions(
        np.array([True, False, True, False]), np.array([0.05, 3.5, 0.2, 0.1]), 1.2345
    )
    r = {
        "dataset": "cifar100",
        "synthetic": False,
        "target_index": 123,
        "target_label": "cattle",
        "n_iterations": 64,
        "subset_size": 500,
        "epochs": 10,
        "alpha": 0.05,
        "threshold": 1.2345,
        "power": 0.83,
        "fpr": 0.046875,
        "gaussian_threshold": 1.1,
        "gaussian_power": 0.8,
        "auc": 0.91,
        "member_loss_mean": 0.3,
        "member_loss_std": 0.25,
        "nonmember_loss_mean": 3.2,
        "nonmember_loss_std": 1.1,
        "evaluation": ev,
        "train_accuracy": 0.99,
        "test_accuracy": 0.2,
        "compile_seconds": 12.34,
        "train_seconds": 56.7,
        "models_per_second": 2.26,
    }
    r.update(overrides)
    return r


def test_format_summary():
    text = format_summary(_results())
    lines = text.splitlines()
    assert "SYNTHETIC" not in text
    assert "Target index: 123 (cattle)" in lines
    assert "Threshold (FPR <= 0.05): 1.2345" in lines
    assert "Power (TPR): 0.8300" in lines
    assert "Empirical FPR: 0.0469" in lines
    assert "Mean loss member: 0.3000 ± 0.2500" in lines
    assert "Mean loss non-member: 3.2000 ± 1.1000" in lines
    assert "Gaussian threshold: 1.1000" in lines
    assert "Gaussian power: 0.8000" in lines
    assert "AUC: 0.9100" in lines
    items = [ln for ln in lines if "loss=" in ln]
    assert len(items) == 4
    assert items[0].strip().startswith("x in train:")
    assert "loss=0.0500  predicted member=True  correct=True" in items[0]
    assert items[3].strip().startswith("x not in train:")
    assert "loss=0.1000  predicted member=True  correct=False" in items[3]
    assert "  TPR: 1.0000 (2/2)  95% CI [0.1581, 1.0000]" in lines
    lo, hi = metrics.clopper_pearson(1, 2)
    assert f"  FPR: 0.5000 (1/2)  95% CI [{lo:.4f}, {hi:.4f}]" in lines
    assert "  Accuracy: 0.7500" in lines
    assert "Time: compile 12.3 s, training 56.7 s, 2.26 models/s" in lines


def test_format_summary_synthetic_and_missing_keys():
    text = format_summary(_results(synthetic=True))
    assert text.splitlines()[0].startswith("[SYNTHETIC DATA]")
    minimal = format_summary({"synthetic": True, "threshold": 2.0, "evaluation": None})
    assert minimal.splitlines()[0].startswith("[SYNTHETIC DATA]")
    assert "Threshold: 2.0000" in minimal
    r = _results()
    for key in ("models_per_second", "compile_seconds", "gaussian_power", "alpha", "target_label"):
        del r[key]
    text = format_summary(r)
    assert "Target index: 123" in text and "models/s" not in text
    assert format_summary({}) == ""
    # An undecided (NaN) evaluation item prints without crashing.
    ev = ref.evaluate_predictions(np.array([True, False]), [math.nan, 2.0], 1.0)
    assert "predicted member=None" in format_summary({"evaluation": ev})


# ---------------------------------------------------------------- issue 8: the attack's summary


def test_format_summary_of_attack_summary():
    mem = np.linspace(0.01, 0.5, 100)
    non = np.linspace(1.0, 5.0, 100)
    res = summary.summarize(
        mem,
        non,
        eval_member=np.array([0.1, 2.0]),
        eval_nonmember=np.array([3.0, 0.2]),
        alpha=0.05,
        rule="conformal",
    )
    text = format_summary({"target_index": 5, "alpha": 0.05, **res})
    lines = text.splitlines()
    t = res["threshold"]
    assert "Score: loss, threshold rule: conformal" in lines
    assert f"Decision: member iff loss < {t:.6g}" in lines
    assert f"Threshold (FPR <= 0.05): {t:.4f}" in lines
    assert "Power (TPR) on 100 IN / 100 OUT calibration models: 1.0000" in lines
    assert f"Calibration FPR: {res['calibration_fpr']:.4f} (k = 4 allowed)" in lines
    upper = sps.beta.ppf(0.95, 5, 96)  # floor(0.05 * 101) - 1 = 4
    assert f"Expected FPR on fresh models: {5 / 101:.4f} (95% upper bound {upper:.4f})" in lines
    assert "AUC: 1.0000" in lines and "Balanced accuracy: 1.0000" in lines
    assert "TPR at FPR 0.1%: n/a, 1%: 1.0000, 10%: 1.0000" in lines
    assert f"Mean loss member: {mem.mean():.4f} ± {mem.std(ddof=1):.4f}" in lines
    assert "  TPR: 0.5000 (1/2)  95% CI" in text and "  FPR: 0.5000 (1/2)" in text
    eps = res["epsilon_lower_bound"]
    assert eps["value"] == 0.0  # 2 pairs with one error each prove nothing
    assert lines.count("Warnings (1):") == 1
    assert (
        "  ! TPR at FPR 0.001 not resolvable: needs l >= 1000 non-member models, have 100" in lines
    )
    assert text.index("Epsilon lower bound (95% confidence, delta 0): 0.0000") < text.index(
        "Warnings"
    )


def test_format_summary_says_what_cannot_be_resolved():
    res = summary.summarize([0.1], [2.0], alpha=0.05, rule="conformal", score="loss")
    text = format_summary(res)
    assert "Threshold (FPR <= 0.05): none (see the warnings)" in text
    assert "Decision: never member" in text
    assert "Epsilon lower bound (95% confidence, delta 0): n/a (needs evaluation models)" in text
    assert "raise n_iterations" in text and "conformal: l=1" in text
    assert "TPR at FPR 0.1%: n/a, 1%: n/a, 10%: n/a" in text
    # The lira rule's threshold is on the log likelihood ratio, and its items show phi.
    rng = np.random.default_rng(0)
    res = summary.summarize(
        rng.normal(3, 1, 50),
        rng.normal(0, 1, 50),
        eval_member=[2.5],
        eval_nonmember=[-1.0],
        alpha=0.1,
        rule="lira",
        score="lira",
    )
    text = format_summary(res)
    assert "on the log likelihood ratio scale" in text
    assert "Mean lira member:" in text
    assert "lira=2.5000  predicted member=True  correct=True" in text
