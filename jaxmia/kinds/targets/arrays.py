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
    train_finite             bool[M]           its epoch losses are finite (absent in older files)
    eval_membership          bool[E, T]
    eval_losses              float32[E, T]
    eval_logits              float32[E, T, C]
    eval_model_used          bool[E]
    eval_train_finite        bool[E]
    train_accuracy, test_accuracy  float32[M]
    class_names              str[C]
    synthetic                bool[]
    original_labels          int32[T]          the targets' own classes (canary: mislabeled only;
                                               target_labels are then the canaries')
    noise_multiplier         float32[M]        DP-SGD sigma of each model (dp only)
    eval_noise_multiplier    float32[E]

With ``queries`` Q > 1 (training/queries.py) ``logits`` stays the plain image
(query 0) and the other views come beside it; with ``population_size`` Z > 0
the population points come too (older files and runs without them lack these):

    augmented_logits         float32[M, T, Q-1, C]   queries 1 .. Q-1 of every target
    eval_augmented_logits    float32[E, T, Q-1, C]
    population_points        int32[Z]          training-set indices no model trains on
    population_labels        int32[Z]
    population_logits        float32[M, Z, Q, C]     every query, the plain image first
    eval_population_logits   float32[E, Z, Q, C]
"""

from __future__ import annotations

import numpy as np

from jaxmia import privacy
from jaxmia.runs.plan import CALIBRATION, EVALUATION, Job
from jaxmia.runs.schema import Field

__all__ = ["SCHEMA", "assemble"]

_USED = {"finite_where": "model_used"}
_RATE = {"at_least": 0.0, "at_most": 1.0, "finite_where": "model_used"}

SCHEMA = (
    Field("targets", "int", ("T",), "training-set indices of the targets", at_least=0, below="N"),
    Field("target_labels", "int", ("T",), at_least=0, below="C"),
    Field("target_images", "uint8", ("T", "H", "W", 3), required=False),
    Field("membership", "bool", ("M", "T"), "model m trained on target t"),
    Field("losses", "float", ("M", "T"), **_USED),
    Field("logits", "float", ("M", "T", "C"), **_USED),
    Field("model_used", "bool", ("M",)),
    Field("train_finite", "bool", ("M",), "the model's epoch losses are finite", False),
    Field("eval_train_finite", "bool", ("E",), required=False),
    # A run without evaluation models may lack these (E = 0).
    Field("eval_membership", "bool", ("E", "T"), required=False),
    Field("eval_losses", "float", ("E", "T"), required=False, finite_where="eval_model_used"),
    Field("eval_logits", "float", ("E", "T", "C"), required=False, finite_where="eval_model_used"),
    Field("eval_model_used", "bool", ("E",), required=False),
    Field("train_accuracy", "float", ("M",), required=False, **_RATE),
    Field("test_accuracy", "float", ("M",), required=False, **_RATE),
    Field("class_names", "str", ("C",), required=False),
    Field("synthetic", "bool", (), required=False),
    Field("original_labels", "int", ("T",), "the targets' own classes", required=False),
    Field("noise_multiplier", "float", ("M",), "DP-SGD sigma of each model", required=False),
    Field("eval_noise_multiplier", "float", ("E",), required=False),
    # Query views and population points (queries > 1, population_size > 0).
    Field("augmented_logits", "float", ("M", "T", "A", "C"), "queries 1 .. Q-1", False),
    Field("eval_augmented_logits", "float", ("E", "T", "A", "C"), required=False),
    Field(
        "population_points",
        "int",
        ("Z",),
        "training-set indices no model trains on",
        False,
        at_least=0,
        below="N",
    ),
    Field("population_labels", "int", ("Z",), required=False),
    Field("population_logits", "float", ("M", "Z", "Q", "C"), "every query", False),
    Field("eval_population_logits", "float", ("E", "Z", "Q", "C"), required=False),
)
MIN_SIZES = {"T": 1, "M": 1}


def assemble(cfg, plan, dataset, outputs) -> dict:
    """The arrays file's contents (SCHEMA) from the trained models' outputs."""
    targets = np.asarray(cfg.targets, np.int32)

    t = len(targets)

    def part(stream, n):
        jobs = [Job(stream, m, False) for m in range(n)]
        sel = outputs.select(jobs)
        member = plan.membership(jobs).reshape(n, t)
        return member, sel, sel.finite()

    member, cal, used = part(CALIBRATION, cfg.n_models)
    e_member, ev, e_used = part(EVALUATION, cfg.eval_models)
    own = np.asarray(dataset.train_labels[targets], np.int32)
    # The scored images are the T targets, then the Z population points.
    out = {
        "targets": targets,
        "target_labels": privacy.trained_labels(cfg, targets, own, len(dataset.class_names)),
        "target_images": np.asarray(dataset.train_images[targets], np.uint8),
        "membership": member,
        "losses": cal.loss[:, :t],
        "logits": cal.logits[:, :t],
        "model_used": used,
        "eval_membership": e_member,
        "eval_losses": ev.loss[:, :t],
        "eval_logits": ev.logits[:, :t],
        "eval_model_used": e_used,
        "train_finite": cal.trained_finite(),
        "eval_train_finite": ev.trained_finite(),
        "train_accuracy": cal.train_accuracy,
        "test_accuracy": cal.test_accuracy,
        "class_names": np.array(dataset.class_names),
        "synthetic": np.array(bool(dataset.synthetic)),
    }
    if cfg.canary != "none":
        out["original_labels"] = own
    if cfg.queries > 1:
        out["augmented_logits"] = cal.view_logits[:, :t]
        out["eval_augmented_logits"] = ev.view_logits[:, :t]
    if cfg.population_size:
        population = plan.population
        out["population_points"] = population
        out["population_labels"] = np.asarray(dataset.train_labels[population], np.int32)
        for prefix, o in (("", cal), ("eval_", ev)):
            views = np.concatenate([o.logits[:, t:, None], o.view_logits[:, t:]], axis=2)
            out[f"{prefix}population_logits"] = views
    return out
