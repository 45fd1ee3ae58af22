"""The run configuration: YAML in, a validated and frozen ``Config`` out.

Every mistake a user can make here (unknown key, wrong type, impossible value,
unreadable file) raises ``UserError`` with one line that says what is allowed.
The keys are records (keys.py): the ones every run has are listed below, and each
experiment kind declares its own in its folder (kinds/<kind>/__init__.py), so the
YAML stays one flat mapping while a kind owns its keys and their checks.  Checks
that need the data set (subset_size and target_index against the size of the
training set) live in ``Config.check_against`` and the kinds' ``check_against``.
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

from jaxmia import kinds, privacy
from jaxmia.attack.scores import SCORES
from jaxmia.attack.thresholds import RULES, VARIANCES
from jaxmia.errors import UserError, show
from jaxmia.keys import Key, choice, flag, integer, number
from jaxmia.models import MODELS

DATASETS = ("cifar100", "cifar10", "synthetic")
DATA_SOURCES = ("auto", "archive", "tfds")
CONV_CHOICES = ("auto", "xla", "im2col", "winograd")
STRATEGY_CHOICES = ("auto", "vmap", "map")
DTYPE_CHOICES = ("float32", "bfloat16")
# jaxmia.training.augment.AUGMENTATIONS (named here: the config imports no JAX).
AUGMENT_CHOICES = ("none", "flip", "flip_crop")
SCHEDULE_CHOICES = ("constant", "cosine", "onecycle")
NONFINITE_CHOICES = ("stop", "skip")
# The attack's names: jaxmia.attack imports scipy only where it computes.
SCORE_CHOICES = tuple(SCORES)
RULE_CHOICES = RULES

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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _models_per_chunk(name, v) -> None:
    ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_MODELS_PER_CHUNK
    if v != "auto" and not ok:
        raise UserError(
            f"{name} must be 'auto' or an integer in [1, {MAX_MODELS_PER_CHUNK:,}], got {show(v)}"
        )


def _run_name(name, v) -> None:
    if v is not None:
        check_run_name(v)


# The keys of every run, whatever its kind, in the order config.yaml lists them.
# Each experiment kind adds its own (kinds/<kind>/__init__.py, KEYS).  Upper
# bounds of subset_size, target_index and test_samples come from the data set
# (check_against); the bounds here keep them from overflowing first.
COMMON_KEYS = (
    Key("experiment", kinds.DEFAULT, choice(kinds.names)),
    Key("num_classes", 100, integer(2, MAX_CLASSES)),
    Key("subset_size", 5000, integer(1, 2**31 - 1)),
    Key("epochs", 10, integer(1, MAX_EPOCHS)),
    Key("batch_size", 64, integer(1, MAX_BATCH)),
    Key("lr", 0.01, number(0, math.inf, lo_open=True, hi_open=True, what="> 0")),
    Key(
        "alpha",
        0.05,
        number(0, 1, lo_open=True, hi_open=True, what="strictly between 0 and 1"),
        hashed=False,
    ),
    Key("save_plots", True, flag, hashed=False),
    Key("seed", 0, integer(0, MAX_SEED)),
    # The attack's statistics (recomputable from a finished run: jaxmia analyze).
    Key("score", "loss", choice(SCORE_CHOICES), hashed=False),
    Key("threshold_rule", "empirical", choice(RULE_CHOICES), hashed=False),
    Key("delta", 0.0, number(0, 1, lo_open=False, hi_open=True), hashed=False),
    Key("confidence", 0.95, number(0.5, 1, lo_open=False, hi_open=True), hashed=False),
    # LiRA's σ (the lira threshold rule; the many-targets kind's LiRA attacks too).
    Key("lira_variance", "auto", choice(VARIANCES), hashed=False),
    # Data and training.
    Key("dataset", "cifar100", choice(DATASETS)),
    # The same images from any source: the data fingerprint decides.
    Key("data_source", "auto", choice(DATA_SOURCES), hashed=False),
    Key("model", "cnn", choice(lambda: tuple(MODELS))),  # a name in jaxmia.models.MODELS
    Key("momentum", 0.9, number(0, 1, lo_open=False, hi_open=True)),
    Key("weight_decay", 0.0, number(0, math.inf, lo_open=False, hi_open=True, what=">= 0")),
    # The training recipe beyond the seed's (augmentation, schedule, Nesterov,
    # label smoothing).  At their defaults they train as before and leave the
    # run hash as it was, so earlier run folders resume.
    Key("augment", "none", choice(AUGMENT_CHOICES), hash_default=False),
    Key("lr_schedule", "constant", choice(SCHEDULE_CHOICES), hash_default=False),
    Key(
        "warmup_epochs",
        0.0,
        number(0, MAX_EPOCHS, lo_open=False, hi_open=False),
        hash_default=False,
    ),
    Key("nesterov", False, flag, hash_default=False),
    Key("label_smoothing", 0.0, number(0, 1, lo_open=False, hi_open=True), hash_default=False),
    Key("test_samples", None, integer(1, 2**31 - 1, allow_none=True)),
    Key("compute_dtype", "float32", choice(DTYPE_CHOICES)),
    # DP-SGD (privacy.py): one nested mapping, null for non-private training.
    Key("dp", None, privacy.check_dp, hash_default=False),
    # A worst-case target for an audit: x (or each target) gets another label.
    Key("canary", "none", choice(privacy.CANARIES), hash_default=False),
    # How the work is split and computed: results.json and run.json record the
    # resolved conv and strategy, and a run folder refuses another (store.py).
    Key("models_per_chunk", "auto", _models_per_chunk, hashed=False),
    Key("conv", "auto", choice(CONV_CHOICES), hashed=False),
    Key("strategy", "auto", choice(STRATEGY_CHOICES), hashed=False),
    Key("on_nonfinite", "stop", choice(NONFINITE_CHOICES), hashed=False),
    Key("run_name", None, _run_name, hashed=False),
)
ALL_KEYS = COMMON_KEYS + tuple(key for kind in kinds.all_kinds() for key in kind.keys)
KEYS = {key.name: key for key in ALL_KEYS}
if len(KEYS) != len(ALL_KEYS):  # two kinds declared one name: a bug, caught at import
    raise RuntimeError("a config key is declared twice (config.py and kinds/*/KEYS)")
# Keys whose YAML value may be an integer or a string spelling of a number (1e-3).
FLOAT_KEYS = tuple(k.name for k in ALL_KEYS if isinstance(k.default, float))


def _post_init(self):
    _validate(self)
    # One spelling of the dp mapping (every sub-key, floats): two spellings of one
    # mechanism are one run.
    object.__setattr__(self, "dp", privacy.normalize_dp(self.dp))


def _replace(self, **changes):
    return dataclasses.replace(self, **changes)


def _to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _own_dict(self) -> dict[str, Any]:
    """The keys this run's kind reads (the common keys and its own, in config.yaml's
    order) with their values: what a run folder's config.yaml lists.  Other kinds'
    keys are left out (the run never reads them; run.json keeps the whole config),
    so loading this back gives the same Config when they were at their defaults."""
    own = {k.name for k in COMMON_KEYS + self.kind.keys}
    return {name: value for name, value in self.to_dict().items() if name in own}


def _kind(self):
    """The experiment kind (kinds/<kind>/) this config runs."""
    return kinds.get(self.experiment)


def _check_against(self, n_train: int, n_test: int) -> None:
    """Checks that need the data set's size; raises UserError."""
    self.kind.check_against(self, n_train, n_test)
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
    if self.test_samples is not None and self.test_samples > n_test:
        raise UserError(
            f"test_samples must be at most the test-set size {n_test} "
            f"(or null for all of it), got {self.test_samples}"
        )


