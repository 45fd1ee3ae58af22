"""The single-target plan: which points each model trains on, as a pure function of (seed, round).

Stream 0 (CALIBRATION) holds the calibration rounds that build the two
distributions of x's score, stream 1 (EVALUATION) the fresh evaluation pairs.
Round r of a stream uses the training subset drawn from
``seed_sequence(seed, SUBSET, stream, r)`` alone, and the IN model
(member=True) trains on that subset plus the target while the OUT model trains
on the subset alone.

Each model gets the same-shaped index and mask rows:

    idx  int32[P] = [target, s_1, ..., s_n, 0, ..., 0]     (P = steps_per_epoch * B)
    mask bool[P]  = [member, 1,   ..., 1,   0, ..., 0]

so the OUT model carries the target in a masked-out slot, and the padding slots
never reach a loss, a gradient or a batch mean (training/one_model.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmia.runs.plan import CALIBRATION, EVALUATION, SUBSET, Job, seed_sequence, stream

__all__ = [
    "TARGET",
    "SingleTargetPlan",
    "calibration_jobs",
    "evaluation_jobs",
    "job_rows",
    "resolve_target",
    "steps_per_epoch",
    "subset_indices",
]

TARGET = stream(2, "target", 0)  # (): the target drawn when target_index is null


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


def subset_indices(seed: int, stream_index: int, rnd: int, n_train: int, target: int, n: int):
    """int64[n]: n distinct training indices, none equal to target, in sampled order."""
    rng = np.random.default_rng(seed_sequence(seed, SUBSET, stream_index, rnd))
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
    scores one image, the target.
    """

    seed: int
    n_train: int
    target: int
    subset_size: int
    batch_size: int

    @property
    def slots(self) -> int:
        """P: slots of every model's row, a multiple of batch_size."""
        return steps_per_epoch(self.subset_size, self.batch_size) * self.batch_size

    @property
    def min_real(self) -> int:
        """The fewest real (unmasked) slots any model has: the OUT model's n."""
        return self.subset_size

    @property
    def n_scored(self) -> int:
        return 1

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

    def scored_rows(self, jobs) -> np.ndarray:
        """int32[K, S]: the training-set indices each model scores after training."""
        return np.full((len(jobs), 1), self.target, np.int32)
