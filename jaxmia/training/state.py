"""One model's training state, a pytree that vmap, lax.scan and donation treat leaf by leaf."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class TrainState:
    """What one model carries from step to step (a chunk's: every leaf stacked on axis 0).

    ``params`` is the Flax parameter tree (float32 leaves), ``opt_state`` the
    optax state of ``make_optimizer``.  ``batch_stats`` is the home of a model's
    batch statistics (the Flax ``batch_stats`` collection) and ``noise_state``
    of a per-model noise state (DP-SGD); for a model without them they stay
    empty dicts, which hold no leaves: the compiled programs, the donated buffers
    and the memory estimate are those of (params, opt_state) alone.
    """

    params: Any
    opt_state: Any
    batch_stats: Any = dataclasses.field(default_factory=dict)
    noise_state: Any = dataclasses.field(default_factory=dict)

    def replace(self, **changes) -> TrainState:
        return dataclasses.replace(self, **changes)


# Leaves flatten field by field in this order: params, then opt_state, as the
# (params, opt_state) tuple this replaces did.
jax.tree_util.register_dataclass(
    TrainState,
    data_fields=[f.name for f in dataclasses.fields(TrainState)],
    meta_fields=[],
)
