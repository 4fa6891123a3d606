"""Exact mode: fake-tensor traces of 1 and 2 layers extrapolate to the whole model."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from scheduler.cost.exact import LoraSetting, _trace, traced_peak
from scheduler.cost.flops import TransformerShape

CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 176,
    "vocab_size": 512,
}
GPT2 = {"n_embd": 64, "n_layer": 3, "n_head": 4, "vocab_size": 512, "n_positions": 256}
QV_R8 = LoraSetting(rank=8, target_modules=("q_proj", "v_proj"))

# peft reads transformers' deprecated is_gradient_checkpointing when it wraps a model.
lora_warning = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)


def _shape(architecture: str, config: dict[str, object]) -> TransformerShape:
    return TransformerShape.from_config(AutoConfig.for_model(architecture, **config).to_dict())


def test_extrapolation_from_two_traces_matches_a_full_trace() -> None:
    extrapolated = traced_peak("llama", CONFIG, seq_len=32, micro_batch=2)
    full = _trace("llama", CONFIG, 4, seq_len=32, micro_batch=2, optimizer="adamw")
    assert extrapolated.total_bytes == pytest.approx(full["total"], rel=0.01)
    for kind in ("parameters", "optimizer"):
        assert extrapolated.by_kind[kind] == pytest.approx(full[kind], rel=0.001)


def test_adamw_keeps_two_fp32_states_per_parameter() -> None:
    traced = traced_peak("llama", CONFIG, seq_len=32, micro_batch=2)
    # exp_avg and exp_avg_sq: 8 bytes per fp32 parameter (4 bytes each).
    assert traced.by_kind["optimizer"] >= 2 * traced.by_kind["parameters"] * 0.99


def test_tied_weights_are_counted_once() -> None:
    traced = traced_peak("gpt2", GPT2, seq_len=32, micro_batch=2)
    assert traced.by_kind["parameters"] == 4 * _shape("gpt2", GPT2).parameter_count()


@lora_warning
def test_lora_keeps_adam_states_for_the_adapters_only() -> None:
    traced = traced_peak("llama", CONFIG, seq_len=32, micro_batch=2, lora=QV_R8)
    shape = _shape("llama", CONFIG)
    adapters = shape.lora_parameter_count(("q_proj", "v_proj"), 8)
    assert traced.by_kind["parameters"] == 4 * (shape.parameter_count() + adapters)
    # exp_avg and exp_avg_sq of each adapter (8 bytes per parameter) and a step count per tensor.
    assert traced.by_kind["optimizer"] == pytest.approx(8 * adapters, rel=0.01)


@lora_warning
def test_lora_extrapolation_matches_a_full_trace() -> None:
    lora = LoraSetting(rank=4, target_modules="all-linear", dropout=0.1)
    extrapolated = traced_peak("llama", CONFIG, seq_len=32, micro_batch=2, lora=lora)
    full = _trace("llama", CONFIG, 4, seq_len=32, micro_batch=2, optimizer="adamw", lora=lora)
    assert extrapolated.total_bytes == pytest.approx(full["total"], rel=0.01)


@lora_warning
def test_a_frozen_base_stores_fewer_activations_than_full_training() -> None:
    full = traced_peak("llama", CONFIG, seq_len=128, micro_batch=4)
    lora = traced_peak("llama", CONFIG, seq_len=128, micro_batch=4, lora=QV_R8)
    assert lora.by_kind["activations"] < full.by_kind["activations"]
    assert lora.total_bytes < full.total_bytes
