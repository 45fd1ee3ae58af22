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
