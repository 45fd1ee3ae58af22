"""The population plan: repetition r's target model trains on n members and scores them
together with n non-members, both drawn from (seed, r) alone."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmia.runs.plan import model_ids, seed_sequence, stream

__all__ = ["POPULATION", "PopulationPlan"]

POPULATION = stream(5, "population", 1)  # (repetition,): member and non-member sets


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
        return idx, mask, model_ids(jobs, self.seed)

    def scored_rows(self, jobs) -> np.ndarray:
        return np.stack([np.concatenate(self.sets(j.round)) for j in jobs]).astype(np.int32)
