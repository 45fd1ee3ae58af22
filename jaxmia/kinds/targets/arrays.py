"""The arrays a many-targets run keeps (``targets.npz``), stacked from the models' outputs.

The arrays (``targets.npz``), M calibration models, E evaluation models (E may
be 0), T targets, C classes:

    targets                  int32[T]          training-set indices of the targets
    target_labels            int32[T]          their classes
    target_images            uint8[T, H, W, 3]
    membership               bool[M, T]        model m trained on target t
    losses                   float32[M, T]     cross-entropy of each target under each model
    logits                   float32[M, T, C]
    model_used               bool[M]           False: a non-finite loss; left out of everything
    eval_membership          bool[E, T]
    eval_losses              float32[E, T]
    eval_logits              float32[E, T, C]
    eval_model_used          bool[E]
    train_accuracy, test_accuracy  float32[M]
    class_names              str[C]
    synthetic                bool[]
    original_labels          int32[T]          the targets' own classes (canary: mislabeled only;
                                               target_labels are then the canaries')
    noise_multiplier         float32[M]        DP-SGD sigma of each model (dp only)
    eval_noise_multiplier    float32[E]
"""

from __future__ import annotations

import numpy as np

from jaxmia import privacy
from jaxmia.runs.plan import CALIBRATION, EVALUATION, Job
from jaxmia.runs.schema import Field

__all__ = ["SCHEMA", "assemble"]

SCHEMA = (
    Field("targets", "int", ("T",), "training-set indices of the targets"),
    Field("target_labels", "int", ("T",)),
    Field("target_images", "uint8", ("T", "H", "W", "channels"), required=False),
    Field("membership", "bool", ("M", "T"), "model m trained on target t"),
    Field("losses", "float", ("M", "T")),
    Field("logits", "float", ("M", "T", "C")),
    Field("model_used", "bool", ("M",)),
    # A run without evaluation models may lack these (E = 0).
    Field("eval_membership", "bool", ("E", "T"), required=False),
    Field("eval_losses", "float", ("E", "T"), required=False),
    Field("eval_logits", "float", ("E", "T", "C"), required=False),
    Field("eval_model_used", "bool", ("E",), required=False),
    Field("train_accuracy", "float", ("M",), required=False),
    Field("test_accuracy", "float", ("M",), required=False),
    Field("class_names", "str", ("C",), required=False),
    Field("synthetic", "bool", (), required=False),
    Field("original_labels", "int", ("T",), "the targets' own classes", required=False),
    Field("noise_multiplier", "float", ("M",), "DP-SGD sigma of each model", required=False),
    Field("eval_noise_multiplier", "float", ("E",), required=False),
)


def assemble(cfg, plan, dataset, outputs) -> dict:
    """The arrays file's contents (SCHEMA) from the trained models' outputs."""
    targets = np.asarray(cfg.targets, np.int32)

    def part(stream, n):
        jobs = [Job(stream, m, False) for m in range(n)]
        sel = outputs.select(jobs)
        member = plan.membership(jobs).reshape(n, len(targets))
        return member, sel, sel.finite()

    member, cal, used = part(CALIBRATION, cfg.n_models)
    e_member, ev, e_used = part(EVALUATION, cfg.eval_models)
    own = np.asarray(dataset.train_labels[targets], np.int32)
    arrays = {
        "targets": targets,
        "target_labels": privacy.trained_labels(cfg, targets, own, len(dataset.class_names)),
        "target_images": np.asarray(dataset.train_images[targets], np.uint8),
        "membership": member,
        "losses": cal.loss,
        "logits": cal.logits,
        "model_used": used,
        "eval_membership": e_member,
        "eval_losses": ev.loss,
        "eval_logits": ev.logits,
        "eval_model_used": e_used,
        "train_accuracy": cal.train_accuracy,
        "test_accuracy": cal.test_accuracy,
        "class_names": np.array(dataset.class_names),
        "synthetic": np.array(bool(dataset.synthetic)),
    }
    if cfg.canary != "none":
        arrays["original_labels"] = own
    return arrays
