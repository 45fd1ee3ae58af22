"""Every number of the attack on one target, JSON-ready: the single-target results.json.

``summarize`` chooses the threshold on the calibration models (``thresholds``),
says what it promises on fresh models, measures the score itself (``metrics``),
applies the decision to the evaluation models (``evaluate_decision``) and bounds
ε from their errors (``bounds``). The many-targets analysis calls it per target.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats as sps

from jaxmia.attack import bounds, metrics, scores, thresholds
from jaxmia.attack.thresholds import Decision

__all__ = ["Settings", "evaluate_decision", "summarize", "summarize_targets"]


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the statistics are asked for (the config keys of the same names).

    Attributes:
      alpha: the FPR asked for, in (0, 1).
      score: a key of scores.SCORES.
      threshold_rule: one of thresholds.RULES.
      delta, confidence: of the ε lower bound, and the level of the intervals.
      lira_variance: the ``lira`` rule's variance (thresholds.VARIANCES).
    """

    alpha: float
    score: str = "loss"
    threshold_rule: str = "empirical"
    delta: float = 0.0
    confidence: float = 0.95
    lira_variance: str = "auto"

    @classmethod
    def from_config(cls, cfg) -> Settings:
        """The settings of a ``jaxmia.config.Config`` (any object with these attributes)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


def _eval_array(x, name: str) -> np.ndarray:
    if x is None:
        return np.zeros(0)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def evaluate_decision(
    decision: Decision, eval_member, eval_nonmember, *, confidence: float = 0.95, items=True
) -> dict | None:
    """Applies ``decision`` to the evaluation models' native scores and counts its errors.

    Args:
      decision: from ``thresholds.choose_threshold`` on the calibration models.
      eval_member: float[E_in]; eval_nonmember: float[E_out] native scores (None:
        no models; NaN: no prediction for that model).
      confidence: level of the two-sided Clopper-Pearson intervals, in (0, 1).
      items: include the per-model list.

    Returns:
      None when there is no evaluation model, else a JSON-ready dict: n_member,
      n_nonmember, n_undecided, true_positives, false_negatives, false_positives,
      true_negatives, tpr, tpr_ci, fpr, fpr_ci (None without models of that kind),
      accuracy, confidence, and items: [{member, score, predicted_member, correct}]
      (also ``loss`` for the loss score), IN and OUT interleaved pair by pair.

    Raises:
      ValueError: an evaluation array that is not 1-D; confidence outside (0, 1).
    """
    em = _eval_array(eval_member, "eval member scores")
    en = _eval_array(eval_nonmember, "eval non-member scores")
    if em.size + en.size == 0:
        return None
    conf = thresholds.check_probability(confidence, "confidence")
    pm, pn = decision.predict(em), decision.predict(en)
    dm, dn = ~np.isnan(em), ~np.isnan(en)
    tp, fn = int(np.count_nonzero(pm & dm)), int(np.count_nonzero(~pm & dm))
    fp, tn = int(np.count_nonzero(pn & dn)), int(np.count_nonzero(~pn & dn))
    n_mem, n_non = tp + fn, fp + tn
    out = {
        "n_member": n_mem,
        "n_nonmember": n_non,
        "n_undecided": int(em.size + en.size - n_mem - n_non),
        "true_positives": tp,
        "false_negatives": fn,
        "false_positives": fp,
        "true_negatives": tn,
        "tpr": tp / n_mem if n_mem else None,
        "tpr_ci": list(metrics.clopper_pearson(tp, n_mem, conf)) if n_mem else None,
        "fpr": fp / n_non if n_non else None,
        "fpr_ci": list(metrics.clopper_pearson(fp, n_non, conf)) if n_non else None,
        "accuracy": (tp + tn) / (n_mem + n_non) if n_mem + n_non else None,
        "confidence": conf,
    }
    if items:
        rows = []
        for is_member, vals, preds in ((True, em, pm), (False, en, pn)):
            for i, (v, p) in enumerate(zip(vals.tolist(), preds.tolist(), strict=True)):
                decided = not math.isnan(v)
                row = {
                    "member": is_member,
                    "score": v if decided else None,
                    "predicted_member": bool(p) if decided else None,
                    "correct": (bool(p) == is_member) if decided else None,
                }
                if decision.score == "loss":
                    row["loss"] = row["score"]
                rows.append((i, not is_member, row))
        out["items"] = [row for _, _, row in sorted(rows, key=lambda t: (t[0], t[1]))]
    return out


def _shapiro_p(values: np.ndarray) -> float | None:
    """The Shapiro-Wilk p-value of ``values``; None for fewer than 3 or no spread.

    W does not change under a shift and a scale, but scipy's swilk calls a range
    below 1e-19 zero (a UserWarning, and p = 1): confident models' losses reach that.
    Such values are scaled to a unit range first; others go in as they are."""
    if values.size < 3 or np.ptp(values) == 0:
        return None
    values = np.asarray(values, np.float64)
    spread = np.ptp(values)
    if spread < 1e-6:  # far above swilk's floor, far below any spread it rounds
        values = (values - np.median(values)) / spread
    return float(sps.shapiro(values).pvalue)


def summarize(
    member,
    nonmember,
    *,
    eval_member=None,
    eval_nonmember=None,
    alpha: float,
    rule: str = "empirical",
    score: str = "loss",
    delta: float = 0.0,
    confidence: float = 0.95,
    items: bool = True,
    lira_variance: str = "auto",
    more_models: str = "n_iterations",
) -> dict:
    """Every number of the attack on one target, JSON-ready, for results.json.

    Args:
      member, nonmember: float[l_in], float[l] native scores (``score``'s own scale) of
        the calibration IN and OUT models; finite.
      eval_member, eval_nonmember: float[E_in], float[E_out] native scores of the
        evaluation models (None or empty: none; NaN: no prediction for that model).
      alpha: the FPR asked for, in (0, 1).
      rule: one of thresholds.RULES; score: a key of scores.SCORES.
      delta, confidence: of the ε lower bound (and the evaluation intervals).
      items: include the per-model evaluation list (off for many-target runs).
      lira_variance: the ``lira`` rule's variance (thresholds.choose_threshold).
      more_models: the config key that adds calibration models, for the warning when
        there is only one on a side.

    Returns:
      dict of floats, ints, None, strings, lists and dicts (no numpy, no NaN). See the
      README's method section for every key; ``warnings`` lists in one line each what
      the data cannot support.

    Raises:
      ValueError: calibration scores not 1-D, non-empty and finite; alpha, confidence,
        delta, rule or score invalid.
    """
    scores.get(score)
    thresholds.check_rule(rule)
    a = thresholds.check_probability(alpha)
    conf = thresholds.check_probability(confidence, "confidence")
    mem = scores.check_scores(member, "member scores")
    non = scores.check_scores(nonmember, "non-member scores")
    s_mem, s_non = scores.to_attack(mem, score), scores.to_attack(non, score)
    n = int(non.size)
    warnings: list[str] = []
    if mem.size == 1 or n == 1:
        warnings.append(
            f"only {min(mem.size, n)} calibration model(s) on one side: power, AUC and std "
            f"carry no information (raise {more_models})"
        )
    if thresholds.order_statistic_k("empirical", n, a) == 0:
        warnings.append(
            f"floor(alpha*l) = 0 (alpha={a:g}, l={n}): no FPR below 1/l={1.0 / n:.3g} can be "
            "measured on these models"
            + (
                "; the threshold is the most member-like non-member score"
                if rule == "empirical"
                else ""
            )
        )

    decision, rule_warnings = thresholds.choose_threshold(
        mem, non, alpha=a, rule=rule, score=score, variance=lira_variance
    )
    warnings += rule_warnings
    if rule == "lira" and decision.k == 0:
        l_c = decision.n_cut
        warnings.append(
            f"lira: floor(alpha*l_c) = 0 (alpha={a:g}, l_c={l_c} of the {n} non-member models "
            "set the cut, the others fit the Gaussians): the threshold is the most "
            f"member-like of them, expected held-out FPR 1/(l_c+1) = {1 / (l_c + 1):.3g}"
        )
    stat_mem, stat_non = decision.statistic(mem), decision.statistic(non)
    with np.errstate(invalid="ignore"):
        power = float(np.count_nonzero(stat_mem > decision.cut) / mem.size)
        cal_fpr = float(np.count_nonzero(stat_non > decision.cut) / n)

    # What the threshold promises on fresh models.
    exp_fpr, exp_upper = thresholds.expected_heldout_fpr(decision, non, a)
    if not math.isfinite(decision.cut):
        method = "no member is ever called: the FPR is 0"
    elif decision.k is not None:
        l_cut = decision.n_cut or n
        method = (
            "order statistic: held-out FPR ~ Beta(k+1, l-k) = "
            f"Beta({decision.k + 1}, {l_cut - decision.k})"
        )
        if rule == "lira":
            method += thresholds.lira_rule_note(decision, n)
        if rule == "empirical" and exp_fpr > a:
            warnings.append(
                f"empirical: expected FPR on fresh models is (k+1)/(l+1) = {exp_fpr:.3g} > "
                f"alpha={a:g}; threshold_rule conformal or confident controls it"
            )
        if rule == "lira" and exp_fpr > a:
            warnings.append(
                f"lira: expected FPR on fresh models is (k+1)/(l_c+1) = {exp_fpr:.3g} > "
                f"alpha={a:g} (the cut is set on l_c={l_cut} of the {n} non-member models)"
            )
    else:  # gaussian
        method = "normal model of the non-member scores: Student t (mean), noncentral t (upper)"

    # Metrics of the score itself (its ROC), on the calibration models.
    tpr_at = {}
    for f in metrics.TPR_AT_FPR_LEVELS:
        v = metrics.tpr_at_fpr(s_mem, s_non, f)
        tpr_at[f"{f:g}"] = v
        if v is None:
            warnings.append(
                f"TPR at FPR {f:g} not resolvable: needs l >= {math.ceil(1.0 / f - 1e-9)} "
                f"non-member models, have {n}"
            )

    m_fit, n_fit = thresholds.fit_gaussian(mem), thresholds.fit_gaussian(non)
    for fit, who in ((m_fit, "member"), (n_fit, "non-member")):
        if fit.std == 0 and (mem.size > 1 and n > 1):
            warnings.append(f"the {who} {score} scores have std 0: every model gave the same value")
    g_decision, _ = thresholds.choose_threshold(mem, non, alpha=a, rule="gaussian", score=score)
    s_m_fit = thresholds.fit_gaussian(s_mem)
    if s_m_fit.std > 0:
        g_power = float(sps.norm.sf((g_decision.cut - s_m_fit.mean) / s_m_fit.std))
    else:
        g_power = 1.0 if s_m_fit.mean > g_decision.cut else 0.0
    if rule == "gaussian" and score == "loss" and (decision.threshold or 0.0) < 0:
        warnings.append(
            f"gaussian: the fitted threshold is a negative loss ({decision.threshold:.3g}): "
            "losses are skewed and >= 0, so no model is called a member; fit on score lira"
        )
    shapiro = {"member": _shapiro_p(mem), "nonmember": _shapiro_p(non)}
    if rule in ("gaussian", "lira") and shapiro["nonmember"] is not None:
        if shapiro["nonmember"] < 0.01:
            warnings.append(
                f"{rule}: the non-member {score} scores do not look normal (Shapiro-Wilk p = "
                f"{shapiro['nonmember']:.2g}); the Gaussian threshold's FPR is unreliable"
            )

    # Evaluation models and the epsilon lower bound.
    evaluation = evaluate_decision(
        decision, eval_member, eval_nonmember, confidence=conf, items=items
    )
    eps = {
        "value": None,
        "symmetric": None,
        "confidence": conf,
        "delta": float(delta),
        "method": "Clopper-Pearson (Jagielski et al. 2020): log((1 - delta - FNR_ub) / FPR_ub) "
        "on the evaluation models, each bound one-sided at 1 - (1 - confidence)/2",
        "fpr_upper": None,
        "fnr_upper": None,
        "max_over_calibration_thresholds": None,
    }
    ev_ok = evaluation is not None and evaluation["n_member"] and evaluation["n_nonmember"]
    if ev_ok:
        e, e_sym, fpr_ub, fnr_ub = bounds.epsilon_lower_bound(
            evaluation["false_positives"],
            evaluation["n_nonmember"],
            evaluation["false_negatives"],
            evaluation["n_member"],
            confidence=conf,
            delta=delta,
        )
        eps.update(value=float(e), symmetric=float(e_sym), fpr_upper=float(fpr_ub))
        eps["fnr_upper"] = float(fnr_ub)
        eps["max_over_calibration_thresholds"] = _epsilon_best_calibration_cut(
            decision, stat_mem, stat_non, eval_member, eval_nonmember, conf, float(delta)
        )
    else:
        bounds.epsilon_lower_bound(0, 1, 0, 1, confidence=conf, delta=delta)  # validates delta
        warnings.append(
            "no evaluation models of both kinds: realised TPR/FPR and the epsilon lower "
            "bound need eval_pairs >= 1"
        )

    out = {
        "score": score,
        "threshold_rule": rule,
        "alpha": a,
        "decision": decision.text(),
        "threshold": decision.threshold,
        "threshold_scale": thresholds.LR_SCALE if rule == "lira" else score,
        "member_region": (
            thresholds.likelihood_ratio_region(
                decision.member_fit, decision.nonmember_fit, decision.cut
            )
            if rule == "lira" and decision.member_fit is not None
            else None
        ),
        "lira_rule": _lira_rule(decision, n) if rule == "lira" else None,
        "calibration_fpr": cal_fpr,
        "fpr": cal_fpr,
        "power": power,
        "k": decision.k,
        "n_member": int(mem.size),
        "n_nonmember": n,
        "expected_heldout_fpr": exp_fpr,
        "expected_heldout_fpr_upper95": exp_upper,
        "expected_heldout_fpr_method": method,
        "auc": metrics.auc(s_mem, s_non),
        "balanced_accuracy": metrics.balanced_accuracy(s_mem, s_non),
        "tpr_at_fpr": tpr_at,
        "evaluation": evaluation,
        "epsilon_lower_bound": eps,
        "gaussian_fits": {
            "scale": score,
            "member": {"mean": m_fit.mean, "std": m_fit.std, "shapiro_p": shapiro["member"]},
            "nonmember": {"mean": n_fit.mean, "std": n_fit.std, "shapiro_p": shapiro["nonmember"]},
        },
        "gaussian_threshold": g_decision.threshold,
        "gaussian_power": g_power,
        "member_score_mean": m_fit.mean,
        "member_score_std": m_fit.std,
        "nonmember_score_mean": n_fit.mean,
        "nonmember_score_std": n_fit.std,
    }
    if score == "loss":
        out.update(
            member_loss_mean=m_fit.mean,
            member_loss_std=m_fit.std,
            nonmember_loss_mean=n_fit.mean,
            nonmember_loss_std=n_fit.std,
        )
    out["warnings"] = warnings
    return out


def _lira_rule(decision: Decision, n: int) -> dict:
    """The ``lira`` rule's own fits (not ``gaussian_fits``, which use every model) and split."""

    def fit(f):
        return None if f is None else {"mean": f.mean, "std": f.std}

    return {
        "variance": decision.variance,
        "member_fit": fit(decision.member_fit),
        "nonmember_fit": fit(decision.nonmember_fit),
        "fit_nonmembers": n - decision.n_cut if decision.n_cut else None,
        "cut_nonmembers": decision.n_cut,
    }


def _epsilon_best_calibration_cut(
    decision, stat_mem, stat_non, eval_member, eval_nonmember, conf, delta
) -> dict:
    """The cut that maximises the (one-sided) bound on the calibration models, applied once
    to the evaluation models: chosen without them, so its bound keeps its confidence."""
    fpr, tpr, cuts = metrics.roc(stat_mem, stat_non)
    l_in, n = stat_mem.size, stat_non.size
    fp = np.rint(fpr * n).astype(np.int64)
    fn = l_in - np.rint(tpr * l_in).astype(np.int64)
    cal_eps, _, _, _ = bounds.epsilon_lower_bound(fp, n, fn, l_in, confidence=conf, delta=delta)
    best = int(np.argmax(cal_eps))
    cut = float(cuts[best])
    # The cut is on the statistic the ROC was computed on: the decision's own.
    best_decision = Decision(
        decision.score, decision.rule, cut, None, decision.member_fit, decision.nonmember_fit
    )
    em, en = _eval_array(eval_member, ""), _eval_array(eval_nonmember, "")
    em, en = em[~np.isnan(em)], en[~np.isnan(en)]
    e_fp = int(np.count_nonzero(best_decision.predict(en)))
    e_fn = int(np.count_nonzero(~best_decision.predict(em)))
    e, _, _, _ = bounds.epsilon_lower_bound(
        e_fp, en.size, e_fn, em.size, confidence=conf, delta=delta
    )
    return {
        "value": float(e),
        "threshold": best_decision.threshold,
        "threshold_scale": best_decision.scale,
        "calibration_value": float(cal_eps[best]),
    }


def summarize_targets(member, nonmember, *, eval_member=None, eval_nonmember=None, **kw):
    """``summarize`` for each of T targets.

    Args:
      member: float[T, l_in]; nonmember: float[T, l]; eval_member, eval_nonmember:
        float[T, E] or None. Further keyword arguments as ``summarize``'s.

    Returns:
      A list of T dicts, ``summarize``'s for each row.

    Raises:
      ValueError: the arrays are not [T, l] with one T; what ``summarize`` raises.
    """
    mem = np.asarray(member, dtype=np.float64)
    non = np.asarray(nonmember, dtype=np.float64)
    if mem.ndim != 2 or non.ndim != 2 or mem.shape[0] != non.shape[0]:
        raise ValueError(f"need [T, l] arrays with the same T, got {mem.shape} and {non.shape}")
    out = []
    for t in range(mem.shape[0]):
        out.append(
            summarize(
                mem[t],
                non[t],
                eval_member=None if eval_member is None else np.asarray(eval_member)[t],
                eval_nonmember=None if eval_nonmember is None else np.asarray(eval_nonmember)[t],
                **kw,
            )
        )
    return out