def _hashed_keys(self) -> list[str]:
    """The config keys that decide the per-model results (and so the run hash).

    The common keys and this run's kind's keys marked ``hashed`` (keys.py).  Left
    out on purpose: keys that only change how many models there are, where the
    data comes from, or how the work is split or reported, so that a run can grow
    or be re-split and still reuse its models; and other kinds' keys, which this
    run never reads.  How the numbers are computed (conv, strategy, ...) is
    checked separately, with the values they resolve to (runs/store.py).
    """
    own = {k.name for k in COMMON_KEYS + self.kind.keys if k.hashed}
    return [name for name in KEYS if name in own]


def _results_hash(self, data_fingerprint: str, version: str) -> str:
    """Hash of the hashed keys' values, the data's fingerprint and jaxmia's version.

    A key marked ``hash_default=False`` (keys.py) counts only away from its default.
    """
    d = self.to_dict()
    keyed = {k: d[k] for k in self.hashed_keys() if KEYS[k].hash_default or d[k] != KEYS[k].default}
    keyed["data"] = data_fingerprint
    keyed["jaxmia_version"] = version
    blob = json.dumps(keyed, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# One experiment: a frozen dataclass whose fields are the YAML keys (ALL_KEYS),
# built here so that the keys a kind declares in its own folder become fields.
Config = dataclasses.make_dataclass(
    "Config",
    [(k.name, Any, dataclasses.field(default=k.default)) for k in ALL_KEYS],
    frozen=True,
    namespace={
        "__doc__": "One experiment, validated on creation.  Field names are the YAML keys.",
        "__post_init__": _post_init,
        "replace": _replace,
        "to_dict": _to_dict,
        "own_dict": _own_dict,
        "kind": property(_kind),
        "check_against": _check_against,
        "hashed_keys": _hashed_keys,
        "results_hash": _results_hash,
    },
)
Config.__module__ = __name__
FIELDS = KEYS


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


def _validate(cfg) -> None:
    for key in ALL_KEYS:  # every key's own check, whatever the kind
        key.check(key.name, getattr(cfg, key.name))
    cfg.kind.validate(cfg)  # the kind's checks that relate its keys
    if cfg.warmup_epochs and cfg.warmup_epochs >= cfg.epochs:
        raise UserError(
            f"warmup_epochs must be below epochs ({cfg.epochs}), got {cfg.warmup_epochs}"
        )
    if cfg.nesterov and not cfg.momentum:
        raise UserError(
            "nesterov: true needs a momentum above 0 (Nesterov's look-ahead is along the momentum)"
        )
    if cfg.dp is not None and MODELS[cfg.model].has_batch_stats:
        raise UserError(
            f"dp: model {cfg.model} keeps batch statistics, which mix the examples of a "
            "batch: per-example gradients (DP-SGD) need a model without them"
        )
    if cfg.dp is not None and cfg.augment != "none":
        # DP-SGD computes each example's gradient twice (its norm, then the clipped
        # sum), and a batch-wide augmentation draw would differ between the passes.
        raise UserError(
            f"dp: augment: {cfg.augment} is not supported under DP-SGD yet; use augment: none"
        )
    if cfg.dataset == "cifar100" and cfg.num_classes != 100:
        raise UserError(f"num_classes must be 100 for dataset cifar100, got {cfg.num_classes}")
    if cfg.dataset == "cifar10" and cfg.num_classes != 10:
        raise UserError(f"num_classes must be 10 for dataset cifar10, got {cfg.num_classes}")


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
