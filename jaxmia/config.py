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

from jaxmia.errors import UserError, show
from jaxmia.models import MODELS
from jaxmia.scores import SCORES as SCORE_CHOICES
from jaxmia.stats import THRESHOLD_RULES as RULE_CHOICES

EXPERIMENTS = ("single_target", "targets", "population")
DATASETS = ("cifar100", "cifar10", "synthetic")
DATA_SOURCES = ("auto", "archive", "tfds")
CONV_CHOICES = ("auto", "xla", "im2col", "winograd")
STRATEGY_CHOICES = ("auto", "vmap", "map")
DTYPE_CHOICES = ("float32", "bfloat16")
NONFINITE_CHOICES = ("stop", "skip")

# Upper bounds that keep a typo from turning into hours of planning or a
# memory error after the run folder was written.  Rounds and pairs: a million
# models is more than any accelerator trains in a day.  Seeds: the device
# derives its keys from a uint32 seed.  Batch: more than any data set here.
MAX_SEED = 2**32 - 1
MAX_ROUNDS = 1_000_000
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_MODELS_PER_CHUNK = 65_536
MAX_CLASSES = 1000
MAX_CONFIG_BYTES = 1_000_000
NAME_MAX_BYTES = 255  # one path component on Linux, macOS and Windows filesystems


