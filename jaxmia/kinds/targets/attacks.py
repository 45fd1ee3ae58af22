"""The field's attacks on a many-targets run: what papers report, from the saved arrays.

Numbers only (figures: attack_figures.py).  Every attack of
``attack.protocol.standard_attacks`` (the loss attack, LiRA online and offline,
and with population points RMIA online, offline and offline with a tuned a)
runs under the protocol of ``attack/protocol.py``:

* **leave one model out**: each used calibration model in turn is the target
  model and the other used calibration models are its references; the T
  targets are the examples, so every (model, target) pair is one labelled
  decision, IN where the model trained on the target;
* **fresh models** (with ``eval_models``): each used evaluation model is a
  target model and every used calibration model is a reference;
* per attack one global ROC over all pairs: AUC, TPR at 0.01%, 0.1%, 1% and 10%
  FPR (null where the non-member pairs cannot resolve the FPR), balanced
  accuracy, with percentile intervals from a bootstrap over the target models
  (``bootstrap_samples`` resamples at ``confidence``);
* **the reference-count curve**: the leave-one-out target models attacked with
  1, 2, 4, ... and all M - 1 references, each target's references a random
  subset drawn from (seed, target model, count) alone.

The signals come from the saved logits: query 0 (``logits``) and the other
views (``augmented_logits``) of the targets, and the population points'
(``population_logits``); kinds/targets/arrays.py describes them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmia.attack import metrics, protocol
from jaxmia.attack.protocol import FPR_LEVELS, AttackOptions
from jaxmia.attack.signals import Signals
from jaxmia.attack.thresholds import resolve_variance
from jaxmia.kinds.targets.analysis import check_targets_arrays
from jaxmia.kinds.targets.plan import BOOTSTRAP, REFERENCES, inclusion_block
from jaxmia.runs.plan import CALIBRATION, EVALUATION, seed_sequence

__all__ = [
    "AttackInputs",
    "attack_inputs",
    "check_attack_arrays",
    "targets_attacks",
]

LEAVE_ONE_OUT, FRESH = 0, 1  # protocol numbers in the random streams
# The arrays of query views and population points (arrays.py), which
# analysis.check_targets_arrays checks against the schema but does not hand on.
_EXTRA = (
    "augmented_logits",
    "eval_augmented_logits",
    "population_points",
    "population_labels",
    "population_logits",
    "eval_population_logits",
)
_PROTOCOL_NAMES = {LEAVE_ONE_OUT: "leave_one_out", FRESH: "fresh_models"}
CURVE_LEVELS = (0.001, 0.01)  # the TPRs the reference-count curve follows, beside the AUC


def check_attack_arrays(arrays) -> None:
    """Checks what the attacks read beyond ``analysis.check_targets_arrays`` (which checks
    every field's dtype and shape): the query views and the population arrays come
    together and agree on Q.  Raises ValueError."""
    aug = ("augmented_logits", "eval_augmented_logits")
    pop = ("population_points", "population_labels", "population_logits", "eval_population_logits")
    for group in (aug, pop):
        given = [k for k in group if k in arrays]
        if given and len(given) < len(group):
            missing = ", ".join(k for k in group if k not in arrays)
            raise ValueError(f"lack {missing} (they come with {given[0]})")
    q = 1 + (np.shape(arrays["augmented_logits"])[2] if "augmented_logits" in arrays else 0)
    if "population_logits" in arrays:
        qz = np.shape(arrays["population_logits"])[2]
        if qz != q:
            raise ValueError(f"population_logits has {qz} queries, the targets' logits {q}")
        c = np.shape(arrays["logits"])[2]
        labels = np.asarray(arrays["population_labels"])
        if labels.size and (labels.min() < 0 or labels.max() >= c):
            raise ValueError(f"population_labels must be classes in [0, {c})")


@dataclasses.dataclass(frozen=True)
class AttackInputs:
    """The used models' outputs as the attacks read them.

    Attributes:
      logits: float32[M, T, Q, C] of the used calibration models (query 0 first);
      member: bool[M, T]; block: int64[M] their membership blocks; model: int64[M]
      their model numbers (the reference-count curve draws from them).
      eval_logits, eval_member, eval_block: the same of the used evaluation models.
      labels: int[T]; population_logits: float32[M, Z, Q, C]; eval_population_logits;
      population_labels: int[Z] (Z may be 0).
    """

    logits: np.ndarray
    member: np.ndarray
    block: np.ndarray
    eval_logits: np.ndarray
    eval_member: np.ndarray
    eval_block: np.ndarray
    labels: np.ndarray
    model: np.ndarray
    population_logits: np.ndarray
    eval_population_logits: np.ndarray
    population_labels: np.ndarray

    @property
    def queries(self) -> int:
        return int(self.logits.shape[2])

    @property
    def population_size(self) -> int:
        return int(self.population_logits.shape[1])

    def signals(self, attack) -> tuple[Signals, Signals]:
        """(calibration, evaluation) Signals of ``attack.signal``."""
        out = []
        for prefix in ("", "eval_"):
            ex, pop = attack.signal(
                getattr(self, f"{prefix}logits"),
                self.labels,
                getattr(self, f"{prefix}population_logits"),
                self.population_labels,
            )
            out.append(Signals(ex, pop, getattr(self, f"{prefix}block")))
        return out[0], out[1]


def attack_inputs(a: dict, inclusion: float) -> AttackInputs:
    """The attacks' inputs from checked arrays (``analysis.check_targets_arrays``'s, with
    the query and population arrays beside them)."""
    _, b = inclusion_block(inclusion)
    c = a["logits"].shape[2]
    parts = {}
    for prefix, stream in (("", CALIBRATION), ("eval_", EVALUATION)):
        used = np.flatnonzero(a[f"{prefix}model_used"])
        z = np.asarray(a[f"{prefix}logits"])[used][:, :, None]
        if f"{prefix}augmented_logits" in a:
            z = np.concatenate([z, np.asarray(a[f"{prefix}augmented_logits"])[used]], axis=2)
        pop = a.get(f"{prefix}population_logits")
        pop = (
            np.asarray(pop)[used]
            if pop is not None
            else np.zeros((used.size, 0, z.shape[2], c), np.float32)
        )
        parts[f"{prefix}logits"] = z
        parts[f"{prefix}member"] = a[f"{prefix}membership"][used]
        # Models of one block have complementary memberships (plan.py); streams apart.
        parts[f"{prefix}block"] = (np.int64(stream) << 32) + used.astype(np.int64) // b
        parts[f"{prefix}population_logits"] = pop
    labels = a.get("population_labels")
    return AttackInputs(
        labels=a["target_labels"],
        model=np.flatnonzero(a["model_used"]),
        population_labels=np.zeros(0, np.int64) if labels is None else np.asarray(labels),
        **parts,
    )


def _draw_references(seed: int, which: int, model: int, pool: np.ndarray, count: int):
    """int64[count]: ``count`` of ``pool`` (positions among the used models), the
    references of target model number ``model``, from (seed, protocol, model, count)."""
    rng = np.random.default_rng(seed_sequence(seed, REFERENCES, which, model, count))
    return np.sort(rng.choice(pool, size=count, replace=False))


def _bootstrap_resamples(seed: int, which: int, k: int, n: int) -> np.ndarray:
    """int64[n, k]: the target models of n bootstrap resamples, from (seed, protocol)."""
    rng = np.random.default_rng(seed_sequence(seed, BOOTSTRAP, which))
    return rng.integers(0, k, size=(n, k))


def _attack_entry(attack, scores, member, chosen, resamples, confidence) -> dict:
    entry = {"settings": dict(attack.settings), **protocol.pair_metrics(scores, member)}
    ci = protocol.bootstrap_metrics(scores, member, resamples, confidence=confidence)
    entry["auc_ci"] = ci["auc"]
    entry["balanced_accuracy_ci"] = ci["balanced_accuracy"]
    entry["tpr_at_fpr_ci"] = ci["tpr_at_fpr"]
    if chosen and any(chosen):
        a = np.array([c["a"] for c in chosen], np.float64).reshape(-1)
        entry["tuned_a"] = {
            "mean": float(a.mean()),
            "min": float(a.min()),
            "max": float(a.max()),
            "per_target_model": a.tolist(),
        }
    return entry


def _run_protocol(attacks, signals, inputs, which, seed, n_boot, confidence):
    """One protocol's entries and scores: {name: entry}, {name: (scores, member)}."""
    entries, kept = {}, {}
    for attack in attacks:
        ref, ev = signals[attack.name]
        if which == LEAVE_ONE_OUT:
            target, member = ref, inputs.member
            sets = protocol.leave_one_out_sets(ref.n_models)
        else:
            target, member = ev, inputs.eval_member
            sets = [np.arange(ref.n_models)] * ev.n_models
        scores, chosen = protocol.score_targets(attack, inputs.member, ref, target, sets)
        resamples = _bootstrap_resamples(seed, which, target.n_models, n_boot)
        entries[attack.name] = _attack_entry(attack, scores, member, chosen, resamples, confidence)
        kept[attack.name] = (scores, member)
    return entries, kept


