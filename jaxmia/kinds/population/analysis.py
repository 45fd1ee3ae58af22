"""The population attack (``experiment: population``) from its saved arrays: numbers and figures.

The PyTorch pipeline's general MIA (``experiments/run_mia.py``). Each repetition r
trains one *target model* on a member set of n training points; an equally sized
non-member set is drawn from the rest of the training set. Every member and
non-member is scored under that model, and two rules say "member":

* the **alpha rule**: ``settings.threshold_rule`` (``empirical``, the pipeline's, by
  default) on ``settings.score``, chosen on this model's n non-members at FPR alpha;
  its TPR and FPR are counted on the same members and non-members (in-sample, as the
  pipeline reports them);
* the **Yeom rule** (Yeom et al. 2018), always on the loss: t_Y = the model's mean
  training loss, the mean loss of its n members; member iff loss < t_Y (strict).

Host side only (numpy, scipy, matplotlib; JAX stops before this module). The run
calls it on the arrays it has just assembled, ``jaxmia analyze`` on the arrays a
run folder kept (``population.npz``).

The arrays it reads are described (and checked) in kinds/population/arrays.py.
"""

from __future__ import annotations

import math

import numpy as np

from jaxmia.attack import metrics, scores, thresholds
from jaxmia.attack.summary import Settings
from jaxmia.errors import NothingToAnalyse
from jaxmia.kinds.population.arrays import MIN_SIZES, SCHEMA
from jaxmia.runs import schema

__all__ = [
    "SUMMARY_METRICS",
    "check_population_arrays",
    "left_out",
    "population_results",
    "population_scores",
    "summary_bounds",
    "repetition_metrics",
    "used_repetitions",
    "yeom_rule",
]

# The per-repetition numbers summarised across repetitions: (path in the per-repetition
# dict, whether it is a rate in [0, 1], so that its interval is clipped there).
SUMMARY_METRICS = (
    (("auc",), True),
    (("balanced_accuracy",), True),
    (("average_precision",), True),
    *((("tpr_at_fpr", f"{f:g}"), True) for f in metrics.TPR_AT_FPR_LEVELS),
    (("alpha_rule", "threshold"), False),
    (("alpha_rule", "tpr"), True),
    (("alpha_rule", "fpr"), True),
    (("alpha_rule", "expected_heldout_fpr"), True),
    (("yeom", "threshold"), False),
    (("yeom", "tpr"), True),
    (("yeom", "fpr"), True),
    (("yeom", "accuracy"), True),
    (("yeom", "advantage"), False),
    (("member_loss_mean",), False),
    (("nonmember_loss_mean",), False),
    (("train_accuracy",), True),
    (("test_accuracy",), True),
    (("generalization_gap",), False),
)

# Summaries on the loss scale, which has no value below 0: their intervals stop there
# (the alpha rule's threshold too when the rule cuts the loss itself).
_LOSSES = (("yeom", "threshold"), ("member_loss_mean",), ("nonmember_loss_mean",))


def summary_bounds(path: tuple, is_rate: bool, settings: Settings):
    """(lo, hi) an entry's interval is clipped to: [0, 1] for a rate, [0, inf) for a loss,
    None for a value of any sign (a threshold on φ or on the log likelihood ratio)."""
    if is_rate:
        return (0.0, 1.0)
    loss_cut = settings.score == "loss" and settings.threshold_rule != "lira"
    if path in _LOSSES or (path == ("alpha_rule", "threshold") and loss_cut):
        return (0.0, math.inf)
    return None


INTERVAL_METHOD = (
    "Student t over the repetitions: mean ± t_{(1+confidence)/2, R-1} · s / sqrt(R), s the "
    "sample std (ddof 1) of the R values; intervals of rates clipped to [0, 1], of losses "
    "to [0, inf)"
)


# ---------------------------------------------------------------- the arrays


def check_population_arrays(arrays, sizes: dict | None = None) -> tuple[int, int]:
    """Checks the arrays' keys, shapes, values and row sets; returns (R, n).

    ``sizes``: symbol sizes known from run.json (C, n), which the arrays must agree with.

    Raises:
      ValueError: a missing key, a shape that does not fit the others, values out of
        range, a used model's non-finite output, or a repetition whose member and
        non-member rows are not 2n distinct training indices (the attack would compare
        a point with itself).
    """
    sizes = schema.check(arrays, SCHEMA, sizes, minimum=MIN_SIZES)
    r, n = sizes["R"], sizes["n"]
    saved = [f"{who}_{what}" for who in ("member", "nonmember") for what in ("losses", "logits")]
    outputs = schema.finite_rows(*(arrays[k] for k in saved), ndim=1)
    schema.check_flag(
        "model_used", arrays["model_used"], outputs, arrays.get("train_finite"), "train_finite"
    )
    rows = np.asarray(arrays["member_rows"])
    both = np.concatenate([rows, np.asarray(arrays["nonmember_rows"])], axis=1)
    for i in range(r):
        if np.unique(both[i]).size != 2 * n:
            raise ValueError(
                f"repetition {i}: member and non-member rows are not {2 * n} distinct indices"
            )
    return r, n


