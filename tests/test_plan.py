"""The plans: which rows each model trains on, as a pure function of (seed, model)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxmia.kinds.population.plan import PopulationPlan
from jaxmia.kinds.single_target.plan import TARGET, SingleTargetPlan
from jaxmia.kinds.targets.plan import TargetsPlan, draw_targets, inclusion_block
from jaxmia.runs.plan import SUBSET, Job, seed_sequence, stream


def test_host_streams_cannot_collide():
    # NumPy pads entropy with zeros: [s, 2] and [s, 2, 0] would be one stream.
    assert np.random.SeedSequence([7, 2]).generate_state(4).tolist() == (
        np.random.SeedSequence([7, 2, 0]).generate_state(4).tolist()
    )
    states = {
        tuple(seed_sequence(7, TARGET).generate_state(4)),
        tuple(seed_sequence(7, SUBSET, 0, 0).generate_state(4)),
        tuple(seed_sequence(7, SUBSET, 2, 0).generate_state(4)),
        tuple(seed_sequence(7, SUBSET, 0, 2).generate_state(4)),
    }
    assert len(states) == 4
    with pytest.raises(ValueError, match="takes 2 fields"):
        seed_sequence(7, SUBSET, 1)
    # A kind that declared another stream under a tag in use fails at import.
    assert stream(2, "target", 0) is not None  # the same declaration again is fine
    with pytest.raises(RuntimeError, match="stream tag 2 is declared twice"):
        stream(2, "my_new_stream", 1)


@pytest.mark.parametrize("inclusion, block", [(0.5, (1, 2)), (0.25, (1, 4)), (0.75, (3, 4))])
def test_inclusion_blocks(inclusion, block):
    assert inclusion_block(inclusion) == block
    with pytest.raises(ValueError):
        inclusion_block(1 / 101)


def targets_plan(**kw):
    base = dict(
        seed=3,
        n_train=500,
        targets=tuple(range(10, 30)),
        subset_size=40,
        batch_size=16,
        inclusion=0.5,
    )
    return TargetsPlan(**{**base, **kw})


@pytest.mark.parametrize("inclusion", [0.5, 0.25])
def test_membership_is_balanced_per_target(inclusion):
    plan = targets_plan(inclusion=inclusion)
    n_models = 4 * plan.block[1] * 3
    jobs = [Job(0, m, False) for m in range(n_models)]
    member = plan.membership(jobs)
    assert member.shape == (n_models, 20)
    np.testing.assert_array_equal(member.sum(0), np.full(20, inclusion * n_models))
    # Not the same column for every target (a permutation per target).
    assert len({tuple(c) for c in member.T}) > 1


def test_membership_depends_only_on_seed_and_model():
    plan = targets_plan()
    all_jobs = [Job(0, m, False) for m in range(16)]
    whole = plan.membership(all_jobs)
    one_by_one = np.stack([plan.membership([j])[0] for j in reversed(all_jobs)])[::-1]
    np.testing.assert_array_equal(whole, one_by_one)
    # More models later leave the first ones as they were.
    more = plan.membership([Job(0, m, False) for m in range(32)])
    np.testing.assert_array_equal(more[:16], whole)
    # Another seed, another stream: other memberships.
    assert not np.array_equal(targets_plan(seed=4).membership(all_jobs), whole)
    assert not np.array_equal(plan.membership([Job(1, m, False) for m in range(16)]), whole)


def test_targets_rows_hold_the_members_and_never_a_target_in_the_base():
    plan = targets_plan()
    jobs = [Job(0, m, False) for m in range(4)]
    idx, mask, ids = plan.rows(jobs)
    member = plan.membership(jobs)
    assert idx.shape == mask.shape == (4, plan.slots) and plan.slots % 16 == 0
    targets = np.array(plan.targets)
    for i in range(4):
        np.testing.assert_array_equal(idx[i, :20], targets)
        np.testing.assert_array_equal(mask[i, :20], member[i])
        base = idx[i, 20:60]
        assert mask[i, 20:60].all() and not mask[i, 60:].any()
        assert len(set(base)) == 40 and not set(base) & set(targets.tolist())
    np.testing.assert_array_equal(plan.scored_rows(jobs), np.tile(targets, (4, 1)))
    assert ids[:, 2].tolist() == [0, 1, 2, 3]


def test_drawn_targets_are_distinct_and_reproducible():
    a = draw_targets(5, 1000, 64)
    assert len(set(a.tolist())) == 64 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, draw_targets(5, 1000, 64))


def test_population_sets_are_disjoint_and_scored_members_first():
    plan = PopulationPlan(seed=1, n_train=300, subset_size=50, batch_size=16)
    jobs = [Job(0, r, False) for r in range(3)]
    idx, mask, _ = plan.rows(jobs)
    scored = plan.scored_rows(jobs)
    for i, job in enumerate(jobs):
        members, others = plan.sets(job.round)
        assert not set(members.tolist()) & set(others.tolist())
        np.testing.assert_array_equal(idx[i, :50], members)
        assert mask[i].sum() == 50
        np.testing.assert_array_equal(scored[i], np.concatenate([members, others]))
    assert not np.array_equal(plan.sets(0)[0], plan.sets(1)[0])


def test_single_target_plan_scores_the_target():
    plan = SingleTargetPlan(seed=0, n_train=100, target=7, subset_size=20, batch_size=8)
    jobs = [Job(0, 0, True), Job(0, 0, False)]
    idx, mask, _ = plan.rows(jobs)
    assert idx[:, 0].tolist() == [7, 7] and mask[:, 0].tolist() == [True, False]
    np.testing.assert_array_equal(plan.scored_rows(jobs), [[7], [7]])