def _curve(attacks, signals, inputs, seed) -> dict:
    """The leave-one-out target models with 1, 2, 4, ... M-1 references each."""
    m = inputs.member.shape[0]
    counts = protocol.reference_counts(m - 1)
    pools = protocol.leave_one_out_sets(m)
    out = {"references": counts, "attacks": {}}
    for attack in attacks:
        ref, _ = signals[attack.name]
        rows = {"auc": [], "n_scored": [], **{f"tpr_at_fpr_{f:g}": [] for f in CURVE_LEVELS}}
        for r in counts:
            sets = [
                pool
                if r == pool.size
                else _draw_references(seed, LEAVE_ONE_OUT, int(inputs.model[k]), pool, r)
                for k, pool in enumerate(pools)
            ]
            scores, _ = protocol.score_targets(attack, inputs.member, ref, ref, sets)
            got = protocol.pair_metrics(scores, inputs.member, CURVE_LEVELS)
            rows["auc"].append(got["auc"])
            rows["n_scored"].append(got["n_scored"])
            for f in CURVE_LEVELS:
                rows[f"tpr_at_fpr_{f:g}"].append(got["tpr_at_fpr"][f"{f:g}"])
        out["attacks"][attack.name] = rows
    return out


def targets_attacks(arrays, cfg) -> tuple[dict, list[dict], dict]:
    """Every attack under every protocol of the module docstring.

    Args:
      arrays: the targets arrays (kinds/targets/arrays.py), e.g. ``np.load("targets.npz")``.
      cfg: the run's config: inclusion, seed, confidence, bootstrap_samples and the
        attack options (``AttackOptions.from_config``).

    Returns:
      (block, rows, drawing): ``block`` is results.json's ``attacks`` (README);
      ``rows`` attacks.csv's rows; ``drawing`` what attack_figures.py draws: the
      leave-one-out ROC of every attack ({name: (fpr, tpr)}) and the curve.
    """
    check_attack_arrays(arrays)
    a = {**check_targets_arrays(arrays), **{k: arrays[k] for k in _EXTRA if k in arrays}}
    opts = AttackOptions.from_config(cfg)
    inputs = attack_inputs(a, cfg.inclusion)
    m, t = inputs.member.shape
    e = inputs.eval_member.shape[0]
    z = inputs.population_size
    attacks = protocol.standard_attacks(opts, population=z > 0)
    warnings = []
    if z == 0:
        warnings.append(
            "RMIA needs population points that no model trains on: set population_size > 0 "
            "(and train again) to run rmia_online and rmia_offline"
        )
    block = {
        "protocol": "leave-one-model-out: each used calibration model in turn is the target "
        "model and all other used calibration models are its references; one threshold swept "
        "over every (target model, target) pair",
        "target_models": m,
        "references_per_target_model": m - 1,
        "examples": t,
        "queries": inputs.queries,
        "population_points": z,
        "lira_variance_used": resolve_variance(opts.lira_variance, m - 1) if m > 1 else None,
        "settings": dataclasses.asdict(opts),
        "fpr_levels": list(FPR_LEVELS),
        "confidence": cfg.confidence,
        "bootstrap_samples": cfg.bootstrap_samples,
        "interval_method": "percentile bootstrap over the target models (each resample draws "
        "the target models with replacement and keeps all their pairs; every attack on the "
        "same resamples)",
        "leave_one_out": None,
        "fresh_models": None,
        "reference_curve": None,
        "warnings": warnings,
    }
    drawing = {"roc": {}, "curve": None, "n_nonmember": 0}
    if m < 2:
        warnings.append(f"{m} used calibration model(s): leave-one-out needs at least 2")
        return block, [], drawing
    seed, n_boot, conf = cfg.seed, cfg.bootstrap_samples, cfg.confidence
    signals = {attack.name: inputs.signals(attack) for attack in attacks}
    entries, kept = _run_protocol(attacks, signals, inputs, LEAVE_ONE_OUT, seed, n_boot, conf)
    block["leave_one_out"] = entries
    if e:
        block["fresh_models"] = {
            "target_models": e,
            "references_per_target_model": m,
            "lira_variance_used": resolve_variance(opts.lira_variance, m),
            "attacks": _run_protocol(attacks, signals, inputs, FRESH, seed, n_boot, conf)[0],
        }
    block["reference_curve"] = _curve(attacks, signals, inputs, seed)
    for name, (scores, member) in kept.items():
        ok = np.isfinite(scores)
        if (ok & member).any() and (ok & ~member).any():
            fpr, tpr, _ = metrics.roc(scores[ok & member], scores[ok & ~member])
            drawing["roc"][name] = (fpr, tpr)
        n_scored = int(ok.sum())
        if n_scored < scores.size:
            warnings.append(
                f"{name}: {scores.size - n_scored} of {scores.size} pairs cannot be scored (an "
                "example without the IN or OUT references the attack needs) and are left out"
            )
    drawing["n_nonmember"] = int((~inputs.member).sum())
    drawing["curve"] = block["reference_curve"]
    return block, _rows(block), drawing


