"""Closed-form memory: the published numbers must come out of our formulas."""

from __future__ import annotations

import pytest

from scheduler.cost.hardware import CATALOG, lookup
from scheduler.cost.memory import (
    StepShape,
    activation_bytes_per_layer,
    estimate_peak,
    model_state_bytes,
)

GB = 1e9


@pytest.mark.parametrize(("sharding", "expected_gb"), [
    # ZeRO paper (Rajbhandari et al. 2020) Figure 1: Ψ = 7.5 B, N_d = 64, K = 12.
    ("ddp", 120.0), ("zero1", 31.4), ("zero2", 16.6), ("zero3", 1.9),
])
def test_model_states_match_the_zero_paper(sharding: str, expected_gb: float) -> None:
    got = model_state_bytes(7.5e9, sharding, 64) / GB  # type: ignore[arg-type]
    assert got == pytest.approx(expected_gb, abs=0.05)


def test_lora_frozen_weights_carry_no_grads_or_optimizer_state() -> None:
    full = model_state_bytes(1e9, "ddp", 1, "bf16_mixed")
    lora = model_state_bytes(1e9, "ddp", 1, "bf16_mixed", trainable_params=1e7)
    assert full == 16e9 and lora == 2e9 + 14 * 1e7


def test_activations_follow_korthikanti_table_2() -> None:
    # GPT-3 175B row of the paper's Table 2 setting: s=2048, b=1, h=12288, a=96, t=8.
    s, b, h, a, t = 2048, 1, 12288, 96, 8
    none = activation_bytes_per_layer(s, b, h, a, t, "none", attention_scores_stored=True)
    assert none == pytest.approx(s * b * h * (34 + 5 * a * s / h) / t)
    selective = activation_bytes_per_layer(s, b, h, a, t, "selective")
    assert selective == pytest.approx(34 * s * b * h / t)
    assert activation_bytes_per_layer(s, b, h, a, t, "full") == 2 * s * b * h
    assert activation_bytes_per_layer(s, b, h, a, 1, "none", "fp32") == 2 * 34 * s * b * h


def test_peak_shrinks_with_sharding_and_recomputation() -> None:
    shape = StepShape(params=7e9, layers=32, hidden=4096, heads=32, vocab=32000, seq_len=4096,
                      micro_batch=1, layer_params=2e8)
    ddp = estimate_peak(shape, "ddp", 1)
    fsdp = estimate_peak(shape, "zero3", 8)
    fsdp_recompute = estimate_peak(shape, "zero3", 8, recompute="full")
    assert ddp.total_bytes > fsdp.total_bytes > fsdp_recompute.total_bytes
    assert ddp.total_bytes > CATALOG["H100-SXM"].memory_bytes  # 7B with DDP does not fit 80 GB
    assert "model_states" in fsdp.explain() and "fsdp_gathered_units" in fsdp.terms


def test_catalog_lookup_and_overrides() -> None:
    assert lookup("h100").name == "H100-SXM"
    assert lookup("TPU-V5P").peak_bf16_flops == 459e12
    assert lookup("A100-80G", {"price_per_device_hour": 1.5}).price_per_device_hour == 1.5
    with pytest.raises(KeyError, match="unknown accelerator 'B200'"):
        lookup("B200")
    for row in CATALOG.values():
        assert row.source and row.peak_bf16_flops > 0 and row.memory_bytes > 0
