"""Many targets (``experiment: targets``): from the saved arrays to the numbers and figures.

Host side of the border: numpy, scipy and matplotlib, no JAX.  Every target is
attacked on its own, exactly as the single-target run attacks x: its IN models
(the used calibration models trained on it) and its OUT models (the rest) give
its member and non-member scores, and ``attack.summary.summarize`` (the single-target
code, ``items=False``) computes its threshold, power, AUC, balanced accuracy, TPR
at low FPR and expected held-out FPR.  The evaluation models then test every
target's own threshold; their decisions are pooled over targets.

The arrays it reads are described (and checked) in kinds/targets/arrays.py.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np

from jaxmia import fileio
from jaxmia.attack import bounds, metrics, scores
from jaxmia.attack.audit import one_run_audit
from jaxmia.attack.summary import Settings, summarize
from jaxmia.attack.thresholds import Decision, GaussianFit
from jaxmia.errors import NothingToAnalyse
from jaxmia.kinds.targets.arrays import MIN_SIZES, SCHEMA
from jaxmia.runs import schema

__all__ = [
    "CSV_FILE",
    "N_EXTREMES",
    "check_targets_arrays",
    "pooled_roc",
    "privacy_audit",
    "read_targets_csv",
    "target_scores",
    "target_summary",
    "targets_results",
    "write_targets_csv",
]

CSV_FILE = "targets.csv"
N_EXTREMES = 16  # most and least vulnerable targets listed and drawn
# Below this many evaluation models the intervals over models are said to be rough.
MIN_EVAL_MODELS = 16
# summarize says this once per target when it gets no evaluation scores; the
# evaluation here is pooled over targets and warned about once.
_NO_EVAL_WARNING = "no evaluation models of both kinds"
# Columns of targets.csv that stay text when read back.
_TEXT_COLUMNS = ("label",)
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")


# ---------------------------------------------------------------- the arrays


def check_targets_arrays(arrays, sizes: dict | None = None) -> dict[str, np.ndarray]:
    """The arrays as numpy arrays of the documented dtypes and shapes; raises ValueError.

    ``eval_*`` may be missing or have E = 0 (no evaluation models).  ``sizes``: symbol
    sizes known from run.json (C, T), which the arrays must agree with.
    """
    evals = ("eval_membership", "eval_losses", "eval_logits", "eval_model_used")
    given = [k for k in evals if k in arrays]
    if given and len(given) < len(evals):
        missing = ", ".join(k for k in evals if k not in arrays)
        raise ValueError(f"lack {missing} (the evaluation arrays come together)")
    sizes = schema.check(arrays, SCHEMA, sizes, minimum=MIN_SIZES)
    if np.unique(np.asarray(arrays["targets"])).size != sizes["T"]:
        raise ValueError("targets must be distinct training-set indices")
    for pre in ("", "eval_") if given else ("",):
        views = (f"{pre}augmented_logits", f"{pre}population_logits")
        outputs = schema.finite_rows(
            arrays[f"{pre}losses"],
            arrays[f"{pre}logits"],
            *(arrays[k] for k in views if k in arrays),
            ndim=1,
        )
        schema.check_flag(
            f"{pre}model_used",
            arrays[f"{pre}model_used"],
            outputs,
            arrays.get(f"{pre}train_finite"),
            f"{pre}train_finite",
        )
    m, t, c = sizes["M"], sizes["T"], sizes["C"]
    a = {}
    a["targets"] = np.asarray(arrays["targets"]).astype(np.int64)
    a["target_labels"] = np.asarray(arrays["target_labels"]).astype(np.int64)
    a["membership"] = np.asarray(arrays["membership"], dtype=bool)
    a["losses"] = np.asarray(arrays["losses"])
    a["logits"] = np.asarray(arrays["logits"])
    a["model_used"] = np.asarray(arrays["model_used"], dtype=bool)
    if given:
        a["eval_membership"] = np.asarray(arrays["eval_membership"], dtype=bool)
        a["eval_losses"] = np.asarray(arrays["eval_losses"])
        a["eval_logits"] = np.asarray(arrays["eval_logits"])
        a["eval_model_used"] = np.asarray(arrays["eval_model_used"], dtype=bool)
    else:
        a["eval_membership"] = np.zeros((0, t), bool)
        a["eval_losses"] = np.zeros((0, t), np.float32)
        a["eval_logits"] = np.zeros((0, t, c), np.float32)
        a["eval_model_used"] = np.zeros(0, bool)
    if c < 2:
        raise ValueError(f"logits must be float[M, T, C] with C >= 2, got {a['logits'].shape}")
    names = arrays.get("class_names")
    a["class_names"] = (
        np.asarray([str(n) for n in np.asarray(names).tolist()])
        if names is not None
        else np.asarray([str(i) for i in range(c)])
    )
    if "target_images" in arrays:
        a["target_images"] = np.asarray(arrays["target_images"])
    for key in ("train_accuracy", "test_accuracy"):
        if key in arrays:
            a[key] = np.asarray(arrays[key], dtype=np.float64).reshape(m)
    a["synthetic"] = np.asarray(bool(np.asarray(arrays.get("synthetic", False))))
    return a


def _label_name(a: dict, t: int) -> str:
    label = int(a["target_labels"][t])
    names = a["class_names"]
    return str(names[label]) if label < len(names) else str(label)


def target_scores(arrays, score: str) -> dict[str, np.ndarray]:
    """Native-scale scores of the used models for every target.

    Every score, the loss included, comes from the saved logits in float64
    (``attack.scores.from_outputs``), as for a single target.

    Returns:
      calibration: float64[M_used, T]; membership: bool[M_used, T];
      eval: float64[E_used, T]; eval_membership: bool[E_used, T]
      (rows = the used models, in model order).
    """
    a = check_targets_arrays(arrays)
    out = {}
    for prefix, key in (("", "calibration"), ("eval_", "eval")):
        used = a[f"{prefix}model_used"]
        member = a[f"{prefix}membership"][used]
        out[key] = scores.from_outputs(score, a[f"{prefix}logits"][used], a["target_labels"])
        out["membership" if key == "calibration" else "eval_membership"] = member
    return out


def _column(values: np.ndarray, member: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """(IN scores, OUT scores) of target t: float64[l_in], float64[l_out]."""
    col, flag = values[:, t], member[:, t]
    return col[flag], col[~flag]


def target_summary(arrays, settings: Settings, t: int, *, items: bool = True) -> dict:
    """``summarize`` of target number t (position in ``targets``), with its
    evaluation models: the single-target report of one target, for a closer look."""
    s = target_scores(arrays, settings.score)
    member, nonmember = _column(s["calibration"], s["membership"], t)
    ev_member, ev_nonmember = _column(s["eval"], s["eval_membership"], t)
    return summarize(
        member,
        nonmember,
        eval_member=ev_member,
        eval_nonmember=ev_nonmember,
        alpha=settings.alpha,
        rule=settings.threshold_rule,
        score=settings.score,
        delta=settings.delta,
        confidence=settings.confidence,
        items=items,
        lira_variance=settings.lira_variance,
        more_models="n_models",
    )


# ---------------------------------------------------------------- per-target statistics


def _quantiles(x: np.ndarray) -> dict:
    if x.size == 0:
        return {"mean": None, "median": None, "q1": None, "q3": None, "min": None, "max": None}
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    return {
        "mean": float(np.mean(x)),
        "median": float(med),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(np.min(x)),
        "max": float(np.max(x)),
    }


def _counted(messages: list[list[str]], n_targets: int) -> list[str]:
    """One line per kind of per-target warning, with how many targets it concerns.

    A kind is the message's words without its numbers, and its place among the
    target's warnings of that kind (so "TPR at FPR 0.001 ..." and "TPR at FPR 0.01 ..."
    stay two lines); a number that differs between targets is shown as its range
    ("have 31–32").
    """
    kinds: dict[tuple, list] = {}
    for per_target in messages:
        seen: dict[str, int] = {}
        for w in per_target:
            words = _NUMBER.sub("#", w)
            key = (words, seen.get(words, 0))
            seen[words] = key[1] + 1
            kinds.setdefault(key, []).append(w)
    lines = []
    for group in kinds.values():
        numbers = list(zip(*(_NUMBER.findall(w) for w in group), strict=True))
        shown = []
        for values in numbers:
            distinct = sorted(set(values), key=float)
            shown.append(distinct[0] if len(distinct) == 1 else f"{distinct[0]}–{distinct[-1]}")
        words = _NUMBER.split(group[0])
        text = words[0] + "".join(n + w for n, w in zip(shown, words[1:], strict=True))
        who = "every target" if len(group) == n_targets else f"{len(group)} of {n_targets} targets"
        lines.append(f"{who}: {text}")
    return lines


def _ranked(rows: list[dict]) -> list[int]:
    """Row positions of the targets with statistics, most vulnerable first: AUC, then power,
    descending; ties keep the order of ``targets``."""
    have = [i for i, r in enumerate(rows) if r["auc"] is not None]
    return sorted(have, key=lambda i: (-rows[i]["auc"], -rows[i]["power"], i))


def extremes(rows: list[dict], n: int = N_EXTREMES) -> tuple[list[int], list[int]]:
    """(most, least): row positions of the n most vulnerable (highest AUC first) and the n
    least vulnerable (lowest AUC first); never the same target in both (with fewer than 2n
    targets the most vulnerable half and the rest)."""
    order = _ranked(rows)
    n_most = min(n, math.ceil(len(order) / 2))
    n_least = min(n, len(order) - n_most)
    return order[:n_most], order[::-1][:n_least]


def targets_results(arrays, settings: Settings) -> tuple[dict, list[dict]]:
    """Every target attacked on its own, and the evaluation pooled over targets.

    Args:
      arrays: the targets arrays (module docstring), e.g. ``np.load("targets.npz")``.
      settings: alpha, score, threshold_rule, delta, confidence.

    Returns:
      (results, rows): ``results`` is the JSON-ready summary (README, many targets);
      ``rows`` holds one dict per target, in the order of ``targets``, with index,
      label, n_member, n_nonmember, auc, auc_ci_low, auc_ci_high (``AUC_INTERVAL_METHOD``
      at settings.confidence), balanced_accuracy, power, calibration_fpr,
      threshold, k, expected_heldout_fpr(_upper95), tpr_at_fpr_<f>, gaussian_threshold,
      gaussian_power, member/nonmember_loss_mean/std, for scores other than the loss
      member/nonmember_score_mean/std, and with evaluation models eval_n_member,
      eval_n_nonmember, eval_true_positives, eval_false_negatives,
      eval_false_positives, eval_true_negatives.  A target without IN or without OUT
      models has None in every statistic.

    Raises:
      ValueError: arrays that do not fit their schema.
      NothingToAnalyse: no target has both an IN and an OUT model among the used ones.
    """
    a = check_targets_arrays(arrays)
    score, rule, alpha = settings.score, settings.threshold_rule, settings.alpha
    s = target_scores(a, score)
    loss = s if score == "loss" else target_scores(a, "loss")
    m_all, n_targets = a["membership"].shape
    e_all = a["eval_membership"].shape[0]
    has_eval = s["eval"].shape[0] > 0
    warnings: list[str] = []
    per_target_warnings: list[list[str]] = []
    rows: list[dict] = []
    no_stats: list[int] = []
    # Per used evaluation model: TP, FN, FP, TN over the targets (the model is the unit
    # of the pooled intervals: its decisions on different targets share it).
    per_model = np.zeros((s["eval"].shape[0], 4), np.int64)
    expected_fp = 0.0  # sum over targets of expected held-out FPR x OUT evaluation models
    expected_known = True

    for t in range(n_targets):
        member, nonmember = _column(s["calibration"], s["membership"], t)
        loss_in, loss_out = _column(loss["calibration"], loss["membership"], t)
        row = {
            "index": int(a["targets"][t]),
            "label": _label_name(a, t),
            "n_member": int(member.size),
            "n_nonmember": int(nonmember.size),
        }
        if member.size == 0 or nonmember.size == 0:
            no_stats.append(t)
            rows.append(row)
            continue
        summary = summarize(
            member,
            nonmember,
            alpha=alpha,
            rule=rule,
            score=score,
            delta=settings.delta,
            confidence=settings.confidence,
            items=False,
            lira_variance=settings.lira_variance,
            more_models="n_models",
        )
        per_target_warnings.append(
            [w for w in summary["warnings"] if not w.startswith(_NO_EVAL_WARNING)]
        )
        row.update(
            auc=summary["auc"],
            auc_ci_low=None,  # filled below, for every target at once
            auc_ci_high=None,
            balanced_accuracy=summary["balanced_accuracy"],
            power=summary["power"],
            calibration_fpr=summary["calibration_fpr"],
            threshold=summary["threshold"],
            k=summary["k"],
            expected_heldout_fpr=summary["expected_heldout_fpr"],
            expected_heldout_fpr_upper95=summary["expected_heldout_fpr_upper95"],
            **{f"tpr_at_fpr_{f}": v for f, v in summary["tpr_at_fpr"].items()},
            gaussian_threshold=summary["gaussian_threshold"],
            gaussian_power=summary["gaussian_power"],
            member_loss_mean=float(np.mean(loss_in)) if loss_in.size else None,
            member_loss_std=float(np.std(loss_in, ddof=1)) if loss_in.size > 1 else None,
            nonmember_loss_mean=float(np.mean(loss_out)) if loss_out.size else None,
            nonmember_loss_std=float(np.std(loss_out, ddof=1)) if loss_out.size > 1 else None,
        )
        if score == "loss":  # the summary's own numbers (the same, std 0 kept exact)
            for key in ("member_loss_mean", "member_loss_std"):
                row[key] = summary[key]
            for key in ("nonmember_loss_mean", "nonmember_loss_std"):
                row[key] = summary[key]
        else:
            for key in ("member_score_mean", "member_score_std"):
                row[key] = summary[key]
            for key in ("nonmember_score_mean", "nonmember_score_std"):
                row[key] = summary[key]
        if has_eval:
            # The summary's own decision, applied as summary.evaluate_decision applies it.
            decision = _decision(summary)
            called = decision.predict(s["eval"][:, t])  # bool[E_used]
            inside = s["eval_membership"][:, t]
            cells = np.stack([called & inside, ~called & inside, called & ~inside], 1)
            cells = np.concatenate([cells, (~called & ~inside)[:, None]], 1)
            per_model += cells
            counts = cells.sum(0)
            row.update(
                eval_n_member=int(inside.sum()),
                eval_n_nonmember=int((~inside).sum()),
                eval_true_positives=int(counts[0]),
                eval_false_negatives=int(counts[1]),
                eval_false_positives=int(counts[2]),
                eval_true_negatives=int(counts[3]),
            )
            if summary["expected_heldout_fpr"] is None:
                expected_known = False
            else:
                expected_fp += summary["expected_heldout_fpr"] * int((~inside).sum())
        rows.append(row)

    if len(no_stats) == n_targets:
        raise NothingToAnalyse(
            f"no target has both an IN and an OUT model among the {int(a['model_used'].sum())} "
            f"of {m_all} models used (a model with non-finite outputs is left out)"
        )
    # Every row has every column (None where a target has no statistics).
    columns = dict.fromkeys(k for r in rows for k in r)
    rows = [{c: r.get(c) for c in columns} for r in rows]
    _auc_intervals(rows, settings.confidence)

    # ---- the summary over targets
    m_used = int(a["model_used"].sum())
    e_used = int(a["eval_model_used"].sum())
    if m_used < m_all:
        warnings.append(
            f"{m_all - m_used} of {m_all} calibration models left out: non-finite losses"
        )
    if e_used < e_all:
        warnings.append(
            f"{e_all - e_used} of {e_all} evaluation models left out: non-finite losses"
        )
    if no_stats:
        warnings.append(
            f"{len(no_stats)} of {n_targets} targets have no IN or no OUT model among the used "
            "models: no statistics for them"
        )
    warnings += _counted(per_target_warnings, n_targets)

    with_stats = [r for r in rows if r.get("auc") is not None]
    auc = np.array([r["auc"] for r in with_stats], np.float64)
    power = np.array([r["power"] for r in with_stats], np.float64)
    n_strong = int(np.count_nonzero(power >= 0.5))
    most, least = extremes(rows)

    def listed(positions):
        return [
            {
                "index": rows[i]["index"],
                "label": rows[i]["label"],
                "auc": rows[i]["auc"],
                "auc_ci": [rows[i]["auc_ci_low"], rows[i]["auc_ci_high"]],
                "power": rows[i]["power"],
            }
            for i in positions
        ]

    tpr_at = {}
    for f in metrics.TPR_AT_FPR_LEVELS:
        vals = [r[f"tpr_at_fpr_{f:g}"] for r in with_stats if r[f"tpr_at_fpr_{f:g}"] is not None]
        tpr_at[f"{f:g}"] = float(np.mean(vals)) if vals else None
    exp = [r["expected_heldout_fpr"] for r in with_stats if r["expected_heldout_fpr"] is not None]
    auc_q = _quantiles(auc)
    member_counts = [r["n_member"] for r in rows]
    nonmember_counts = [r["n_nonmember"] for r in rows]
    used_membership = a["membership"][a["model_used"]]

    results = {
        "experiment": "targets",
        "n_targets": int(n_targets),
        "n_targets_with_statistics": len(with_stats),
        "n_models": int(m_all),
        "n_models_used": m_used,
        "eval_models": int(e_all),
        "eval_models_used": e_used,
        "inclusion": float(used_membership.mean()) if used_membership.size else None,
        "members_per_target": [int(min(member_counts)), int(max(member_counts))],
        "nonmembers_per_target": [int(min(nonmember_counts)), int(max(nonmember_counts))],
        "score": score,
        "threshold_rule": rule,
        "threshold_scale": "log likelihood ratio" if rule == "lira" else score,
        "alpha": float(alpha),
        "confidence": float(settings.confidence),
        "decision": "each target its own threshold, chosen on its own IN and OUT models",
        "auc_median": auc_q["median"],
        "auc_q1": auc_q["q1"],
        "auc_q3": auc_q["q3"],
        "auc_mean": auc_q["mean"],
        "auc_min": auc_q["min"],
        "auc_max": auc_q["max"],
        "auc_interval_method": AUC_INTERVAL_METHOD,
        "power_mean": float(np.mean(power)) if power.size else None,
        "power_median": float(np.median(power)) if power.size else None,
        "n_power_at_least_half": n_strong,
        "share_power_at_least_half": n_strong / len(with_stats) if with_stats else None,
        "balanced_accuracy_mean": (
            float(np.mean([r["balanced_accuracy"] for r in with_stats])) if with_stats else None
        ),
        "tpr_at_fpr_mean": tpr_at,
        "expected_heldout_fpr_mean": float(np.mean(exp)) if exp else None,
        "most_vulnerable": listed(most),
        "least_vulnerable": listed(least),
        "evaluation": None,
        "epsilon_lower_bound": None,
    }
    for key in ("train_accuracy", "test_accuracy"):
        if key in a and m_used:
            results[key] = float(np.mean(a[key][a["model_used"]]))

    tp, fn, fp, tn = (int(v) for v in per_model.sum(0))
    if has_eval and tp + fn + fp + tn:
        results["evaluation"] = _pooled_evaluation(
            per_model, settings.confidence, expected_fp if expected_known else None
        )
        n_models = results["evaluation"]["n_models"]
        if n_models < MIN_EVAL_MODELS:
            warnings.append(
                f"only {n_models} evaluation models: the pooled intervals and the epsilon "
                "bound take the model as the unit (one model's decisions on different "
                f"targets are not independent), and below {MIN_EVAL_MODELS} models they are "
                "wide and their coverage rough; raise eval_models"
            )
        if tp + fn and fp + tn:
            results["epsilon_lower_bound"] = _pooled_epsilon(per_model, settings)
    else:
        warnings.append(
            "no evaluation models (eval_models: 0, or none used): realised TPR/FPR and the "
            "epsilon lower bound need eval_models >= 1"
        )
    results["warnings"] = warnings
    return results, rows


AUC_INTERVAL_METHOD = (
    "per target, two-sided at confidence: Clopper-Pearson on the binomial equivalent of "
    "the Mann-Whitney statistic, AUC x m successes in m = 3 l_in l / (l_in + l + 1) trials "
    "(attack.metrics.auc_interval); conservative towards AUC 0 and 1"
)


def _auc_intervals(rows: list[dict], confidence: float) -> None:
    """Fills auc_ci_low and auc_ci_high of every row with statistics (one vectorised call)."""
    have = [i for i, r in enumerate(rows) if r.get("auc") is not None]
    if not have:
        return
    lo, hi = metrics.auc_interval(
        [rows[i]["auc"] for i in have],
        [rows[i]["n_member"] for i in have],
        [rows[i]["n_nonmember"] for i in have],
        confidence,
    )
    for i, a, b in zip(have, lo.tolist(), hi.tolist(), strict=True):
        rows[i]["auc_ci_low"], rows[i]["auc_ci_high"] = a, b


def _decision(summary: dict) -> Decision:
    """The ``Decision`` an attack summary reports, rebuilt from its numbers (exactly:
    the threshold is the cut, negated for the loss; the lira rule's fits are the
    summary's ``lira_rule`` fits, the rule's own)."""
    score, rule, threshold = summary["score"], summary["threshold_rule"], summary["threshold"]
    if threshold is None:
        return Decision(score, rule, math.inf)
    if rule != "lira":
        cut = float(scores.to_attack(threshold, score))
        return Decision(score, rule, cut, summary["k"])
    own = summary["lira_rule"]
    member, nonmember = (
        GaussianFit(own[who]["mean"], own[who]["std"]) for who in ("member_fit", "nonmember_fit")
    )
    return Decision(score, rule, float(threshold), summary["k"], member, nonmember)


_UNIT = (
    "with the evaluation model as the unit: the rate pooled over targets and models, "
    "and a cluster-robust interval over the models (attack.metrics.rate_over_models: "
    "ratio-estimator sandwich on the logit scale with t_{E-1}, never narrower than "
    "Clopper-Pearson on the pooled counts, exact at a rate of 0 or 1), since one model's "
    "decisions on different targets are not independent"
)


def _pooled_evaluation(per_model: np.ndarray, confidence: float, expected_fp) -> dict:
    """The evaluation pooled over targets, from int[E, 4] counts (TP, FN, FP, TN) per model."""
    tp, fn, fp, tn = (int(v) for v in per_model.sum(0))
    n_mem, n_non = tp + fn, fp + tn
    n_in, n_out = per_model[:, 0] + per_model[:, 1], per_model[:, 2] + per_model[:, 3]
    tpr, tpr_lo, tpr_hi = metrics.rate_over_models(per_model[:, 0], n_in, confidence)
    fpr, fpr_lo, fpr_hi = metrics.rate_over_models(per_model[:, 2], n_out, confidence)
    return {
        "n_decisions": n_mem + n_non,
        "n_member": n_mem,
        "n_nonmember": n_non,
        "n_models": int(np.count_nonzero(n_in + n_out)),
        "true_positives": tp,
        "false_negatives": fn,
        "false_positives": fp,
        "true_negatives": tn,
        "tpr": tpr,
        "tpr_ci": [tpr_lo, tpr_hi] if n_mem else None,
        "fpr": fpr,
        "fpr_ci": [fpr_lo, fpr_hi] if n_non else None,
        "accuracy": (tp + tn) / (n_mem + n_non),
        "expected_fpr": expected_fp / n_non if expected_fp is not None and n_non else None,
        "confidence": confidence,
        "unit": "evaluation model",
        "method": "each target's own threshold applied to its evaluation models' scores; "
        f"counts pooled over targets; two-sided intervals {_UNIT}",
    }


def _pooled_epsilon(per_model: np.ndarray, settings: Settings) -> dict:
    """The ε lower bound (Jagielski et al. 2020) from upper bounds on the pooled FPR and FNR,
    each one-sided at 1 - (1 - confidence)/2 with the evaluation model as the unit."""
    conf, delta = settings.confidence, float(settings.delta)
    bounds.epsilon_lower_bound(0, 1, 0, 1, confidence=conf, delta=delta)  # validates both
    n_in, n_out = per_model[:, 0] + per_model[:, 1], per_model[:, 2] + per_model[:, 3]
    fpr_ub = metrics.rate_over_models(per_model[:, 2], n_out, conf)[2]
    fnr_ub = metrics.rate_over_models(per_model[:, 1], n_in, conf)[2]
    value = float(bounds.epsilon_from_upper_bounds(fpr_ub, fnr_ub, delta))
    reverse = float(bounds.epsilon_from_upper_bounds(fnr_ub, fpr_ub, delta))
    return {
        "value": value,
        "symmetric": max(value, reverse),
        "fpr_upper": fpr_ub,
        "fnr_upper": fnr_ub,
        "confidence": conf,
        "delta": delta,
        "unit": "evaluation model",
        "method": "log((1 - delta - FNR_ub) / FPR_ub) (Jagielski et al. 2020) on the decisions "
        "pooled over targets and evaluation models, each bound one-sided at "
        f"1 - (1 - confidence)/2, {_UNIT}",
    }


# ---------------------------------------------------------------- targets.csv


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return str(v)


def write_targets_csv(path, rows: list[dict]) -> Path:
    """Writes ``rows`` to ``path`` (targets.csv) atomically: a header of every key, in the
    order of first appearance, then one line per target; None is an empty cell, floats
    are written in full (repr), so ``read_targets_csv`` gives the rows back exactly."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    return fileio.atomic_write_text(path, buf.getvalue())


