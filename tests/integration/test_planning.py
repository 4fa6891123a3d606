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
