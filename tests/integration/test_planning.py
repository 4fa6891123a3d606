"""Planning a spec against the pools stored in a real database."""

from __future__ import annotations

import pytest

from scheduler.db import repo
from scheduler.domain.errors import UnschedulableError
from scheduler.planning import plan_spec
from scheduler.service import SchedulerService
from tests.builders import make_spec

LLAMA_SMALL = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
               "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 8,
               "intermediate_size": 5632, "tie_word_embeddings": False}


def test_plan_ranks_stored_pools_and_uses_the_pool_price(service: SchedulerService) -> None:
    spec = make_spec(data__seq_len=2048, batch__global_batch=16, work__steps=100,
                     precision="bf16")
    report = plan_spec(service.db, spec, LLAMA_SMALL)
    assert report.best is not None and report.best.pool == "h100"
    for candidate in report.ranked:
        candidate.plan.validate()
        hours = candidate.plan.world_size * candidate.run_time_s / 3600
        if candidate.pool == "h100":  # the fixture's pool sets $3.50 per device-hour
            assert candidate.price_usd == pytest.approx(hours * 3.5)
    # the 2-device CPU pool cannot hold a 1 B-parameter model with 16 GiB per device
    assert any(c.pool == "cpu" and "needs" in c.why_not for c in report.rejected)


def test_unknown_accelerator_in_a_pool_is_explained(service: SchedulerService) -> None:
    with service.db.write() as session:
        repo.add_pool(session, "mystery", "fake", "B300", nodes=1, devices_per_node=8)
    with pytest.raises(UnschedulableError, match="pool mystery: unknown accelerator 'B300'"):
        plan_spec(service.db, make_spec(resources__pool="mystery"), LLAMA_SMALL)


def test_a_pinned_plan_is_the_plan_the_cycle_admits(service: SchedulerService) -> None:
    """The parallelism section pins what the user pins; the cycle stores exactly that plan (the
    trainer runs the stored plan) and the planner chose the rest."""
    spec = make_spec(data__seq_len=2048, batch__global_batch=16, work__steps=100,
                     precision="bf16", resources__pool="h100",
                     parallelism={"strategy": "hsdp", "dp_replicate": 2, "dp_shard": 4,
                                  "activation_checkpointing": "full"})
    job_id = service.submit(spec, LLAMA_SMALL)
    service.tick()
    with service.db.read() as session:
        job = repo.get_job(session, job_id)
        plan = job.plan
    assert plan is not None
    assert (plan["strategy"], plan["dp_replicate"], plan["dp_shard"], plan["world_size"],
            plan["activation_checkpointing"]) == ("hsdp", 2, 4, 8, True)
    best = plan_spec(service.db, spec, LLAMA_SMALL).best
    assert best is not None and best.plan.to_dict() == plan


def test_a_pinned_plan_that_fits_nowhere_is_refused_at_submit(service: SchedulerService) -> None:
    spec = make_spec(data__seq_len=4096, batch__global_batch=16, work__steps=10,
                     precision="bf16", resources__pool="h100",
                     parallelism={"strategy": "ddp", "dp_replicate": 16})
    with pytest.raises(UnschedulableError, match=r"fits no pool: needs .* GiB per device .*"
                                                 r"strategy=ddp dp_replicate=16"):
        service.submit(spec, {**LLAMA_SMALL, "num_hidden_layers": 200})
