"""From the trained models' saved outputs to the numbers and figures of a run.

This is the host side of the border: numpy, scipy and matplotlib, no JAX.  The
run calls it on the arrays it has just assembled; ``jaxmia analyze`` calls it
on the arrays a run folder kept (``losses.npz``), with the same or other
settings, so that every statistic can be recomputed without training.

The single-target arrays (``losses.npz``), l calibration rounds, E evaluation
pairs, C classes:

    member_losses, nonmember_losses           float32[l]   x's loss, IN and OUT model
    member_logits, nonmember_logits           float32[l, C]
    finite                                    bool[l, 2]   the (IN, OUT) model's losses are finite
    round_used                                bool[l]      both models finite
    eval_member_losses, eval_nonmember_losses float32[E]
    eval_member_logits, eval_nonmember_logits float32[E, C]
    eval_finite                               bool[E, 2]
    eval_used                                 bool[E]
    target_label                              int32[]      x's class
    target_image                              uint8[32, 32, 3]
    train_accuracy, test_accuracy             float32[l, 2] (IN, OUT)
    synthetic                                 bool[]
"""

from __future__ import annotations

import numpy as np

from jaxmia import plots
from jaxmia.attack import scores
from jaxmia.attack.summary import Settings, summarize
from jaxmia.errors import NonFiniteLoss
from jaxmia.outputs import ModelOutputs
from jaxmia.plan import CALIBRATION, EVALUATION, Job

SINGLE_TARGET_ARRAYS = (
    "member_losses",
    "nonmember_losses",
    "member_logits",
    "nonmember_logits",
    "finite",
    "round_used",
    "eval_member_losses",
    "eval_nonmember_losses",
    "eval_member_logits",
    "eval_nonmember_logits",
    "eval_finite",
    "eval_used",
    "target_label",
    "target_image",
    "train_accuracy",
    "test_accuracy",
    "synthetic",
)


def finite_model(outputs: ModelOutputs) -> np.ndarray:
    """bool[J]: the model's every epoch loss and every scored loss are finite."""
    return np.isfinite(outputs.epoch_loss).all(axis=1) & np.isfinite(outputs.loss).all(axis=1)


def single_target_arrays(
    outputs: ModelOutputs,
    *,
    n_iterations: int,
    eval_pairs: int,
    target_label: int,
    target_image: np.ndarray,
    synthetic: bool,
) -> dict[str, np.ndarray]:
    """Stacks the models' outputs into the single-target arrays, index = round."""
    ok = finite_model(outputs)
    where = outputs.index()

    def rows(stream, n, member):
        return np.array([where[Job(stream, r, member)] for r in range(n)], np.int64)

    cal_in, cal_out = rows(CALIBRATION, n_iterations, True), rows(CALIBRATION, n_iterations, False)
    ev_in, ev_out = rows(EVALUATION, eval_pairs, True), rows(EVALUATION, eval_pairs, False)
    c = outputs.logits.shape[-1]

    def logits(r):
        return outputs.target_logits[r].reshape(len(r), c)

    return {
        "member_losses": outputs.target_loss[cal_in],
        "nonmember_losses": outputs.target_loss[cal_out],
        "member_logits": logits(cal_in),
        "nonmember_logits": logits(cal_out),
        "finite": np.stack([ok[cal_in], ok[cal_out]], 1),
        "round_used": ok[cal_in] & ok[cal_out],
        "eval_member_losses": outputs.target_loss[ev_in],
        "eval_nonmember_losses": outputs.target_loss[ev_out],
        "eval_member_logits": logits(ev_in),
        "eval_nonmember_logits": logits(ev_out),
        "eval_finite": np.stack([ok[ev_in], ok[ev_out]], 1),
        "eval_used": ok[ev_in] & ok[ev_out],
        "target_label": np.array(target_label, np.int32),
        "target_image": np.asarray(target_image, np.uint8),
        "train_accuracy": np.stack(
            [outputs.train_accuracy[cal_in], outputs.train_accuracy[cal_out]], 1
        ),
        "test_accuracy": np.stack(
            [outputs.test_accuracy[cal_in], outputs.test_accuracy[cal_out]], 1
        ),
        "synthetic": np.array(bool(synthetic)),
    }


def left_out(arrays) -> list[str]:
    """The models whose losses were not finite, in words (their pairs are left out)."""
    names = []
    for what, key in (("calibration round", "finite"), ("evaluation pair", "eval_finite")):
        for r, m in zip(*np.nonzero(~np.asarray(arrays[key], bool)), strict=True):
            names.append(f"{what} {int(r)}, {'OUT' if m else 'IN'} model")
    return names


def single_target_scores(arrays: dict, score: str) -> dict[str, np.ndarray]:
    """Native-scale scores of the used models: member, nonmember, eval_member, eval_nonmember.

    The loss is the one the device computed (float32, as the pipeline reports
    it); the logit-scale scores come from the saved logits in float64.
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
        if score == "loss":
            out[name] = np.asarray(arrays[f"{name}_losses"], np.float64)[used]
        else:
            logits = np.asarray(arrays[f"{name}_logits"], np.float64)[used]
            out[name] = scores.compute(score, logits, label)
    return out


def single_target_results(arrays: dict, settings: Settings) -> dict:
    """Every statistic of a single-target run, JSON-ready, from its arrays alone."""
    ok = np.asarray(arrays["round_used"], bool)
    if not ok.any():
        raise NonFiniteLoss("every calibration round has a non-finite loss; nothing to fit")
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


def single_target_figures(folder, arrays: dict, results: dict, *, suffix: str):
    """Writes the run's PNG files into ``folder``; returns their paths."""
    s = single_target_scores(arrays, results["score"])
    loss = single_target_scores(arrays, "loss")
    phi = single_target_scores(arrays, "lira")
    written = plots.plot_attack(
        folder,
        results,
        member=s["member"],
        nonmember=s["nonmember"],
        eval_member=s["eval_member"],
        eval_nonmember=s["eval_nonmember"],
        member_loss=loss["member"],
        nonmember_loss=loss["nonmember"],
        member_phi=phi["member"],
        nonmember_phi=phi["nonmember"],
        title_suffix=suffix,
    )
    written.append(
        plots.plot_target(
            folder / plots.TARGET_FILE,
            np.asarray(arrays["target_image"], np.uint8),
            label_name=results["target_label"],
            index=results["target_index"],
            title_suffix=suffix,
        )
    )
    return written
