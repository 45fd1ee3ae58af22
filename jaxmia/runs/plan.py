"""Jobs, plans and the host-side random streams they draw from.

A *job* is one model to train: (stream, round, member).  Each experiment kind
has a *plan* (kinds/<kind>/plan.py) that says, as a pure function of the seed
and the job, which training rows each model trains on (same-shaped rows with a
mask, so that vmapped models differ only in their data) and which images every
model scores after training.  Nothing in a plan depends on how jobs are grouped
into chunks, devices or hosts, so neither can change a model's result.

Every random stream drawn on the host is a ``Stream``: a tag and a fixed number
of integers after it.  NumPy's SeedSequence pads its entropy with zeros, so
[seed, 2] and [seed, 2, 0] are the same seed; with the tag first and a fixed
arity per tag no two streams can meet.  Tags are unique across jaxmia: a kind
declares its streams in its own plan module with ``stream(...)``, and a second
declaration of a tag under another name fails at import.

This module is numpy only: the PyTorch baseline uses the plans to train on the
very same rows.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

__all__ = [
    "CALIBRATION",
    "EVALUATION",
    "SUBSET",
    "Job",
    "Plan",
    "Stream",
    "model_ids",
    "seed_sequence",
    "stream",
]

CALIBRATION = 0  # the models whose outputs choose thresholds and fit distributions
EVALUATION = 1  # fresh models that only test them


@dataclasses.dataclass(frozen=True, order=True)
class Job:
    stream: int
    round: int
    member: bool


@dataclasses.dataclass(frozen=True)
class Stream:
    """A named host-side random stream: ``tag`` first, then ``arity`` integers."""

    tag: int
    name: str
    arity: int


_STREAMS: dict[int, Stream] = {}


def stream(tag: int, name: str, arity: int) -> Stream:
    """Declares a stream; the same tag under another name or arity is a bug (RuntimeError)."""
    new = Stream(tag, name, arity)
    old = _STREAMS.setdefault(tag, new)
    if old != new:
        raise RuntimeError(f"stream tag {tag} is declared twice: {old} and {new}")
    return new


def seed_sequence(seed: int, which: Stream, *fields: int) -> np.random.SeedSequence:
    """The SeedSequence of one named host-side stream."""
    if len(fields) != which.arity:
        raise ValueError(f"stream {which.name} takes {which.arity} fields, got {len(fields)}")
    return np.random.SeedSequence([int(seed), which.tag, *(int(f) for f in fields)])


# The training subset of one round (single target) or one model (many targets):
# (stream, round).  Shared by the kinds that draw a subset per model this way.
SUBSET = stream(1, "subset", 2)


def model_ids(jobs, seed: int) -> np.ndarray:
    """uint32[K, 4]: (seed, stream, round, member), from which the device derives keys."""
    return np.array([(seed, j.stream, j.round, int(j.member)) for j in jobs], np.uint32).reshape(
        len(jobs), 4
    )


class Plan(Protocol):
    """Which rows each job trains on and which training images every model scores.

    Rows: ``idx int32[K, P]`` (training-set indices) and ``mask bool[K, P]``
    (False on slots the model does not train on: padding, and examples it
    leaves out), the same P for every job of the plan.
    """

    @property
    def slots(self) -> int:
        """P: slots of every model's row, a multiple of the batch size."""

    @property
    def min_real(self) -> int:
        """The fewest real (unmasked) slots any model has."""

    @property
    def n_scored(self) -> int:
        """S: images every model scores after training."""

    def rows(self, jobs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(idx int32[K, P], mask bool[K, P], ids uint32[K, 4]) of these jobs."""

    def scored_rows(self, jobs) -> np.ndarray:
        """int32[K, S]: the training-set indices each model scores after training."""