def _parse(column: str, text: str):
    if text == "":
        return None
    if column in _TEXT_COLUMNS:
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_targets_csv(path) -> list[dict]:
    """The rows of a targets.csv: ints, floats, None for empty cells, labels as text."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        columns = next(reader)
        return [dict(zip(columns, map(_parse, columns, line), strict=True)) for line in reader]


# ---------------------------------------------------------------- figures


def pooled_roc(arrays, score: str) -> dict:
    """Two ROCs of the calibration models, pooled over targets (attack scale, high = member).

    own:    each target its own threshold, at the FPR it promises on fresh models: for a
            target with l OUT models the cut s_(k+1) (k + 1 OUT models at or beyond it)
            has expected held-out FPR (k+1)/(l+1) (Beta(k+1, l-k)); at each f of the grid
            ``fpr`` the curve is the mean over targets of the TPR of the most powerful cut
            whose expected held-out FPR is at most f (k = floor(f (l+1)) - 1: the
            ``conformal`` rule at alpha = f), 0 where no cut promises that little.  Plotted
            at its calibration FPR k/l instead, the curve overstated what the cuts do on
            fresh models (issue 17: TPR 0.48 at FPR <= 0.0625 for cuts whose expected
            held-out FPR was 0.111, and 0.172 realised).
    global: one threshold for every target: the ROC of all (model, target) scores at once
            (``metrics.roc`` of the pooled IN and OUT scores).

    Returns:
      {"fpr": float64[G], "own_tpr": float64[G], "global_fpr", "global_tpr",
       "min_nonmember": the fewest OUT models of a target, "lo": the smallest non-zero
       FPR either curve has}
    """
    s = target_scores(arrays, score)
    stat = scores.to_attack(s["calibration"], score)
    member = s["membership"]
    n_targets = member.shape[1]
    n_in = member.sum(0)
    n_out = member.shape[0] - n_in
    ok = (n_in > 0) & (n_out > 0)
    l_max = int(n_out[ok].max()) if ok.any() else 1
    # Every held-out FPR (k+1)/(l+1) of every target is a point of the grid, and a
    # geometric grid between them, so the staircase is drawn exactly.
    steps = [(np.arange(1, int(n) + 2) / (int(n) + 1)) for n in np.unique(n_out[ok])]
    grid = np.unique(np.concatenate([np.geomspace(1.0 / (l_max + 1), 1.0, 200), *steps, [1.0]]))
    own = np.zeros(grid.size)
    count = 0
    for t in range(n_targets):
        if not ok[t]:
            continue
        s_in, s_out = _column(stat, member, t)
        s_out = np.sort(s_out)[::-1]  # most member-like first: s_(1) >= s_(2) >= ...
        n = s_out.size
        cuts = np.append(s_out, -np.inf)  # cut s_(k+1) for k = 0 .. n
        tpr_k = (s_in[None, :] > cuts[:, None]).mean(1)
        # The largest k with (k+1)/(n+1) <= f (a hair of slack for the grid's rounding).
        k = np.floor(grid * (n + 1) + 1e-9).astype(np.int64) - 1
        own += np.where(k >= 0, tpr_k[k.clip(0, n)], 0.0)
        count += 1
    own = own / max(count, 1)
    pooled_in = stat[member & ok[None, :]]
    pooled_out = stat[~member & ok[None, :]]
    if pooled_in.size and pooled_out.size:
        g_fpr, g_tpr, _ = metrics.roc(pooled_in, pooled_out)
    else:
        g_fpr = g_tpr = np.zeros(0)
    positive = [grid[0], *g_fpr[g_fpr > 0], *g_tpr[g_tpr > 0], *own[own > 0]]
    return {
        "fpr": grid,
        "own_tpr": own,
        "global_fpr": g_fpr,
        "global_tpr": g_tpr,
        "min_nonmember": int(n_out[ok].min()) if ok.any() else 0,
        "lo": float(min(positive)),
    }


# ---------------------------------------------------------------- DP-SGD audit


def privacy_audit(arrays, mech, settings: Settings) -> tuple[dict, list[str]]:
    """results.json's ``privacy`` block of a DP-SGD run of many targets, and its warnings.

    Per noise level: the accountant's ε (privacy.privacy_block) and Steinke et
    al.'s one-run ε_lb of each evaluation model at that level
    (attack.audit.one_run_audit, the targets standardised by the calibration
    models of the same level), never pooled over models; the ratios are the
    median's and the simultaneous maximum's to the accountant's PLD ε.
    """
    from jaxmia import privacy

    a = check_targets_arrays(arrays)
    block, warnings = privacy.privacy_block(mech, settings.confidence)
    m, e = a["membership"].shape[0], a["eval_membership"].shape[0]
    sig = np.asarray(arrays.get("noise_multiplier", np.zeros(m)), np.float32).reshape(m)
    ev_sig = np.asarray(arrays.get("eval_noise_multiplier", np.zeros(e)), np.float32).reshape(e)

    def stat(prefix):
        native = scores.from_outputs(settings.score, a[f"{prefix}logits"], a["target_labels"])
        return scores.to_attack(native, settings.score)

    cal_stat, ev_stat = stat(""), stat("eval_")
    for level in block["levels"]:
        at = np.float32(level["noise_multiplier"])
        cal = a["model_used"] & (sig == at)
        ev = a["eval_model_used"] & (ev_sig == at)
        level["models_used"] = int(cal.sum())
        level["eval_models_used"] = int(ev.sum())
        level["empirical"] = None
        if not ev.any():
            warnings.append(
                f"noise_multiplier {at:g}: no evaluation model, so no one-run epsilon "
                "(raise eval_models)"
            )
            continue
        if not cal.any():
            warnings.append(f"noise_multiplier {at:g}: no calibration model to standardise on")
            continue
        audit = one_run_audit(
            ev_stat[ev],
            a["eval_membership"][ev],
            cal_stat[cal],
            a["membership"][cal],
            confidence=settings.confidence,
            delta=mech.delta,
        )
        for model, entry in zip(np.flatnonzero(ev).tolist(), audit["per_model"], strict=True):
            entry["model"] = model
        pld = level["epsilon"]["pld"]
        audit["ratio_median"] = privacy.ratio(audit["median"], pld)
        audit["ratio_max_simultaneous"] = privacy.ratio(audit["max_simultaneous"], pld)
        level["empirical"] = {"one_run": audit}
    block["score"] = settings.score
    block["method"] = (
        "one run (Steinke, Nasr, Jagielski 2023): each evaluation model is one training run "
        "whose T targets are canaries, each IN with probability 1/2 independently; the "
        "model's statistic on each target is standardised by that target's OUT calibration "
        "models at the same noise level, the k most member-like targets are guessed IN and "
        "the k least OUT (k on a grid, Bonferroni over it), and v right of 2k guesses reject "
        "every epsilon with P(Bin(2k, e^eps/(1+e^eps)) >= v) + delta term <= 1 - confidence; "
        "per model, never pooled; max_simultaneous holds for all models at once (Bonferroni "
        "over them)"
    )
    return block, warnings
