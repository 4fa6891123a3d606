"""Plan validation: degrees must multiply to the world size; the error shows the equation."""

from __future__ import annotations

import pytest

from scheduler.domain.errors import PlanError
from scheduler.domain.plan import Plan, Strategy


def test_data_parallel_splits_the_global_batch() -> None:
    plan = Plan.data_parallel(world_size=2, global_batch=16, micro_batch=4)
    assert (plan.strategy, plan.dp, plan.micro_batch, plan.grad_accum) == (Strategy.DDP, 2, 4, 2)
    assert plan.global_batch == 16


def test_single_process_plan() -> None:
    assert Plan.data_parallel(1, 8).strategy is Strategy.SINGLE


def test_degrees_that_do_not_multiply_show_the_equation() -> None:
    plan = Plan(Strategy.TP, world_size=8, dp_replicate=2, tp=3)
    with pytest.raises(PlanError, match=r"2 × 1 × 3 × 1 = 6 ≠ world size 8"):
        plan.validate()


def test_strategy_must_match_degrees() -> None:
    with pytest.raises(PlanError, match="fsdp_full does not match"):
        Plan(Strategy.FSDP_FULL, world_size=2, dp_replicate=2).validate()


def test_uneven_batch_is_rejected() -> None:
    with pytest.raises(PlanError, match="not divisible by 3"):
        Plan.data_parallel(3, 8)


def test_round_trip_through_dict() -> None:
    plan = Plan.data_parallel(2, 8, 2)
    assert Plan.from_dict(plan.to_dict()) == plan
