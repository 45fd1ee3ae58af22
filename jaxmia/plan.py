"""The round plan: which points each model trains on, as a pure function of (seed, round).

A *job* is one model to train: (stream, round, member).  Stream 0 holds the
calibration rounds that build the two loss distributions, stream 1 the fresh
evaluation pairs.  Round r of a stream uses the training subset drawn from
``seed_sequence(seed, SUBSET, stream, r)`` alone, and the IN model (member=True) trains
on that subset plus the target while the OUT model trains on the subset alone.
Nothing here depends on how jobs are grouped into chunks, devices or hosts.

Each model gets the same-shaped index and mask rows:

    idx  int32[P] = [target, s_1, ..., s_n, 0, ..., 0]     (P = steps_per_epoch * B)
    mask bool[P]  = [member, 1,   ..., 1,   0, ..., 0]

so the OUT model carries the target in a masked-out slot, and the padding slots
never reach a loss, a gradient or a batch mean (see train.py).

This module is numpy only: the PyTorch baseline uses it to train on the very
same subsets.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CALIBRATION = 0
EVALUATION = 1

# Every random stream drawn on the host is named by a tag and a fixed number of
# integers after it.  NumPy's SeedSequence pads its entropy with zeros, so
# [seed, 2] and [seed, 2, 0] are the same seed; with the tag first and a fixed
# arity per tag no two streams can meet.
SUBSET = 1  # (stream, round): the training subset of one round
TARGET = 2  # (): the target drawn when target_index is null
_ARITY = {SUBSET: 2, TARGET: 0}


def seed_sequence(seed: int, tag: int, *fields: int) -> np.random.SeedSequence:
    """The SeedSequence of one named host-side stream (see the tags above)."""
    if len(fields) != _ARITY[tag]:
        raise ValueError(f"stream {tag} takes {_ARITY[tag]} fields, got {len(fields)}")
    return np.random.SeedSequence([int(seed), tag, *(int(f) for f in fields)])


@dataclasses.dataclass(frozen=True, order=True)
class Job:
    stream: int
    round: int
    member: bool


def calibration_jobs(n_rounds: int, start: int = 0) -> list[Job]:
    """IN and OUT model of rounds start..n_rounds-1, round-major."""
    return [Job(CALIBRATION, r, m) for r in range(start, n_rounds) for m in (True, False)]


def evaluation_jobs(n_pairs: int) -> list[Job]:
    return [Job(EVALUATION, r, m) for r in range(n_pairs) for m in (True, False)]


def resolve_target(target_index: int | None, seed: int, n_train: int) -> int:
    """The configured target, or one drawn from the seed when it is None."""
    if target_index is not None:
        return int(target_index)
    rng = np.random.default_rng(seed_sequence(seed, TARGET))
    return int(rng.integers(n_train))


def subset_indices(seed: int, stream: int, rnd: int, n_train: int, target: int, n: int):
    """int64[n]: n distinct training indices, none equal to target, in sampled order."""
    rng = np.random.default_rng(seed_sequence(seed, SUBSET, stream, rnd))
    picks = rng.choice(n_train - 1, size=n, replace=False)
    return picks + (picks >= target)  # skip over the target's index


def steps_per_epoch(subset_size: int, batch_size: int) -> int:
    """Batches per epoch of the IN model (n + 1 points); the OUT model's last may be empty."""
    return -(-(subset_size + 1) // batch_size)


def job_rows(jobs, *, seed: int, n_train: int, target: int, subset_size: int, batch_size: int):
    """Index and mask rows for a list of jobs.

    Returns (idx int32[K, P], mask bool[K, P], ids uint32[K, 4]) where ids holds
    (seed, stream, round, member) from which the device derives each model's keys.
    """
    p = steps_per_epoch(subset_size, batch_size) * batch_size
    k = len(jobs)
    idx = np.zeros((k, p), np.int32)
    mask = np.zeros((k, p), bool)
    ids = np.zeros((k, 4), np.uint32)
    cache: dict[tuple[int, int], np.ndarray] = {}
    for i, job in enumerate(jobs):
        key = (job.stream, job.round)
        if key not in cache:
            cache[key] = subset_indices(seed, job.stream, job.round, n_train, target, subset_size)
        idx[i, 0] = target
        idx[i, 1 : subset_size + 1] = cache[key]
        mask[i, 0] = job.member
        mask[i, 1 : subset_size + 1] = True
        ids[i] = (seed, job.stream, job.round, int(job.member))
    return idx, mask, ids


@dataclasses.dataclass(frozen=True)
class SingleTargetPlan:
    """The single-target experiment: which rows each job trains on and what it scores.

    Every job trains on its round's subset (plus the target for IN models) and
    scores one image, the target: ``scored`` is int32[1].
    """

    seed: int
    n_train: int
    target: int
    subset_size: int
    batch_size: int

    @property
    def scored(self) -> np.ndarray:
        """int32[T]: training-set indices of the images every model scores after training."""
        return np.array([self.target], np.int32)

    @property
    def slots(self) -> int:
        return steps_per_epoch(self.subset_size, self.batch_size) * self.batch_size

    def rows(self, jobs):
        """(idx int32[K, P], mask bool[K, P], ids uint32[K, 4]) of these jobs."""
        return job_rows(
            jobs,
            seed=self.seed,
            n_train=self.n_train,
            target=self.target,
            subset_size=self.subset_size,
            batch_size=self.batch_size,
        )
