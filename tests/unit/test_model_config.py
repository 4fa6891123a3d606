"""The planner's config for an inline model, resolved without transformers, is the one
transformers resolves (for every field the cost model reads)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from transformers import AutoConfig

from scheduler.cost.flops import TransformerShape
from scheduler.cost.memory import stores_attention_scores
from workers.model_config import planning_config

GRIDS: dict[str, list[dict[str, Any]]] = {
    "llama": [{}, {"hidden_size": 256, "num_attention_heads": 4},
              {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
               "intermediate_size": 14336, "vocab_size": 128256, "num_hidden_layers": 32,
               "rope_theta": 500000.0}, {"head_dim": 64, "attention_bias": True},
              {"tie_word_embeddings": True, "mlp_bias": True, "attention_dropout": 0.1}],
    "mistral": [{}, {"hidden_size": 512, "num_attention_heads": 8}, {"num_attention_heads": 16},
                {"num_key_value_heads": 2, "intermediate_size": 1024, "sliding_window": 128}],
    "qwen2": [{}, {"hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 2},
              {"tie_word_embeddings": True, "vocab_size": 1000}, {"num_attention_heads": 16}],
    "gpt2": [{}, {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4},
             {"n_embd": 384, "n_head": 6, "n_inner": 1000, "n_positions": 2048,
              "attn_pdrop": 0.0}, {"max_position_embeddings": 512, "vocab_size": 4096}],
}


@pytest.mark.parametrize(("architecture", "fields"), [
    (architecture, fields) for architecture, grid in GRIDS.items() for fields in grid])
def test_the_fast_config_plans_as_transformers_config_does(architecture: str,
                                                           fields: dict[str, Any]) -> None:
    fast = planning_config(architecture, fields)
    assert fast is not None
    full = AutoConfig.for_model(architecture, **fields).to_dict()
    assert TransformerShape.from_config(fast) == TransformerShape.from_config(full)
    assert stores_attention_scores(fast) == stores_attention_scores(full)


def test_a_field_it_does_not_know_leaves_the_config_to_transformers() -> None:
    assert planning_config("llama", {"num_experts": 8}) is None
    assert planning_config("phi3", {}) is None
    assert all(planning_config(a, {}) is not None for a in itertools.islice(GRIDS, None))
