"""The arrays a single-target run keeps (``losses.npz``), stacked from the models' outputs.

The single-target arrays (``losses.npz``), l calibration rounds, E evaluation
pairs, C classes:

    member_losses, nonmember_losses           float32[l]   x's loss, IN and OUT model
    member_logits, nonmember_logits           float32[l, C]
    finite                                    bool[l, 2]   the (IN, OUT) model's losses are finite
    round_used                                bool[l]      both models finite
    train_finite                              bool[l, 2]   the model's epoch losses are finite
                                                           (absent in older files)
    eval_member_losses, eval_nonmember_losses float32[E]
    eval_member_logits, eval_nonmember_logits float32[E, C]
    eval_finite                               bool[E, 2]
    eval_used                                 bool[E]
    eval_train_finite                         bool[E, 2]
    target_label                              int32[]      x's class
    target_index                              int32[]      x's training-set index (absent
                                                           in files before it was kept)
    target_image                              uint8[H, W, 3]   x itself
    train_accuracy, test_accuracy             float32[l, 2] (IN, OUT)
    synthetic                                 bool[]
    class_names                               str[C]   (absent in the oldest files)
    original_label                            int32[]  x's own class (canary: mislabeled only;
                                                       target_label is then the canary's)
    noise_multiplier                          float32[l]  sigma of round r's two models (dp only)
    eval_noise_multiplier                     float32[E]  sigma of evaluation pair e (dp only)
"""

from __future__ import annotations

import numpy as np

from jaxmia.runs import schema
from jaxmia.runs.outputs import ModelOutputs
from jaxmia.runs.plan import CALIBRATION, EVALUATION, Job
from jaxmia.runs.schema import Field

__all__ = ["ARRAYS", "MIN_SIZES", "SCHEMA", "assemble", "check", "left_out"]

_USED = {"finite_where": "round_used"}
_EVAL_USED = {"finite_where": "eval_used"}
_RATE = {"at_least": 0.0, "at_most": 1.0, "finite_where": "round_used"}

SCHEMA = (
    Field("member_losses", "float", ("l",), "x's loss under each IN model", **_USED),
    Field("nonmember_losses", "float", ("l",), "x's loss under each OUT model", **_USED),
    Field("member_logits", "float", ("l", "C"), **_USED),
    Field("nonmember_logits", "float", ("l", "C"), **_USED),
    Field("finite", "bool", ("l", 2), "the (IN, OUT) model's losses are finite"),
    Field("round_used", "bool", ("l",), "both models of the round finite"),
    Field("train_finite", "bool", ("l", 2), "the model's epoch losses are finite", False),
    Field("eval_member_losses", "float", ("E",), **_EVAL_USED),
    Field("eval_nonmember_losses", "float", ("E",), **_EVAL_USED),
    Field("eval_member_logits", "float", ("E", "C"), **_EVAL_USED),
    Field("eval_nonmember_logits", "float", ("E", "C"), **_EVAL_USED),
    Field("eval_finite", "bool", ("E", 2)),
    Field("eval_used", "bool", ("E",)),
    Field("eval_train_finite", "bool", ("E", 2), required=False),
    Field("target_label", "int", (), "x's class", at_least=0, below="C"),
    Field("target_index", "int", (), "x's training-set index", False, at_least=0, below="N"),
    Field("target_image", "uint8", ("H", "W", 3)),
    Field("train_accuracy", "float", ("l", 2), **_RATE),
    Field("test_accuracy", "float", ("l", 2), **_RATE),
    Field("synthetic", "bool", ()),
    Field("class_names", "str", ("C",), required=False),
    Field("original_label", "int", (), "x's own class (canary: mislabeled)", required=False),
    Field("noise_multiplier", "float", ("l",), "DP-SGD sigma of round r", required=False),
    Field("eval_noise_multiplier", "float", ("E",), required=False),
)
MIN_SIZES = {"l": 1}
ARRAYS = tuple(f.name for f in SCHEMA if f.required)


def assemble(
    outputs: ModelOutputs,
    *,
    n_iterations: int,
    eval_pairs: int,
    target_label: int,
    target_index: int,
    target_image: np.ndarray,
    synthetic: bool,
) -> dict[str, np.ndarray]:
    """Stacks the models' outputs into the single-target arrays, index = round."""
    ok = outputs.finite()
    trained = outputs.trained_finite()
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
        "train_finite": np.stack([trained[cal_in], trained[cal_out]], 1),
        "eval_member_losses": outputs.target_loss[ev_in],
        "eval_nonmember_losses": outputs.target_loss[ev_out],
        "eval_member_logits": logits(ev_in),
        "eval_nonmember_logits": logits(ev_out),
        "eval_finite": np.stack([ok[ev_in], ok[ev_out]], 1),
        "eval_used": ok[ev_in] & ok[ev_out],
        "eval_train_finite": np.stack([trained[ev_in], trained[ev_out]], 1),
        "target_label": np.array(target_label, np.int32),
        "target_index": np.array(target_index, np.int32),
        "target_image": np.asarray(target_image, np.uint8),
        "train_accuracy": np.stack(
            [outputs.train_accuracy[cal_in], outputs.train_accuracy[cal_out]], 1
        ),
        "test_accuracy": np.stack(
            [outputs.test_accuracy[cal_in], outputs.test_accuracy[cal_out]], 1
        ),
        "synthetic": np.array(bool(synthetic)),
    }


def check(arrays, sizes: dict | None = None) -> dict[str, int]:
    """SCHEMA (with ``sizes`` known from run.json); that ``finite`` says what the saved
    losses and logits (and ``train_finite``) say; and that round_used marks exactly the
    rounds whose two models are finite (``finite``), as ``assemble`` writes them.

    Raises:
      ValueError: the first problem, in one line.
    """
    known = schema.check(arrays, SCHEMA, sizes, minimum=MIN_SIZES)
    for pre in ("", "eval_"):
        outputs = [
            schema.finite_rows(arrays[f"{pre}{who}_losses"], arrays[f"{pre}{who}_logits"], ndim=1)
            for who in ("member", "nonmember")
        ]
        schema.check_flag(
            f"{pre}finite",
            arrays[f"{pre}finite"],
            np.stack(outputs, 1),
            arrays.get(f"{pre}train_finite"),
            f"{pre}train_finite",
        )
    for used, finite, what in (
        ("round_used", "finite", "round"),
        ("eval_used", "eval_finite", "pair"),
    ):
        both = np.asarray(arrays[finite], bool).all(axis=1)
        differ = np.flatnonzero(both != np.asarray(arrays[used], bool))
        if differ.size:
            raise ValueError(
                f"{used} must be True exactly where both models are finite ({finite}); "
                f"{what} {int(differ[0])} disagrees"
            )
    return known


def left_out(arrays) -> list[str]:
    """The models whose losses were not finite, in words (their pairs are left out)."""
    names = []
    for what, key in (("calibration round", "finite"), ("evaluation pair", "eval_finite")):
        for r, m in zip(*np.nonzero(~np.asarray(arrays[key], bool)), strict=True):
            names.append(f"{what} {int(r)}, {'OUT' if m else 'IN'} model")
    return names
