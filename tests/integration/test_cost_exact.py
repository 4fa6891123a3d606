"""Exact mode: fake-tensor traces of 1 and 2 layers extrapolate to the whole model."""

from __future__ import annotations

import pytest

from scheduler.cost.exact import _trace, traced_peak

CONFIG = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
          "num_key_value_heads": 2, "intermediate_size": 176, "vocab_size": 512}


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