@dataclasses.dataclass(frozen=True)
class Config:
    """One experiment.  Field names are the YAML keys."""

    # Which experiment: one target x (the pipeline's single-point attack), many
    # targets scored by one set of models, or the population attack.
    experiment: str = "single_target"
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
    # The attack's statistics (recomputable from a finished run: jaxmia analyze).
    score: str = "loss"
    threshold_rule: str = "empirical"
    delta: float = 0.0
    confidence: float = 0.95
    # experiment: targets
    targets: list[int] | None = None  # training-set indices; or n_targets drawn from seed
    n_targets: int | None = None
    n_models: int = 64  # models whose memberships build the per-target distributions
    inclusion: float = 0.5  # each target's share of models trained on it (a/b, b <= 64)
    eval_models: int = 0  # fresh models with the same membership law
    # experiment: population
    repetitions: int = 1  # target models, each trained on subset_size members
    # jaxmia's own keys.
    dataset: str = "cifar100"
    data_source: str = "auto"
    model: str = "cnn"  # a name in jaxmia.models.MODELS
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
        if self.experiment == "targets":
            t = len(self.targets) if self.targets is not None else self.n_targets
            if self.subset_size + t > n_train:
                raise UserError(
                    f"subset_size + the number of targets must be at most the training-set "
                    f"size {n_train}, got {self.subset_size} + {t}"
                )
            if self.targets is not None and max(self.targets) >= n_train:
                raise UserError(
                    f"targets must be training-set indices in [0, {n_train - 1}], "
                    f"got {max(self.targets)}"
                )
        if self.experiment == "population" and 2 * self.subset_size > n_train:
            raise UserError(
                f"subset_size must be at most half the training set ({n_train // 2}) for the "
                f"population attack (members plus as many non-members), got {self.subset_size}"
            )
        if self.batch_size > self.subset_size + 1:
            raise UserError(
                f"batch_size must be at most subset_size + 1 = {self.subset_size + 1} "
                f"(one batch already holds every training point), got {self.batch_size}"
            )
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

    def hashed_keys(self) -> list[str]:
        """The config keys that decide the per-model results (and so the run hash).

        Left out on purpose: keys that only change how many models there are,
        where the data comes from, or how the work is split or reported, so that
        a run can grow or be re-split and still reuse its models.  How the
        numbers are computed (conv, strategy, ...) is checked separately, with
        the values they resolve to (store.py).
        """
        ignored = {
            "n_targets",  # the drawn targets are recorded in targets
            "n_models",
            "eval_models",
            "repetitions",
            "data_source",  # the same images from any source: the fingerprint decides
            "n_iterations",
            "eval_pairs",
            "models_per_chunk",
            "strategy",
            "conv",
            "alpha",
            "score",
            "threshold_rule",
            "delta",
            "confidence",
            "save_plots",
            "run_name",
            "on_nonfinite",
        }
        return [k for k in self.to_dict() if k not in ignored]

    def results_hash(self, data_fingerprint: str, version: str) -> str:
        """Hash of the hashed keys' values, the data's fingerprint and jaxmia's version."""
        d = self.to_dict()
        keyed = {k: d[k] for k in self.hashed_keys()}
        keyed["data"] = data_fingerprint
        keyed["jaxmia_version"] = version
        blob = json.dumps(keyed, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
FLOAT_KEYS = ("lr", "alpha", "momentum", "weight_decay", "delta", "confidence", "inclusion")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


def _need_int(cfg, name, lo=None, allow_none=False, hi=None):
    v = getattr(cfg, name)
    if v is None and allow_none:
        return
    what = f"an integer >= {lo}" if lo is not None else "an integer"
    if hi is not None:
        what = f"an integer in [{lo}, {hi:,}]"
    if allow_none:
        what += " or null"
    if not _is_int(v):
        raise UserError(f"{name} must be {what}, got {show(v)}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise UserError(f"{name} must be {what}, got {show(v)}")


def _need_choice(cfg, name, choices):
    v = getattr(cfg, name)
    if not isinstance(v, str) or v not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}; got {show(v)}")


def check_run_name(name) -> None:
    """A run name is one plain folder name: no separators, NUL or control characters."""
    ok = isinstance(name, str) and name not in ("", ".", "..")
    if ok:
        ok = not any(c in name for c in "/\\") and all(c.isprintable() for c in name)
    if not ok:
        raise UserError(
            f"run_name must be a plain folder name (no '/', '\\', NUL or control "
            f"characters), got {show(name)}"
        )
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES:
        raise UserError(
            f"run_name must be at most {NAME_MAX_BYTES} bytes (the file system's limit for "
            f"one folder name), got {len(name.encode('utf-8', 'surrogateescape'))}"
        )


def _validate(cfg: Config) -> None:
    # Upper bounds of subset_size, target_index and test_samples come from the
    # data set (check_against); the bounds here keep them from overflowing first.
    _need_int(cfg, "target_index", 0, allow_none=True, hi=2**31 - 1)
    _need_int(cfg, "num_classes", 2, hi=MAX_CLASSES)
    _need_int(cfg, "n_iterations", 1, hi=MAX_ROUNDS)
    _need_int(cfg, "subset_size", 1, hi=2**31 - 1)
    _need_int(cfg, "epochs", 1, hi=MAX_EPOCHS)
    _need_int(cfg, "batch_size", 1, hi=MAX_BATCH)
    _need_int(cfg, "seed", 0, hi=MAX_SEED)
    _need_int(cfg, "eval_pairs", 0, hi=MAX_ROUNDS)
    _need_int(cfg, "test_samples", 1, allow_none=True, hi=2**31 - 1)
    for name in FLOAT_KEYS:
        v = getattr(cfg, name)
        if not _is_number(v) or not math.isfinite(v):
            raise UserError(f"{name} must be a finite number, got {show(v)}")
    if cfg.lr <= 0:
        raise UserError(f"lr must be > 0, got {cfg.lr}")
    if not 0 < cfg.alpha < 1:
        raise UserError(f"alpha must be strictly between 0 and 1, got {cfg.alpha}")
    if not 0 <= cfg.delta < 1:
        raise UserError(f"delta must be in [0, 1), got {cfg.delta}")
    if not 0.5 <= cfg.confidence < 1:
        raise UserError(f"confidence must be in [0.5, 1), got {cfg.confidence}")
    _need_choice(cfg, "score", SCORE_CHOICES)
    _need_choice(cfg, "threshold_rule", RULE_CHOICES)
    if not 0 <= cfg.momentum < 1:
        raise UserError(f"momentum must be in [0, 1), got {cfg.momentum}")
    if cfg.weight_decay < 0:
        raise UserError(f"weight_decay must be >= 0, got {cfg.weight_decay}")
    if not isinstance(cfg.save_plots, bool):
        raise UserError(f"save_plots must be true or false, got {show(cfg.save_plots)}")
    _need_choice(cfg, "experiment", EXPERIMENTS)
    _need_int(cfg, "n_targets", 1, allow_none=True, hi=100_000)
    _need_int(cfg, "n_models", 2, hi=MAX_ROUNDS)
    _need_int(cfg, "eval_models", 0, hi=MAX_ROUNDS)
    _need_int(cfg, "repetitions", 1, hi=MAX_ROUNDS)
    if cfg.targets is not None:
        t = cfg.targets
        if not isinstance(t, list) or not t or not all(_is_int(i) and i >= 0 for i in t):
            raise UserError(
                f"targets must be a non-empty list of training-set indices, got {show(t)}"
            )
        if len(set(t)) != len(t):
            raise UserError("targets must not repeat an index")
        if len(t) > 100_000:
            raise UserError(f"targets holds at most 100,000 indices, got {len(t):,}")
    if cfg.experiment == "targets":
        if (cfg.targets is None) == (cfg.n_targets is None):
            raise UserError("experiment targets needs exactly one of targets (a list) or n_targets")
        if not 0 < cfg.inclusion < 1:
            raise UserError(f"inclusion must be strictly between 0 and 1, got {cfg.inclusion}")
        from jaxmia.plan import inclusion_block

        try:
            _, b = inclusion_block(cfg.inclusion)
        except ValueError:
            raise UserError(
                f"inclusion must be a fraction a/b with b <= 64 (0.5, 0.25, ...), got "
                f"{cfg.inclusion}"
            ) from None
        for name in ("n_models", "eval_models"):
            if getattr(cfg, name) % b:
                raise UserError(
                    f"{name} must be a multiple of {b} for inclusion {cfg.inclusion} (so that "
                    f"every target is in exactly the same number of models), got "
                    f"{getattr(cfg, name)}"
                )
    _need_choice(cfg, "dataset", DATASETS)
    _need_choice(cfg, "data_source", DATA_SOURCES)
    _need_choice(cfg, "model", tuple(MODELS))
    _need_choice(cfg, "conv", CONV_CHOICES)
    _need_choice(cfg, "strategy", STRATEGY_CHOICES)
    _need_choice(cfg, "compute_dtype", DTYPE_CHOICES)
    _need_choice(cfg, "on_nonfinite", NONFINITE_CHOICES)
    mpc = cfg.models_per_chunk
    if mpc != "auto" and not (_is_int(mpc) and 1 <= mpc <= MAX_MODELS_PER_CHUNK):
        raise UserError(
            f"models_per_chunk must be 'auto' or an integer in [1, {MAX_MODELS_PER_CHUNK:,}], "
            f"got {show(mpc)}"
        )
    if cfg.dataset == "cifar100" and cfg.num_classes != 100:
        raise UserError(f"num_classes must be 100 for dataset cifar100, got {cfg.num_classes}")
    if cfg.dataset == "cifar10" and cfg.num_classes != 10:
        raise UserError(f"num_classes must be 10 for dataset cifar10, got {cfg.num_classes}")
    if cfg.run_name is not None:
        check_run_name(cfg.run_name)


def config_from_dict(raw: Any, source: str = "config") -> Config:
    """Builds a Config from a parsed YAML mapping; unknown keys name the closest valid one."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of keys to values, got {type(raw).__name__}")
    for key in raw:
        if not isinstance(key, str) or key not in FIELDS:
            close = difflib.get_close_matches(show(key), list(FIELDS), n=1, cutoff=0.0)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{source}: unknown key {show(key)}{hint}")
    values = dict(raw)
    # YAML reads 1e-3 as a string under YAML 1.1 rules; accept such numbers.
    for name in FLOAT_KEYS:
        v = values.get(name)
        if isinstance(v, str):
            try:
                values[name] = float(v)
            except ValueError:
                pass
    # An integer given where a float is expected is fine (lr: 1).
    for name in FLOAT_KEYS:
        if _is_int(values.get(name)):
            values[name] = float(values[name])
    try:
        return Config(**values)
    except UserError as e:
        raise UserError(f"{source}: {e}") from None


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error."""


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: the base constructor reports it
            break
        if duplicate:
            line = key_node.start_mark.line + 1
            raise UserError(f"duplicate key {show(key)} (line {line}); give each key once")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load_config(path: str | Path, **overrides) -> Config:
    """Reads and validates a YAML config; ``overrides`` (e.g. seed) win over the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {show(str(path))}")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UserError(f"{path}: a config is a few lines, this file is over 1 MB")
        text = path.read_text()
        if not text.strip() or all(
            not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()
        ):
            raise UserError(f"{path}: the config is empty; copy one of configs/*.yaml and edit it")
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except UserError as e:
        raise UserError(f"{path}: {e}" if not str(e).startswith(str(path)) else str(e)) from None
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
