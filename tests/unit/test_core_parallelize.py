"""Plans are checked against the real gang before anything is built; unready work says so."""

from __future__ import annotations

import math

import pytest

from scheduler.domain.errors import PlanError
from scheduler.domain.plan import Plan, Strategy
from scheduler.domain.spec import JobKind, OptimizerSpec
from workers.core.optim import MIN_LR_RATIO, lr_multiplier
from workers.core.parallelize import StrategyNotImplementedError, check_plan
from workers.jobs.compress import run_compress
from workers.jobs.finetune import run_finetune
from workers.jobs.pretrain import run_pretrain
from workers.jobs.run import main, runner_for


def test_a_ddp_plan_for_the_launched_world_gives_its_data_parallel_layout() -> None:
    dims = check_plan(Plan.data_parallel(world_size=4, global_batch=16), world_size=4)
    assert (dims.strategy, dims.dp) == (Strategy.DDP, 4)
    assert [dims.dp_rank(rank) for rank in range(4)] == [0, 1, 2, 3]


def test_a_plan_for_another_world_size_is_refused_before_building() -> None:
    with pytest.raises(PlanError, match=r"plan.world_size 4 ≠ WORLD_SIZE 2"):
        check_plan(Plan.data_parallel(world_size=4, global_batch=16), world_size=2)


def test_degrees_that_do_not_multiply_to_the_world_show_the_equation() -> None:
    plan = Plan(strategy=Strategy.DDP, world_size=4, dp_replicate=2)
    with pytest.raises(PlanError, match=r"2 × 1 × 1 × 1 = 2 ≠ world size 4"):
        check_plan(plan, world_size=4)


@pytest.mark.parametrize(
    "plan",
    [
        Plan(strategy=Strategy.PP, world_size=2, pp=2),
        Plan(strategy=Strategy.FSDP_FULL, world_size=4, dp_shard=2, pp=2),
    ],
    ids=["pp", "fsdp with pp"],
)
def test_pipeline_parallel_is_refused_and_the_runnable_strategies_listed(plan: Plan) -> None:
    with pytest.raises(StrategyNotImplementedError,
                       match=r"pipeline parallel is not supported yet .* single, ddp, fsdp_full, "
                             r"fsdp_grad_op, tp, hsdp, fsdp_tp"):
        check_plan(plan, world_size=plan.world_size)


def test_fp16_is_refused_with_the_alternative() -> None:
    plan = Plan.data_parallel(world_size=2, global_batch=4, precision="fp16")
    with pytest.raises(PlanError, match="use bf16"):
        check_plan(plan, world_size=2)


def test_every_kind_has_its_runner() -> None:
    assert runner_for(JobKind.PRETRAIN) is run_pretrain
    assert runner_for(JobKind.FINETUNE) is run_finetune
    assert runner_for(JobKind.COMPRESS) is run_compress


def test_the_entry_point_wants_exactly_one_job_file() -> None:
    assert main([]) == 2


def test_warmup_rises_linearly_then_cosine_decays_to_the_floor() -> None:
    spec = OptimizerSpec(warmup_steps=10, schedule="cosine")
    assert lr_multiplier(0, spec, total_steps=110) == pytest.approx(0.1)
    assert lr_multiplier(9, spec, total_steps=110) == 1.0
    assert lr_multiplier(60, spec, total_steps=110) == pytest.approx((1 + MIN_LR_RATIO) / 2)
    assert lr_multiplier(110, spec, total_steps=110) == pytest.approx(MIN_LR_RATIO)
    constant = OptimizerSpec(warmup_steps=0, schedule="constant")
    assert all(lr_multiplier(i, constant, 50) == 1.0 for i in range(50))
    assert not math.isnan(lr_multiplier(0, OptimizerSpec(warmup_steps=0), total_steps=1))
