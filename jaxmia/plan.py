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
never reach a loss, a gradient or a batch mean (see training/one_model.py).

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
SUBSET = 1  # (stream, round): the training subset of one round (or model)
TARGET = 2  # (): the target drawn when target_index is null
TARGETS = 3  # (): the T targets drawn when only n_targets is given
MEMBERSHIP = 4  # (stream, block): which targets each model of a block trains on
POPULATION = 5  # (repetition,): member and non-member sets of one target model
_ARITY = {SUBSET: 2, TARGET: 0, TARGETS: 0, MEMBERSHIP: 2, POPULATION: 1}


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


def _ids(jobs, seed: int) -> np.ndarray:
    """uint32[K, 4]: (seed, stream, round, member), from which the device derives keys."""
    return np.array([(seed, j.stream, j.round, int(j.member)) for j in jobs], np.uint32).reshape(
        len(jobs), 4
    )


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


def draw_targets(seed: int, n_train: int, n_targets: int) -> np.ndarray:
    """int32[T]: n_targets distinct training indices, drawn from the seed alone, sorted."""
    rng = np.random.default_rng(seed_sequence(seed, TARGETS))
    return np.sort(rng.choice(n_train, size=n_targets, replace=False)).astype(np.int32)


def inclusion_block(inclusion: float, limit: int = 64) -> tuple[int, int]:
    """(a, b): the smallest block of b models in which exactly a include each target.

    ``inclusion`` must be a/b with b <= limit (0.5 -> (1, 2), 0.25 -> (1, 4)).
    """
    for b in range(2, limit + 1):
        a = round(inclusion * b)
        if 0 < a < b and abs(a / b - inclusion) < 1e-9:
            return a, b
    raise ValueError(f"inclusion {inclusion} is not a fraction a/b with b <= {limit}")


@dataclasses.dataclass(frozen=True)
class TargetsPlan:
    """Many targets: each model trains on n base points plus some of the T targets.

    Models come in blocks of b (``inclusion`` = a/b): inside a block each target
    is in the training set of exactly a models, chosen by a permutation drawn
    from (seed, stream, block).  So every target is IN for exactly
    inclusion * n_models models (n_models a multiple of b), and a model's
    membership depends on (seed, stream, its block) alone: not on the number of
    models, the chunking or the devices (LiRA's keep masks, balanced per block).
    The base points come from the training set minus all targets, drawn from
    (seed, stream, model).  Jobs are Job(stream, model, False); every model
    scores all T targets.

    Rows: idx = [t_1 .. t_T, s_1 .. s_n, padding], mask = [membership, 1 .. 1, 0 ..].
    """

    seed: int
    n_train: int
    targets: tuple[int, ...]
    subset_size: int
    batch_size: int
    inclusion: float

    @property
    def block(self) -> tuple[int, int]:
        return inclusion_block(self.inclusion)

    @property
    def slots(self) -> int:
        n = self.subset_size + len(self.targets)
        return -(-n // self.batch_size) * self.batch_size

    @property
    def min_real(self) -> int:
        return self.subset_size

    @property
    def n_scored(self) -> int:
        return len(self.targets)

    def membership(self, jobs) -> np.ndarray:
        """bool[K, T]: which targets each job's model trains on."""
        a, b = self.block
        t = len(self.targets)
        out = np.zeros((len(jobs), t), bool)
        cache: dict[tuple[int, int], np.ndarray] = {}
        for i, job in enumerate(jobs):
            key = (job.stream, job.round // b)
            if key not in cache:
                rng = np.random.default_rng(seed_sequence(self.seed, MEMBERSHIP, *key))
                # Per target, a random order of the b models of the block; the
                # first a of that order are IN.
                rank = np.argsort(np.argsort(rng.random((t, b)), axis=1), axis=1)
                cache[key] = rank < a  # bool[T, b]
            out[i] = cache[key][:, job.round % b]
        return out

    def _pool(self) -> np.ndarray:
        keep = np.ones(self.n_train, bool)
        keep[list(self.targets)] = False
        return np.flatnonzero(keep).astype(np.int32)

    def rows(self, jobs):
        t, n = len(self.targets), self.subset_size
        idx = np.zeros((len(jobs), self.slots), np.int32)
        mask = np.zeros((len(jobs), self.slots), bool)
        pool = self._pool()
        member = self.membership(jobs)
        for i, job in enumerate(jobs):
            rng = np.random.default_rng(seed_sequence(self.seed, SUBSET, job.stream, job.round))
            idx[i, :t] = self.targets
            idx[i, t : t + n] = pool[rng.choice(len(pool), size=n, replace=False)]
            mask[i, :t] = member[i]
            mask[i, t : t + n] = True
        return idx, mask, _ids(jobs, self.seed)

    def scored_rows(self, jobs) -> np.ndarray:
        return np.tile(np.asarray(self.targets, np.int32), (len(jobs), 1))


@dataclasses.dataclass(frozen=True)
class PopulationPlan:
    """The population attack: repetition r's model trains on n members and scores
    them together with n non-members, both drawn from (seed, r) alone.

    Jobs are Job(0, r, False).  Rows: idx = [m_1 .. m_n, padding]; scored rows
    = [m_1 .. m_n, o_1 .. o_n] (members first).
    """

    seed: int
    n_train: int
    subset_size: int
    batch_size: int

    @property
    def slots(self) -> int:
        return -(-self.subset_size // self.batch_size) * self.batch_size

    @property
    def min_real(self) -> int:
        return self.subset_size

    @property
    def n_scored(self) -> int:
        return 2 * self.subset_size

    def sets(self, rep: int) -> tuple[np.ndarray, np.ndarray]:
        """(members int32[n], non-members int32[n]) of repetition rep."""
        rng = np.random.default_rng(seed_sequence(self.seed, POPULATION, rep))
        picks = rng.choice(self.n_train, size=2 * self.subset_size, replace=False)
        picks = picks.astype(np.int32)
        return picks[: self.subset_size], picks[self.subset_size :]

    def rows(self, jobs):
        n = self.subset_size
        idx = np.zeros((len(jobs), self.slots), np.int32)
        mask = np.zeros((len(jobs), self.slots), bool)
        for i, job in enumerate(jobs):
            idx[i, :n] = self.sets(job.round)[0]
            mask[i, :n] = True
        return idx, mask, _ids(jobs, self.seed)

    def scored_rows(self, jobs) -> np.ndarray:
        return np.stack([np.concatenate(self.sets(j.round)) for j in jobs]).astype(np.int32)
