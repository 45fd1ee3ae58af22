"""Config loading and validation: every mistake is one UserError line that says what is allowed."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from jaxmia.config import (
    FIELDS,
    RULE_CHOICES,
    SCORE_CHOICES,
    Config,
    config_from_dict,
    load_config,
)
from jaxmia.errors import UserError
from jaxmia.models import MODELS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PIPELINE_KEYS = [
    "target_index",
    "num_classes",
    "n_iterations",
    "subset_size",
    "epochs",
    "batch_size",
    "lr",
    "alpha",
    "save_plots",
    "seed",
]


def test_pipeline_keys_and_own_keys_exist():
    own = ["dataset", "momentum", "weight_decay", "eval_pairs", "models_per_chunk"]
    assert set(PIPELINE_KEYS + own) <= set(FIELDS)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.run_name == path.stem
    raw = path.read_text()
    keys = {
        "single_target": PIPELINE_KEYS,
        "targets": ["n_models", "inclusion", "eval_models", "subset_size", "epochs", "alpha"],
        "population": ["repetitions", "subset_size", "epochs", "alpha"],
    }[cfg.experiment]
    for key in keys:
        assert f"{key}:" in raw, f"{path.name} should spell out {key}"


def test_seed_override_and_float_parsing(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("dataset: synthetic\nnum_classes: 10\nlr: 1e-3\nseed: 4\n")
    cfg = load_config(p, seed=9)
    assert cfg.seed == 9 and cfg.lr == pytest.approx(0.001)
    assert load_config(p).seed == 4


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"n_iteration": 3}, "unknown key 'n_iteration'; did you mean 'n_iterations'?"),
        ({"alpah": 0.1}, "did you mean 'alpha'?"),
        ({"alpha": 1.5}, "alpha must be strictly between 0 and 1"),
        ({"alpha": 0}, "alpha must be strictly between 0 and 1"),
        ({"batch_size": 0}, "batch_size must be an integer in [1, 65,536]"),
        ({"batch_size": 2.5}, "batch_size must be an integer in [1, 65,536]"),
        ({"epochs": True}, "epochs must be an integer in [1, 10,000]"),
        ({"subset_size": "many"}, "subset_size must be an integer in [1, "),
        ({"target_index": -1}, "target_index must be an integer in [0, 2,147,483,647] or null"),
        ({"lr": -0.1}, "lr must be > 0"),
        ({"lr": "fast"}, "lr must be a finite number"),
        ({"momentum": 1.0}, "momentum must be in [0, 1)"),
        ({"weight_decay": -1e-4}, "weight_decay must be >= 0"),
        ({"save_plots": "yes"}, "save_plots must be true or false"),
        ({"dataset": "imagenet"}, "dataset must be one of cifar100, cifar10, synthetic"),
        ({"models_per_chunk": 0}, "models_per_chunk must be 'auto' or an integer in [1, 65,536]"),
        ({"models_per_chunk": "max"}, "models_per_chunk must be 'auto' or an integer in [1,"),
        ({"num_classes": 10}, "num_classes must be 100 for dataset cifar100"),
        ({"dataset": "cifar10"}, "num_classes must be 10 for dataset cifar10"),
        ({"eval_pairs": -1}, "eval_pairs must be an integer in [0, 1,000,000]"),
        ({"run_name": "a/b"}, "run_name must be a plain folder name"),
        ({"on_nonfinite": "ignore"}, "on_nonfinite must be one of stop, skip"),
        # Upper bounds: each of these passed validation once and then failed
        # after the run folder was written.
        ({"seed": 2**32}, "seed must be an integer in [0, 4,294,967,295], got 4294967296"),
        ({"n_iterations": 10**9}, "n_iterations must be an integer in [1, 1,000,000]"),
        ({"batch_size": 10**11}, "batch_size must be an integer in [1, 65,536]"),
        ({"run_name": "a\x00b"}, "run_name must be a plain folder name"),
        ({"run_name": "x" * 300}, "run_name must be at most 255 bytes"),
        ({"run_name": "a\\b"}, "run_name must be a plain folder name"),
        ({"data_source": "web"}, "data_source must be one of auto, archive, tfds"),
        ({"model": "resnet"}, "model must be one of cnn, wrn28_2, resnet9; got 'resnet'"),
        ({"score": "prob"}, "score must be one of loss, lira, hinge"),
        ({"threshold_rule": "best"}, "threshold_rule must be one of empirical, conformal"),
        ({"delta": 1.0}, "delta must be in [0, 1)"),
        ({"confidence": 0.2}, "confidence must be in [0.5, 1)"),
        ({"seed": "x" * 10_000}, "got 'xxxxxxxx"),
    ],
)
def test_bad_values_are_one_clear_line(raw, expected):
    with pytest.raises(UserError) as err:
        config_from_dict(raw)
    msg = str(err.value)
    assert expected in msg
    assert "\n" not in msg
    assert len(msg) < 240  # a value is quoted in at most ~80 characters


def test_checks_against_the_data_set():
    cfg = Config(dataset="synthetic", num_classes=10, subset_size=99, target_index=5)
    cfg.check_against(n_train=100, n_test=10)
    with pytest.raises(UserError, match=r"subset_size must be below .*at most 99"):
        cfg.replace(subset_size=100).check_against(n_train=100, n_test=10)
    with pytest.raises(UserError, match=r"target_index must be in \[0, 99\]"):
        cfg.replace(target_index=100).check_against(n_train=100, n_test=10)
    with pytest.raises(UserError, match="test_samples must be at most"):
        cfg.replace(test_samples=11).check_against(n_train=100, n_test=10)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("alpha: [0.1\n", "malformed YAML (line 2"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("alpha: 0.1\nalpha: : x\n", "malformed YAML"),
    ],
)
def test_malformed_files(tmp_path, text, expected):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(UserError, match=expected.replace("(", r"\(")):
        load_config(p)


def test_alias_bomb_is_one_short_line_at_once(tmp_path):
    # 9 levels of 9 aliases: a value of 9**9 strings if it were ever expanded.
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    body = "\n".join("  " + line for line in lines)
    p = tmp_path / "bomb.yaml"
    p.write_text(f"seed:\n{body}\n")
    assert p.stat().st_size < 700
    with pytest.raises(UserError) as err:
        load_config(p)
    msg = str(err.value)
    assert "seed must be an integer" in msg and len(msg) < 240


@pytest.mark.parametrize(
    "text, expected",
    [
        ("seed: 1\nalpha: 0.1\nseed: 2\n", "duplicate key 'seed' (line 3)"),
        ("", "the config is empty"),
        ("# nothing but a comment\n\n", "the config is empty"),
    ],
)
def test_duplicate_keys_and_empty_files_are_refused(tmp_path, text, expected):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(UserError) as err:
        load_config(p)
    assert expected in str(err.value)


def test_batch_larger_than_the_subset_is_refused():
    cfg = Config(dataset="synthetic", num_classes=10, subset_size=99, batch_size=101)
    with pytest.raises(UserError, match=r"batch_size must be at most subset_size \+ 1 = 100"):
        cfg.check_against(n_train=1000, n_test=10)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"experiment": "targets"}, "needs exactly one of targets (a list) or n_targets"),
        ({"experiment": "targets", "targets": [1], "n_targets": 3}, "needs exactly one"),
        ({"experiment": "targets", "targets": [1, 1]}, "targets must not repeat an index"),
        ({"experiment": "targets", "targets": [-1]}, "targets must be a non-empty list"),
        ({"experiment": "targets", "n_targets": 4, "n_models": 5}, "n_models must be a multiple"),
        ({"experiment": "targets", "n_targets": 4, "inclusion": 0.3141}, "a fraction a/b"),
        ({"experiment": "swarm"}, "experiment must be one of single_target, targets, population"),
        ({"repetitions": 0}, "repetitions must be an integer in [1, 1,000,000]"),
    ],
)
def test_experiment_kinds_are_checked(raw, expected):
    with pytest.raises(UserError) as err:
        config_from_dict({"dataset": "synthetic", "num_classes": 10, **raw})
    assert expected in str(err.value)


def test_kinds_are_checked_against_the_data_set():
    cfg = Config(
        dataset="synthetic", num_classes=10, experiment="population", subset_size=60, batch_size=16
    )
    cfg.check_against(n_train=120, n_test=10)
    with pytest.raises(UserError, match="at most half the training set"):
        cfg.check_against(n_train=119, n_test=10)
    many = Config(
        dataset="synthetic", num_classes=10, experiment="targets", targets=[5, 200], batch_size=8
    )
    with pytest.raises(UserError, match=r"targets must be training-set indices in \[0, 99\]"):
        many.replace(subset_size=10).check_against(n_train=100, n_test=10)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_results_hash_ignores_only_what_cannot_change_a_round():
    base = Config(dataset="synthetic", num_classes=10)
    h = base.results_hash("data", "v")
    for same in (
        {"n_iterations": 7},
        {"eval_pairs": 9},
        {"models_per_chunk": 4},
        {"alpha": 0.2},
        {"save_plots": False},
    ):
        assert base.replace(**same).results_hash("data", "v") == h, same
    for same in ({"score": "lira"}, {"threshold_rule": "conformal"}, {"conv": "xla"}):
        assert base.replace(**same).results_hash("data", "v") == h, same
    for other in ({"seed": 1}, {"lr": 0.5}, {"subset_size": 10}, {"epochs": 2}):
        assert base.replace(**other).results_hash("data", "v") != h, other
    assert base.results_hash("other data", "v") != h
    assert base.results_hash("data", "v2") != h


def test_reading_a_config_does_not_import_scipy():
    # The config needs only the names of the scores and rules; scipy.stats alone takes
    # about 2 s to import on a cold cache, which every command would pay up front.
    code = "import sys, jaxmia.config; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
    assert SCORE_CHOICES == ("loss", "lira", "hinge")
    assert RULE_CHOICES == ("empirical", "conformal", "confident", "gaussian", "lira")


def test_model_key_defaults_to_the_cnn_and_enters_the_hash(monkeypatch):
    # A run.json written before the key existed (jaxmia 0.2) has no model: it is the CNN.
    assert config_from_dict({"dataset": "synthetic", "num_classes": 10}).model == "cnn"
    other = dataclasses.replace(MODELS["cnn"], name="other")
    monkeypatch.setitem(MODELS, "other", other)
    base = Config(dataset="synthetic", num_classes=10)
    assert "model" in base.hashed_keys()
    changed = base.replace(model="other")
    assert changed.results_hash("data", "v") != base.results_hash("data", "v")


def test_every_kind_ships_an_offline_demo_config():
    # A newcomer without the data (or network) can try every kind: a synthetic config each.
    from jaxmia import kinds

    offline = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config(path)
        if cfg.dataset == "synthetic":
            offline.setdefault(cfg.experiment, []).append(path.name)
    assert set(offline) == set(kinds.names()), offline
    assert "population_demo.yaml" in offline["population"]


@pytest.mark.parametrize(
    "path", ["demo.yaml", "targets_demo.yaml", "population_demo.yaml", "dp_audit_demo.yaml"]
)
def test_a_run_folders_config_lists_its_own_kinds_keys_and_loads_back(path, tmp_path):
    # config.yaml (Config.own_dict) lists the common keys and the run's kind's keys,
    # none of another kind's, and reads back into the same Config.
    import yaml

    from jaxmia.config import COMMON_KEYS

    cfg = load_config(CONFIGS / path)
    own = cfg.own_dict()
    expected = [k.name for k in COMMON_KEYS + cfg.kind.keys]
    assert sorted(own) == sorted(expected)
    others = {k.name for k in Config.__dataclass_fields__.values()} - set(expected)
    assert others and not others & set(own)  # the other kinds' keys exist, and are left out
    back = tmp_path / "config.yaml"
    back.write_text(yaml.safe_dump(own, sort_keys=False))
    assert load_config(back) == cfg