# ---------------------------------------------------------------- attacks.csv (rows)


def _setting_text(settings: dict) -> str:
    return "; ".join(f"{k}={v}" for k, v in settings.items()) or "none"


def _rows(block: dict) -> list[dict]:
    """One row per attack and setting: each protocol's full result, then every point of
    the reference-count curve below all references."""
    rows = []

    def row(which, name, refs, targets, entry, settings):
        r = {
            "protocol": which,
            "attack": name,
            "settings": _setting_text(settings),
            "references": refs,
            "target_models": targets,
            "n_pairs": entry.get("n_pairs"),
            "n_scored": entry.get("n_scored"),
            "n_member": entry.get("n_member"),
            "n_nonmember": entry.get("n_nonmember"),
            "auc": entry.get("auc"),
            "auc_lo": (entry.get("auc_ci") or [None, None])[0],
            "auc_hi": (entry.get("auc_ci") or [None, None])[1],
            "balanced_accuracy": entry.get("balanced_accuracy"),
        }
        cis = entry.get("tpr_at_fpr_ci") or {}
        for f in FPR_LEVELS:
            key = f"{f:g}"
            r[f"tpr_at_fpr_{key}"] = (entry.get("tpr_at_fpr") or {}).get(key)
            lo_hi = cis.get(key) or [None, None]
            r[f"tpr_at_fpr_{key}_lo"], r[f"tpr_at_fpr_{key}_hi"] = lo_hi
        r["tuned_a_mean"] = (entry.get("tuned_a") or {}).get("mean")
        rows.append(r)

    m = block["target_models"]
    for name, entry in (block["leave_one_out"] or {}).items():
        row("leave_one_out", name, m - 1, m, entry, entry["settings"])
    fresh = block["fresh_models"]
    if fresh:
        for name, entry in fresh["attacks"].items():
            row("fresh_models", name, m, fresh["target_models"], entry, entry["settings"])
    curve = block["reference_curve"]
    if curve:
        settings = {n: e["settings"] for n, e in block["leave_one_out"].items()}
        for name, points in curve["attacks"].items():
            for i, r in enumerate(curve["references"][:-1]):
                entry = {
                    "auc": points["auc"][i],
                    "n_scored": points["n_scored"][i],
                    "tpr_at_fpr": {f"{f:g}": points[f"tpr_at_fpr_{f:g}"][i] for f in CURVE_LEVELS},
                }
                row("reference_curve", name, r, m, entry, settings[name])
    return rows
