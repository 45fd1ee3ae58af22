"""The many-targets plan: each model trains on n base points plus a balanced share of T targets.

Membership per target is drawn per block of b models (``inclusion`` = a/b), from
(seed, stream, block) alone; base points from (seed, stream, model) alone
(``TargetsPlan``'s docstring).  Stream 0 (CALIBRATION) holds the models that
build each target's IN and OUT distributions, stream 1 (EVALUATION) fresh
models with the same membership law.  Z population points, which no model
trains on, are drawn from (seed) alone; every model scores the targets and
then the population points, each under ``queries`` views.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmia.runs.plan import SUBSET, model_ids, seed_sequence, stream

__all__ = [
    "BOOTSTRAP",
    "MEMBERSHIP",
    "POPULATION_POINTS",
    "REFERENCES",
    "TARGETS",
    "TargetsPlan",
    "draw_population",
    "draw_targets",
    "inclusion_block",
]

TARGETS = stream(3, "targets", 0)  # (): the T targets drawn when only n_targets is given
MEMBERSHIP = stream(4, "membership", 2)  # (stream, block): which targets each model trains on
POPULATION_POINTS = stream(6, "population points", 0)  # (): the Z points no model trains on
# The attacks' host-side draws (kinds/targets/attacks.py): the target models a
# bootstrap replicate resamples, and the references a point of the
# reference-count curve keeps, (protocol, target model, references).
BOOTSTRAP = stream(7, "bootstrap over target models", 1)  # (protocol,)
REFERENCES = stream(8, "reference subsample", 3)  # (protocol, target model, references)


def draw_targets(seed: int, n_train: int, n_targets: int) -> np.ndarray:
    """int32[T]: n_targets distinct training indices, drawn from the seed alone, sorted."""
    rng = np.random.default_rng(seed_sequence(seed, TARGETS))
    return np.sort(rng.choice(n_train, size=n_targets, replace=False)).astype(np.int32)


def draw_population(seed: int, n_train: int, targets, size: int) -> np.ndarray:
    """int32[Z]: ``size`` training indices that are not targets, drawn from the seed alone,
    sorted.  No model trains on them (``TargetsPlan`` draws its base points from the
    rest); RMIA compares every target with them."""
    if size == 0:
        return np.zeros(0, np.int32)
    keep = np.ones(n_train, bool)
    keep[list(targets)] = False
    pool = np.flatnonzero(keep)
    rng = np.random.default_rng(seed_sequence(seed, POPULATION_POINTS))
    return np.sort(pool[rng.choice(pool.size, size=size, replace=False)]).astype(np.int32)


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
    The base points come from the training set minus all targets and the Z
    population points, drawn from (seed, stream, model).  Jobs are
    Job(stream, model, False); every model scores all T targets, then the Z
    population points (``population``), each under ``queries`` views
    (training/queries.py).  With Z = 0 the rows are those of a plan without a
    population.

    Rows: idx = [t_1 .. t_T, s_1 .. s_n, padding], mask = [membership, 1 .. 1, 0 ..].
    """

    seed: int
    n_train: int
    targets: tuple[int, ...]
    subset_size: int
    batch_size: int
    inclusion: float
    queries: int = 1
    population_size: int = 0

    @property
    def population(self) -> np.ndarray:
        """int32[Z]: the population points (``draw_population``)."""
        return draw_population(self.seed, self.n_train, self.targets, self.population_size)

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
        return len(self.targets) + self.population_size

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
        keep[self.population] = False
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
        return idx, mask, model_ids(jobs, self.seed)

    def scored_rows(self, jobs) -> np.ndarray:
        scored = np.concatenate([np.asarray(self.targets, np.int32), self.population])
        return np.tile(scored, (len(jobs), 1))
