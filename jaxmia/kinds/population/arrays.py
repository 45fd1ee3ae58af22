"""The arrays a population run keeps (``population.npz``), stacked from the models' outputs.

The arrays, R repetitions, n members = n non-members per repetition, C classes:

    member_rows, nonmember_rows         int32[R, n]     training-set indices
    member_labels, nonmember_labels     int32[R, n]
    member_losses, nonmember_losses     float32[R, n]   cross-entropy under model r
    member_logits, nonmember_logits     float32[R, n, C]
    model_used                          bool[R]         False: non-finite losses, left out
    train_finite                        bool[R]         its epoch losses are finite (absent
                                                        in older files)
    train_accuracy, test_accuracy       float32[R]
    class_names                         str[C]
    synthetic                           bool[]
"""

from __future__ import annotations

import numpy as np

from jaxmia.runs.schema import Field

__all__ = ["SCHEMA", "assemble"]

_USED = {"finite_where": "model_used"}
_RATE = {"at_least": 0.0, "at_most": 1.0, "finite_where": "model_used"}
_CLASS = {"at_least": 0, "below": "C"}

SCHEMA = (
    Field(
        "member_rows",
        "int",
        ("R", "n"),
        "training-set indices of each model's members",
        at_least=0,
        below="N",
    ),
    Field("nonmember_rows", "int", ("R", "n"), at_least=0, below="N"),
    Field("member_labels", "int", ("R", "n"), **_CLASS),
    Field("nonmember_labels", "int", ("R", "n"), **_CLASS),
    Field("member_losses", "float", ("R", "n"), **_USED),
    Field("nonmember_losses", "float", ("R", "n"), **_USED),
    Field("member_logits", "float", ("R", "n", "C"), **_USED),
    Field("nonmember_logits", "float", ("R", "n", "C"), **_USED),
    Field("model_used", "bool", ("R",)),
    Field("train_finite", "bool", ("R",), "the model's epoch losses are finite", False),
    Field("train_accuracy", "float", ("R",), **_RATE),
    Field("test_accuracy", "float", ("R",), **_RATE),
    Field("class_names", "str", ("C",)),
    Field("synthetic", "bool", ()),
)
MIN_SIZES = {"R": 1, "n": 1}


def assemble(cfg, plan, dataset, outputs, jobs) -> dict:
    """The arrays file's contents (SCHEMA) from the outputs of the R target models ``jobs``."""
    n = cfg.subset_size
    sel = outputs.select(jobs)
    sets = [plan.sets(j.round) for j in jobs]
    members = np.stack([m for m, _ in sets]).astype(np.int32)
    others = np.stack([o for _, o in sets]).astype(np.int32)
    labels = np.asarray(dataset.train_labels, np.int32)
    return {
        "member_rows": members,
        "nonmember_rows": others,
        "member_labels": labels[members],
        "nonmember_labels": labels[others],
        "member_losses": sel.loss[:, :n],
        "nonmember_losses": sel.loss[:, n:],
        "member_logits": sel.logits[:, :n],
        "nonmember_logits": sel.logits[:, n:],
        "model_used": sel.finite(),
        "train_finite": sel.trained_finite(),
        "train_accuracy": sel.train_accuracy,
        "test_accuracy": sel.test_accuracy,
        "class_names": np.array(dataset.class_names),
        "synthetic": np.array(bool(dataset.synthetic)),
    }
