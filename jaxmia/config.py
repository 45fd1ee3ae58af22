"""The run configuration: YAML in, a validated and frozen ``Config`` out.

Every mistake a user can make here (unknown key, wrong type, impossible value,
unreadable file) raises ``UserError`` with one line that says what is allowed.
Checks that need the data set (subset_size and target_index against the size of
the training set) live in ``Config.check_against``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import yaml

from jaxmia.errors import UserError

DATASETS = ("cifar100", "cifar10", "synthetic")
CONV_CHOICES = ("auto", "xla", "im2col")
STRATEGY_CHOICES = ("auto", "vmap", "map")
DTYPE_CHOICES = ("float32", "bfloat16")
NONFINITE_CHOICES = ("stop", "skip")


@dataclasses.dataclass(frozen=True)
class Config:
    """One experiment.  Field names are the YAML keys."""

    # The PyTorch pipeline's keys.
    target_index: int | None = None
    num_classes: int = 100
    n_iterations: int = 100
    subset_size: int = 5000
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    alpha: float = 0.05
    save_plots: bool = True
    seed: int = 0
    # jaxmia's own keys.
    dataset: str = "cifar100"
    momentum: float = 0.9
    weight_decay: float = 0.0
    eval_pairs: int = 1
    models_per_chunk: int | str = "auto"
    test_samples: int | None = None
    conv: str = "auto"
    strategy: str = "auto"
    compute_dtype: str = "float32"
    on_nonfinite: str = "stop"
    run_name: str | None = None

    def __post_init__(self):
        _validate(self)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_against(self, n_train: int, n_test: int) -> None:
        """Checks that need the data set's size; raises UserError."""
        if self.subset_size >= n_train:
            raise UserError(
                f"subset_size must be below the training-set size minus the target "
                f"(at most {n_train - 1} for this data set), got {self.subset_size}"
            )
        if self.target_index is not None and self.target_index >= n_train:
            raise UserError(
                f"target_index must be in [0, {n_train - 1}] for this data set "
                f"(or null to draw it from the seed), got {self.target_index}"
            )
        if self.test_samples is not None and self.test_samples > n_test:
            raise UserError(
                f"test_samples must be at most the test-set size {n_test} "
                f"(or null for all of it), got {self.test_samples}"
            )

    def results_hash(self, data_fingerprint: str, version: str) -> str:
        """Hash of everything that decides the per-round losses.

        Left out on purpose: keys that only change how many rounds there are or
        how the work is split or reported (n_iterations, eval_pairs,
        models_per_chunk, strategy, alpha, save_plots, run_name, on_nonfinite),
        so that a run can grow or be re-split and still reuse its rounds.
        """
        ignored = {
            "n_iterations",
            "eval_pairs",
            "models_per_chunk",
            "strategy",
            "alpha",
            "save_plots",
            "run_name",
            "on_nonfinite",
        }
        keyed = {k: v for k, v in self.to_dict().items() if k not in ignored}
        keyed["data"] = data_fingerprint
        keyed["jaxmia_version"] = version
        blob = json.dumps(keyed, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


def _need_int(cfg, name, lo=None, allow_none=False):
    v = getattr(cfg, name)
    if v is None and allow_none:
        return
    what = f"an integer >= {lo}" if lo is not None else "an integer"
    if allow_none:
        what += " or null"
    if not _is_int(v):
        raise UserError(f"{name} must be {what}, got {v!r}")
    if lo is not None and v < lo:
        raise UserError(f"{name} must be {what}, got {v}")


def _need_choice(cfg, name, choices):
    v = getattr(cfg, name)
    if v not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}; got {v!r}")


def _validate(cfg: Config) -> None:
    _need_int(cfg, "target_index", 0, allow_none=True)
    _need_int(cfg, "num_classes", 2)
    _need_int(cfg, "n_iterations", 1)
    _need_int(cfg, "subset_size", 1)
    _need_int(cfg, "epochs", 1)
    _need_int(cfg, "batch_size", 1)
    _need_int(cfg, "seed", 0)
    _need_int(cfg, "eval_pairs", 0)
    _need_int(cfg, "test_samples", 1, allow_none=True)
    for name in ("lr", "alpha", "momentum", "weight_decay"):
        v = getattr(cfg, name)
        if not _is_number(v) or not math.isfinite(v):
            raise UserError(f"{name} must be a finite number, got {v!r}")
    if cfg.lr <= 0:
        raise UserError(f"lr must be > 0, got {cfg.lr}")
    if not 0 < cfg.alpha < 1:
        raise UserError(f"alpha must be strictly between 0 and 1, got {cfg.alpha}")
    if not 0 <= cfg.momentum < 1:
        raise UserError(f"momentum must be in [0, 1), got {cfg.momentum}")
    if cfg.weight_decay < 0:
        raise UserError(f"weight_decay must be >= 0, got {cfg.weight_decay}")
    if not isinstance(cfg.save_plots, bool):
        raise UserError(f"save_plots must be true or false, got {cfg.save_plots!r}")
    _need_choice(cfg, "dataset", DATASETS)
    _need_choice(cfg, "conv", CONV_CHOICES)
    _need_choice(cfg, "strategy", STRATEGY_CHOICES)
    _need_choice(cfg, "compute_dtype", DTYPE_CHOICES)
    _need_choice(cfg, "on_nonfinite", NONFINITE_CHOICES)
    mpc = cfg.models_per_chunk
    if mpc != "auto" and not (_is_int(mpc) and mpc >= 1):
        raise UserError(f"models_per_chunk must be 'auto' or an integer >= 1, got {mpc!r}")
    if cfg.dataset == "cifar100" and cfg.num_classes != 100:
        raise UserError(f"num_classes must be 100 for dataset cifar100, got {cfg.num_classes}")
    if cfg.dataset == "cifar10" and cfg.num_classes != 10:
        raise UserError(f"num_classes must be 10 for dataset cifar10, got {cfg.num_classes}")
    if cfg.run_name is not None:
        name = cfg.run_name
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise UserError(f"run_name must be a plain folder name, got {name!r}")


def config_from_dict(raw: Any, source: str = "config") -> Config:
    """Builds a Config from a parsed YAML mapping; unknown keys name the closest valid one."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of keys to values, got {type(raw).__name__}")
    for key in raw:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), list(FIELDS), n=1, cutoff=0.0)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{source}: unknown key {key!r}{hint}")
    values = dict(raw)
    # YAML reads 1e-3 as a string under YAML 1.1 rules; accept such numbers.
    for name in ("lr", "alpha", "momentum", "weight_decay"):
        v = values.get(name)
        if isinstance(v, str):
            try:
                values[name] = float(v)
            except ValueError:
                pass
    # An integer given where a float is expected is fine (lr: 1).
    for name in ("lr", "alpha", "momentum", "weight_decay"):
        if _is_int(values.get(name)):
            values[name] = float(values[name])
    try:
        return Config(**values)
    except UserError as e:
        raise UserError(f"{source}: {e}") from None


def load_config(path: str | Path, **overrides) -> Config:
    """Reads and validates a YAML config; ``overrides`` (e.g. seed) win over the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or "could not be parsed"
        raise UserError(f"{path}: malformed YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read config: {e}") from None
    if isinstance(raw, dict):
        raw = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    cfg = config_from_dict(raw, source=str(path))
    if cfg.run_name is None:
        cfg = cfg.replace(run_name=path.stem)
    return cfg