def used_repetitions(arrays) -> np.ndarray:
    """bool[R]: the model is used (``model_used``: its outputs are finite; the arrays'
    check refuses a used model whose outputs are not)."""
    return np.asarray(arrays["model_used"], bool).copy()


def left_out(arrays) -> list[str]:
    """The target models left out (outputs not finite), in words."""
    return [f"repetition {int(r)}, target model" for r in np.flatnonzero(~used_repetitions(arrays))]


def population_scores(arrays, score: str, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(member float64[n], non-member float64[n]): native ``score`` values under model r.

    Every score, the loss included, comes from the saved logits in float64
    (``attack.scores.from_outputs``).
    """
    out = []
    for who in ("member", "nonmember"):
        labels = np.asarray(arrays[f"{who}_labels"][r]).astype(np.int64)
        out.append(scores.from_outputs(score, arrays[f"{who}_logits"][r], labels))
    return out[0], out[1]


# ---------------------------------------------------------------- one repetition


def yeom_rule(member_loss, nonmember_loss) -> dict:
    """Yeom et al. (2018): member iff loss < t_Y, t_Y the mean loss of the members.

    Args:
      member_loss: float[n_m], losses of the model's training points (its members).
      nonmember_loss: float[n_n], losses of points it never saw.

    Returns:
      {decision, threshold, tpr, fpr, accuracy, advantage}: tpr = #{member < t_Y} / n_m,
      fpr = #{non-member < t_Y} / n_n, accuracy = (TP + TN) / (n_m + n_n), and Yeom's
      membership advantage tpr - fpr.
    """
    mem = scores.check_scores(member_loss, "member losses")
    non = scores.check_scores(nonmember_loss, "non-member losses")
    # Equal losses have exactly their value as mean (np.mean of 68 copies of 0.97648...
    # rounds one ulp above it, and the strict rule would then call every point a member).
    t = float(np.mean(mem)) if np.ptp(mem) > 0 else float(mem[0])
    tp = int(np.count_nonzero(mem < t))
    fp = int(np.count_nonzero(non < t))
    tpr, fpr = tp / mem.size, fp / non.size
    return {
        "decision": scores.decision_text("loss", t),
        "threshold": t,
        "tpr": tpr,
        "fpr": fpr,
        "accuracy": (tp + non.size - fp) / (mem.size + non.size),
        "advantage": tpr - fpr,
    }


def _heldout_method(decision: thresholds.Decision, n: int) -> str:
    """How ``thresholds.expected_heldout_fpr`` knows the alpha rule's FPR on fresh non-members."""
    if not math.isfinite(decision.cut):
        return "no point is ever called a member: the FPR is 0"
    if decision.k is not None:
        method = (
            "order statistic: FPR on fresh non-members ~ Beta(k+1, n-k) = "
            f"Beta({decision.k + 1}, {(decision.n_cut or n) - decision.k})"
        )
        if decision.rule == "lira":
            method += thresholds.lira_rule_note(decision, n)
        return method
    return "normal model of the non-member scores: Student t (mean), noncentral t"


def repetition_metrics(
    member, nonmember, member_loss, nonmember_loss, settings: Settings
) -> tuple[dict, list[str], str]:
    """Every number of one target model: (metrics, warnings, held-out FPR method).

    Args:
      member, nonmember: float[n_m], float[n_n] native ``settings.score`` values.
      member_loss, nonmember_loss: the same points' losses (for the Yeom rule).
      settings: alpha, score and threshold_rule are used.

    Returns:
      metrics: auc, balanced_accuracy, average_precision, tpr_at_fpr {"0.001", "0.01",
      "0.1": float or None}, alpha_rule {rule, decision, threshold, tpr, fpr, k,
      expected_heldout_fpr, expected_heldout_fpr_upper95, member_region (lira rule
      only)}, yeom (see ``yeom_rule``), member_loss_mean, nonmember_loss_mean.
    """
    score, rule, a = settings.score, settings.threshold_rule, settings.alpha
    mem = scores.check_scores(member, "member scores")
    non = scores.check_scores(nonmember, "non-member scores")
    s_mem, s_non = scores.to_attack(mem, score), scores.to_attack(non, score)
    n = int(non.size)

    decision, warnings = thresholds.choose_threshold(
        mem, non, alpha=a, rule=rule, score=score, variance=settings.lira_variance
    )
    with np.errstate(invalid="ignore"):
        tpr = float(np.count_nonzero(decision.statistic(mem) > decision.cut) / mem.size)
        fpr = float(np.count_nonzero(decision.statistic(non) > decision.cut) / n)
    exp_fpr, exp_upper = thresholds.expected_heldout_fpr(decision, non, a)
    method = _heldout_method(decision, n)
    if rule == "empirical" and exp_fpr > a:
        warnings.append(
            f"empirical: expected FPR on fresh non-members is (k+1)/(n+1) = {exp_fpr:.3g} > "
            f"alpha={a:g}; threshold_rule conformal or confident controls it"
        )
    if rule == "gaussian" and score == "loss" and (decision.threshold or 0.0) < 0:
        warnings.append(
            "gaussian: the fitted threshold is a negative loss: losses are skewed and >= 0, "
            "so no point is called a member; fit on score lira"
        )
    alpha_rule = {
        "rule": rule,
        "decision": decision.text(),
        "threshold": decision.threshold,
        "threshold_scale": "log likelihood ratio" if rule == "lira" else score,
        "tpr": tpr,
        "fpr": fpr,
        "k": decision.k,
        "expected_heldout_fpr": exp_fpr,
        "expected_heldout_fpr_upper95": exp_upper,
    }
    if rule == "lira":
        alpha_rule["member_region"] = (
            thresholds.likelihood_ratio_region(
                decision.member_fit, decision.nonmember_fit, decision.cut
            )
            if decision.member_fit is not None
            else None
        )

    tpr_at = {f"{f:g}": metrics.tpr_at_fpr(s_mem, s_non, f) for f in metrics.TPR_AT_FPR_LEVELS}
    ml = scores.check_scores(member_loss, "member losses")
    nl = scores.check_scores(nonmember_loss, "non-member losses")
    numbers = {
        "auc": metrics.auc(s_mem, s_non),
        "balanced_accuracy": metrics.balanced_accuracy(s_mem, s_non),
        "average_precision": metrics.average_precision(s_mem, s_non),
        "tpr_at_fpr": tpr_at,
        "alpha_rule": alpha_rule,
        "yeom": yeom_rule(ml, nl),
        "member_loss_mean": float(np.mean(ml)),
        "nonmember_loss_mean": float(np.mean(nl)),
    }
    return numbers, warnings, method


# ---------------------------------------------------------------- across repetitions


def _get(d: dict, path: tuple):
    for key in path:
        d = d[key]
    return d


def _put(d: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        d = d.setdefault(key, {})
    d[path[-1]] = value


def _which(reps: list[int], used: list[int]) -> str:
    if reps == used and len(used) > 1:
        return "every repetition"
    return ("repetition " if len(reps) == 1 else "repetitions ") + ", ".join(map(str, reps))


def _by_construction(summary: dict, per_rep: list[dict], n: int) -> None:
    """Replaces the t-intervals of the alpha rule's numbers that are not estimates.

    An order-statistic rule puts its cut so that at most k of the n non-members it was
    chosen on lie beyond it: the in-sample FPR is k/n (less on ties) in every
    repetition, and a t-interval over them reads [k/n, k/n], which says nothing about
    fresh non-members.  What does is the law of the held-out FPR (Beta(k+1, n-k) for
    those rules, Student t for the gaussian one), which depends on the rule, alpha and
    n alone: the same for every model, a law and not an estimate with a spread.
    """
    ks = {p["alpha_rule"]["k"] for p in per_rep}
    rule = summary["alpha_rule"]
    law = rule["expected_heldout_fpr"]
    law["ci"] = None
    lira = bool(per_rep) and per_rep[0]["alpha_rule"].get("rule") == "lira"
    if len(ks) == 1 and None not in ks:
        k = ks.pop()
        # The lira rule sets its cut on one part of the non-members and fits its
        # Gaussians on the rest (thresholds.lira_split): its order statistic, and so
        # its law, is over that part, and the FPR over all n is not fixed by k.
        n_cut = thresholds.lira_split(n)[0].size if lira else n
        if lira:
            rule["fpr"].update(
                ci=None,
                note=f"in sample: over all {n} non-members; the cut lets at most k = {k} of "
                f"the {n_cut} it was set on lie beyond it (the Gaussians were fitted on the "
                f"other {n - n_cut}); expected_heldout_fpr is the FPR on fresh non-members",
            )
        else:
            rule["fpr"].update(
                ci=None,
                note=f"in sample, by construction: the cut lets at most k = {k} of the {n} "
                "non-members it was chosen on lie beyond it; expected_heldout_fpr is the FPR "
                "on fresh non-members",
            )
        law["note"] = (
            f"the law of the held-out FPR, Beta(k+1, n-k) = Beta({k + 1}, {n_cut - k})"
            + (f" over the {n_cut} non-members the cut was set on" if lira else "")
            + ", the same for every model (its 95% quantile: per_repetition's "
            "expected_heldout_fpr_upper95)"
        )
    else:
        rule["fpr"]["note"] = "in sample: on the non-members the threshold was fitted on"
        law["note"] = (
            "what the rule promises on fresh non-members (see expected_heldout_fpr_method), "
            "set by the rule, alpha and n: not an estimate with a spread over models"
        )


def population_results(arrays, settings: Settings) -> dict:
    """Every statistic of a population run, JSON-ready, from its arrays alone.

    Returns a dict with:
      experiment ("population"), score, threshold_rule, alpha, confidence;
      repetitions (R), repetitions_used, repetitions_left_out (list of r);
      n_member, n_nonmember (n each), prevalence (0.5);
      per_repetition: one dict per used model, ``repetition_metrics``'s keys plus
        repetition, train_accuracy, test_accuracy, generalization_gap (train - test);
      summary: the same layout, each number replaced by ``metrics.t_interval``'s
        {mean, std, ci, n, note} over the used repetitions (SUMMARY_METRICS);
      interval_method, expected_heldout_fpr_method, yeom_rule (the rule in words);
      warnings: one line each for what the data cannot support.

    Raises:
      ValueError: malformed arrays (``check_population_arrays``) or settings.
      NothingToAnalyse: no model with finite outputs is left (a UserError).
    """
    scores.get(settings.score)
    thresholds.check_rule(settings.threshold_rule)
    conf = float(settings.confidence)
    if not 0.0 < conf < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {settings.confidence!r}")
    n_rep, n = check_population_arrays(arrays)
    k_alpha = thresholds.order_statistic_k("empirical", n, settings.alpha)  # also checks alpha
    ok = used_repetitions(arrays)
    used = [int(r) for r in np.flatnonzero(ok)]
    dropped = [int(r) for r in np.flatnonzero(~ok)]
    if not used:
        raise NothingToAnalyse(f"no target model has finite outputs (0 of {n_rep} used)")

    warnings: list[str] = []
    if dropped:
        warnings.append(
            f"{_which(dropped, [])} left out: the target model's losses were not finite "
            f"({len(used)} of {n_rep} repetitions used)"
        )
    if len(used) == 1:
        warnings.append(
            "one repetition: the summary gives means without intervals (repetitions >= 2)"
        )
    for f in metrics.TPR_AT_FPR_LEVELS:
        if thresholds.order_statistic_k("empirical", n, f) == 0:
            warnings.append(
                f"TPR at FPR {f:g} not resolvable: needs n >= {math.ceil(1.0 / f - 1e-9)} "
                f"non-members per model, have {n}; null"
            )
    if k_alpha == 0:
        warnings.append(
            f"floor(alpha*n) = 0 (alpha={settings.alpha:g}, n={n}): no FPR below "
            f"1/n={1.0 / n:.3g} can be measured on one model's non-members"
        )

    per_rep, rule_warnings, method = [], {}, None
    train_acc = np.asarray(arrays["train_accuracy"], np.float64)
    test_acc = np.asarray(arrays["test_accuracy"], np.float64)
    for r in used:
        mem, non = population_scores(arrays, settings.score, r)
        ml, nl = population_scores(arrays, "loss", r)
        numbers, w, method = repetition_metrics(mem, non, ml, nl, settings)
        for line in w:
            rule_warnings.setdefault(line, []).append(r)
        tr, te = float(train_acc[r]), float(test_acc[r])
        per_rep.append(
            {
                "repetition": r,
                **numbers,
                "train_accuracy": tr if math.isfinite(tr) else None,
                "test_accuracy": te if math.isfinite(te) else None,
                "generalization_gap": tr - te if math.isfinite(tr - te) else None,
            }
        )
    for line, reps in rule_warnings.items():
        warnings.append(f"{line} ({_which(reps, used)})")

    summary: dict = {}
    for path, is_rate in SUMMARY_METRICS:
        values = [_get(p, path) for p in per_rep]
        bounds = summary_bounds(path, is_rate, settings)
        _put(summary, path, metrics.t_interval(values, conf, bounds=bounds))
    _by_construction(summary, per_rep, n)

    return {
        "experiment": "population",
        "score": settings.score,
        "threshold_rule": settings.threshold_rule,
        "alpha": float(settings.alpha),
        "confidence": conf,
        "repetitions": n_rep,
        "repetitions_used": len(used),
        "repetitions_left_out": dropped,
        "n_member": n,
        "n_nonmember": n,
        "prevalence": 0.5,
        "yeom_rule": "member iff loss < the target model's mean loss over its n members",
        "interval_method": INTERVAL_METHOD,
        "expected_heldout_fpr_method": method,
        "summary": summary,
        "per_repetition": per_rep,
        "warnings": warnings,
    }


# ---------------------------------------------------------------- figures
