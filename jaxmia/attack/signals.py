"""What the reference-model attacks read: per-model signals of the examples and the population.

Every attack of ``lira.py`` and ``rmia.py`` has the one signature of LiRA's
reference code (tensorflow/privacy ``research/mi_lira_2021/plot.py``: keep,
scores, check_keep, check_scores):

    attack(keep, reference, target) -> float64[K, N], high = member

* ``keep``: bool[R, N], which of the N examples each of the R reference models
  trained on;
* ``reference``: the R reference models' ``Signals``;
* ``target``: the K target models' ``Signals``, scored one (model, example)
  pair at a time.  NaN marks a pair the references cannot score (an example
  without the IN or OUT references an attack needs).

A signal is one float64 per (model, example, query), computed from the saved
logits by the attack's ``signal`` function: LiRA's logit-scaled confidence φ,
the cross-entropy, or RMIA's Pr(x | θ) = softmax(z / T)_y.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmia.attack import scores

__all__ = [
    "Signals",
    "check_attack_inputs",
    "loss_signal",
    "phi_signal",
    "probability_signal",
]


@dataclasses.dataclass(frozen=True)
class Signals:
    """One signal of a stack of models.

    Attributes:
      examples: float64[models, N, Q], the signal of every example under every query.
      population: float64[models, Z, Q], the same of the Z population points that
        no model trained on (Z = 0: none).
      block: int64[models], the membership block of each model: the models of one
        block have complementary memberships (each example is IN for exactly the
        same number of them; kinds/targets/plan.py), which RMIA's tuning of a uses.
    """

    examples: np.ndarray
    population: np.ndarray
    block: np.ndarray

    def __post_init__(self):
        m, _, q = self.examples.shape
        if self.population.ndim != 3 or self.population.shape[0] != m:
            raise ValueError(
                f"population signals must be [{m}, Z, {q}], got {self.population.shape}"
            )
        if self.population.shape[2] != q or self.block.shape != (m,):
            raise ValueError("signals disagree on the queries or the models")

    @property
    def n_models(self) -> int:
        return int(self.examples.shape[0])

    def take(self, models) -> Signals:
        """The signals of these models (int indices or a bool mask over the models)."""
        return Signals(self.examples[models], self.population[models], self.block[models])


def check_attack_inputs(keep, reference: Signals, target: Signals) -> np.ndarray:
    """``keep`` as bool[R, N] after checking it and the target's signals against the
    references' shapes; raises ValueError naming what disagrees."""
    keep = np.asarray(keep, bool)
    r, n, q = reference.examples.shape
    if keep.shape != (r, n):
        raise ValueError(f"keep must be bool[{r}, {n}], got {keep.shape}")
    if target.examples.shape[1:] != (n, q):
        raise ValueError(f"target signals must be [K, {n}, {q}], got {target.examples.shape}")
    if target.population.shape[1:] != reference.population.shape[1:]:
        raise ValueError("target and reference signals disagree on the population points")
    return keep


def _signal(score: str, logits, labels, population_logits, population_labels, temperature=1.0):
    def one(z, y):
        z = np.asarray(z)
        return scores.from_outputs(score, z, np.asarray(y)[:, None], temperature=temperature)

    return one(logits, labels), one(population_logits, population_labels)


def phi_signal(logits, labels, population_logits, population_labels):
    """(float64[M, N, Q], float64[M, Z, Q]) LiRA's φ = z_y - logsumexp_{y' != y} z_y' of
    logits float[M, N, Q, C] and float[M, Z, Q, C], labels int[N] and int[Z]."""
    return _signal("lira", logits, labels, population_logits, population_labels)


def loss_signal(logits, labels, population_logits, population_labels):
    """(float64[M, N, Q], float64[M, Z, Q]) the cross-entropy of every output, in float64."""
    return _signal("loss", logits, labels, population_logits, population_labels)


def probability_signal(temperature: float):
    """The signal function of Pr(x | θ) = softmax(z / T)_y = exp(-cross-entropy(z / T)), T > 0
    (RMIA, Zarifzadeh et al. 2024; the temperature the paper's code sets to 2)."""

    def signal(logits, labels, population_logits, population_labels):
        e, p = _signal("loss", logits, labels, population_logits, population_labels, temperature)
        return np.exp(-e), np.exp(-p)

    return signal
