"""What each runnable plan turns into on the ranks, and which models tensor parallelism refuses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from scheduler.domain.errors import PlanError
from scheduler.domain.plan import Plan, Strategy
from workers.core.data_parallel import transformer_blocks
from workers.core.parallelize import check_plan
from workers.core.tensor_parallel import check_tp_support


@dataclass(frozen=True)
class Case:
    name: str
    plan: Plan
    uses_fsdp: bool
    reshard_after_forward: bool
    dp_ranks: list[int]
    """Data-parallel replica of global ranks 0, 1, …"""


CASES = [
    Case("single", Plan(strategy=Strategy.SINGLE, world_size=1), False, False, [0]),
    Case("ddp", Plan(strategy=Strategy.DDP, world_size=2, dp_replicate=2), False, False, [0, 1]),
    Case("fsdp full shard (ZeRO-3)", Plan(strategy=Strategy.FSDP_FULL, world_size=2,
                                          dp_shard=2), True, True, [0, 1]),
    Case("fsdp shard grad op (ZeRO-2)", Plan(strategy=Strategy.FSDP_GRAD_OP, world_size=2,
                                             dp_shard=2), True, False, [0, 1]),
    Case("hsdp", Plan(strategy=Strategy.FSDP_FULL, world_size=4, dp_replicate=2, dp_shard=2),
         True, True, [0, 1, 2, 3]),
    Case("tp alone: no data-parallel wrapper", Plan(strategy=Strategy.TP, world_size=2, tp=2),
         False, False, [0, 0]),
    Case("fsdp + tp: tp innermost", Plan(strategy=Strategy.FSDP_FULL, world_size=4, dp_shard=2,
                                         tp=2), True, True, [0, 0, 1, 1]),
    Case("tp with replicas: FSDP with shards of one", Plan(strategy=Strategy.TP, world_size=4,
                                                           dp_replicate=2, tp=2),
         True, False, [0, 0, 1, 1]),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_plan_becomes_its_wrapper_and_rank_layout(case: Case) -> None:
    dims = check_plan(case.plan, world_size=case.plan.world_size)
    assert dims.uses_fsdp == case.uses_fsdp
    assert dims.reshard_after_forward == case.reshard_after_forward
    assert [dims.dp_rank(rank) for rank in range(dims.world_size)] == case.dp_ranks


def _tiny(architecture: str, **config: Any) -> torch.nn.Module:
    fields = dict(vocab_size=64, use_cache=False, bos_token_id=None, eos_token_id=None)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(architecture, **fields,
                                                                 **config))


LLAMA = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=64)


def test_llama_blocks_split_over_two_ranks() -> None:
    model = _tiny("llama", **LLAMA)
    assert check_tp_support(model, tp=2) == transformer_blocks(model)
    assert len(transformer_blocks(model)) == 2


@pytest.mark.parametrize(("config", "tp", "message"), [
    (dict(LLAMA, num_key_value_heads=1), 2,
     r"tp=2 must divide model.config.num_key_value_heads = 1"),
    (dict(LLAMA, num_attention_heads=2, num_key_value_heads=2), 4,
     r"tp=4 must divide model.config.num_attention_heads = 2"),
    (dict(LLAMA, intermediate_size=65), 2, r"tp=2 must divide model.config.intermediate_size"),
], ids=["kv heads", "heads", "mlp"])
def test_tp_refuses_a_degree_that_would_split_a_head(config: dict[str, Any], tp: int,
                                                     message: str) -> None:
    with pytest.raises(PlanError, match=message):
        check_tp_support(_tiny("llama", **config), tp=tp)


def test_tp_refuses_gpt2s_fused_attention_and_names_the_alternatives() -> None:
    model = _tiny("gpt2", n_embd=32, n_layer=1, n_head=4, n_positions=32)
    with pytest.raises(PlanError, match=r"GPT2Block has no Linear self_attn.q_proj; use ddp"):
        check_tp_support(model, tp=2)
