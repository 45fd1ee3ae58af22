"""From the trained models' saved outputs to the numbers and figures of a run.

This is the host side of the border: numpy, scipy and matplotlib, no JAX.  The
run calls it on the arrays it has just assembled; ``jaxmia analyze`` calls it
on the arrays a run folder kept (``losses.npz``), with the same or other
settings, so that every statistic can be recomputed without training.

The arrays it reads are described in kinds/single_target/arrays.py.
"""

from __future__ import annotations

import numpy as np

from jaxmia.attack import scores
from jaxmia.attack.audit import multi_run_audit
from jaxmia.attack.summary import Settings, summarize
from jaxmia.errors import NothingToAnalyse


def single_target_scores(arrays: dict, score: str) -> dict[str, np.ndarray]:
    """Native-scale scores of the used models: member, nonmember, eval_member, eval_nonmember.

    Every score, the loss included, comes from the saved logits in float64
    (``attack.scores.from_outputs``).
    """
    ok = np.asarray(arrays["round_used"], bool)
    ev = np.asarray(arrays["eval_used"], bool)
    label = int(arrays["target_label"])
    out = {}
    for name, used in (
        ("member", ok),
        ("nonmember", ok),
        ("eval_member", ev),
        ("eval_nonmember", ev),
    ):
        logits = np.asarray(arrays[f"{name}_logits"])[used]
        out[name] = scores.from_outputs(score, logits, label)
    return out


def single_target_results(arrays: dict, settings: Settings) -> dict:
    """Every statistic of a single-target run, JSON-ready, from its arrays alone."""
    ok = np.asarray(arrays["round_used"], bool)
    if not ok.any():
        raise NothingToAnalyse(
            f"no calibration round has finite outputs from both its IN and its OUT model "
            f"(0 of {ok.size} rounds used)"
        )
    s = single_target_scores(arrays, settings.score)
    summary = summarize(
        s["member"],
        s["nonmember"],
        eval_member=s["eval_member"],
        eval_nonmember=s["eval_nonmember"],
        alpha=settings.alpha,
        rule=settings.threshold_rule,
        score=settings.score,
        delta=settings.delta,
        confidence=settings.confidence,
        lira_variance=settings.lira_variance,
    )
    warnings = summary.pop("warnings", [])
    return {
        **summary,
        "train_accuracy": float(np.mean(arrays["train_accuracy"][ok])),
        "test_accuracy": float(np.mean(arrays["test_accuracy"][ok])),
        "rounds_used": int(ok.sum()),
        "eval_pairs_used": int(np.sum(arrays["eval_used"])),
        "warnings": warnings,
    }


def privacy_audit(arrays: dict, mech, settings: Settings) -> tuple[dict, list[str]]:
    """results.json's ``privacy`` block of a DP-SGD run, and its warnings.

    Per noise level: the accountant's ε (privacy.privacy_block) and, from the
    rounds and evaluation pairs trained at that level, the multi-run audit
    (attack.audit.multi_run_audit: Clopper-Pearson's ε_lb and the Gaussian-DP
    estimate, at the mechanism's δ and ``settings.confidence``) with each one's
    ratio to the accountant's PLD ε.
    """
    from jaxmia import privacy

    block, warnings = privacy.privacy_block(mech, settings.confidence)
    ok = np.asarray(arrays["round_used"], bool)
    ev = np.asarray(arrays["eval_used"], bool)
    n_cal, n_ev = ok.size, ev.size
    sig = np.asarray(arrays.get("noise_multiplier", np.zeros(n_cal)), np.float32)
    ev_sig = np.asarray(arrays.get("eval_noise_multiplier", np.zeros(n_ev)), np.float32)
    label = int(arrays["target_label"])

    def stat(name, rows):  # every score from the saved logits in float64, as the attack's
        logits = np.asarray(arrays[f"{name}_logits"])[rows]
        return scores.to_attack(scores.from_outputs(settings.score, logits, label), settings.score)

    for level in block["levels"]:
        at = np.float32(level["noise_multiplier"])
        cal, evl = ok & (sig == at), ev & (ev_sig == at)
        level["rounds_used"] = int(cal.sum())
        level["eval_pairs_used"] = int(evl.sum())
        level["empirical"] = None
        if not cal.any():
            warnings.append(f"noise_multiplier {at:g}: no calibration round to choose a cut on")
            continue
        if not evl.any():
            warnings.append(
                f"noise_multiplier {at:g}: no evaluation pair, so no empirical epsilon "
                "(raise eval_pairs)"
            )
        audit = multi_run_audit(
            stat("member", cal),
            stat("nonmember", cal),
            stat("eval_member", evl),
            stat("eval_nonmember", evl),
            confidence=settings.confidence,
            delta=mech.delta,
        )
        pld = level["epsilon"]["pld"]
        for entry in audit.values():
            entry["ratio"] = privacy.ratio(entry["epsilon_lb"], pld)
            cut = entry.pop("cut")
            entry["threshold"] = (
                None if cut is None else float(scores.from_attack(cut, settings.score))
            )
        level["empirical"] = audit
    block["score"] = settings.score
    block["method"] = (
        "multi-run (Jagielski et al. 2020): each round's IN and OUT model are neighbouring data "
        "sets; per noise level a cut chosen on the calibration rounds (the one that maximises "
        "the bound there) is applied once to the evaluation pairs; clopper_pearson: "
        "log((1 - delta - FNR_ub) / FPR_ub); gaussian_dp (Nasr et al. 2023): "
        "mu_lb = Phi^-1(1 - FPR_ub) - Phi^-1(FNR_ub) turned into epsilon at delta, an estimate "
        "that assumes a Gaussian trade-off curve; both upper bounds one-sided at "
        "1 - (1 - confidence)/2; ratio = epsilon_lb / the accountant's PLD epsilon"
    )
    return block, warnings
