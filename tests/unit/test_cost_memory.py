"""Closed-form memory: the published numbers must come out of our formulas."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.cost.flops import TransformerShape
from scheduler.cost.hardware import CATALOG, lookup
from scheduler.cost.memory import (
    Adapters,
    StepShape,
    activation_bytes_per_layer,
    estimate_peak,
    model_state_bytes,
)

GB = 1e9


@pytest.mark.parametrize(
    ("sharding", "expected_gb"),
    [
        # ZeRO paper (Rajbhandari et al. 2020) Figure 1: Ψ = 7.5 B, N_d = 64, K = 12; the
        # trainer's split of the 16 bytes differs (fp32 gradients), the totals do not.
        ("ddp", 120.0),
        ("zero3", 1.9),
    ],
)
def test_model_states_match_the_zero_paper(sharding: str, expected_gb: float) -> None:
    got = model_state_bytes(7.5e9, sharding, 64) / GB  # type: ignore[arg-type]
    assert got == pytest.approx(expected_gb, abs=0.05)


def test_lora_frozen_weights_carry_no_grads_or_optimizer_state() -> None:
    full = model_state_bytes(1e9, "ddp", 1, "bf16_mixed")
    lora = model_state_bytes(1e9, "ddp", 1, "bf16_mixed", trainable_params=1e7)
    # The frozen base in bf16 (2 bytes), the adapters as fp32 master weights with AdamW (16).
    assert full == 16e9 and lora == pytest.approx(2 * (1e9 - 1e7) + 16 * 1e7)
    fp32 = model_state_bytes(1e9, "ddp", 1, "fp32", trainable_params=1e7)
    assert fp32 == pytest.approx(4 * (1e9 - 1e7) + 16 * 1e7)


def test_each_optimizer_is_costed_by_its_states() -> None:
    """SGD (no momentum) keeps no state: 8 bytes per fp32 parameter, not AdamW's 16."""
    adamw = model_state_bytes(1e9, "ddp", 1, "fp32")
    sgd = model_state_bytes(1e9, "ddp", 1, "fp32", optimizer="sgd")
    assert (adamw, sgd) == (16e9, 8e9)
    shape = StepShape(params=1e9, layers=16, hidden=2048, heads=16, vocab=32000, seq_len=512,
                      micro_batch=1, layer_params=5e7)
    with_adamw = estimate_peak(shape, "ddp", 1, precision="fp32")
    with_sgd = estimate_peak(replace(shape, optimizer="sgd"), "ddp", 1, precision="fp32")
    assert with_adamw.total_bytes - with_sgd.total_bytes >= 8e9


def test_mixed_precision_counts_autocasts_bf16_copies_and_fsdp_its_gathered_units() -> None:
    shape = StepShape(params=1e9, layers=16, hidden=2048, heads=16, vocab=32000, seq_len=512,
                      micro_batch=1, layer_params=5e7)
    ddp = estimate_peak(shape, "ddp", 1, precision="bf16_mixed")
    assert ddp.terms.get("compute_copies") == 2e9 or "optimizer_temporaries" in ddp.terms
    backward_only = estimate_peak(replace(shape, optimizer="sgd"), "ddp", 1,
                                  precision="bf16_mixed", grads_held=True)
    assert backward_only.terms["compute_copies"] == 2e9
    grad_op = estimate_peak(replace(shape, optimizer="sgd"), "zero2", 8, precision="bf16_mixed",
                            grads_held=True)
    assert grad_op.terms["model_states"] == pytest.approx(8e9 / 8)
    assert grad_op.terms["fsdp_gathered_units"] == pytest.approx(2 * (1e9 + 5e7))


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
    shape = StepShape(
        params=7e9,
        layers=32,
        hidden=4096,
        heads=32,
        vocab=32000,
        seq_len=4096,
        micro_batch=1,
        layer_params=2e8,
    )
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


# LoRA: a frozen base with small trainable adapters.

LLAMA_7B = TransformerShape(
    vocab_size=32000,
    hidden_size=4096,
    num_layers=32,
    num_heads=32,
    num_kv_heads=32,
    head_dim=128,
    intermediate_size=11008,
    gated_mlp=True,
    tied_embeddings=False,
)


def _lora_step(trainable: float, adapters: Adapters | None, params: float = 7e9) -> StepShape:
    return StepShape(
        params=params,
        layers=32,
        hidden=4096,
        heads=32,
        vocab=32000,
        seq_len=2048,
        micro_batch=1,
        layer_params=2e8,
        trainable_params=trainable,
        adapters=adapters,
    )


def test_lora_states_scale_with_trainable_parameters_not_total() -> None:
    adapters = Adapters.lora(LLAMA_7B, ["q_proj", "v_proj"])
    small = estimate_peak(_lora_step(4e6, adapters), "ddp", 1, precision="fp32", grads_held=True)
    large = estimate_peak(_lora_step(8e6, adapters), "ddp", 1, precision="fp32", grads_held=True)
    # fp32: 4 bytes of weights for every parameter, 4 + 8 of gradient and Adam per trainable one.
    assert small.terms["model_states"] == 4 * 7e9 + 12 * 4e6
    assert large.terms["model_states"] - small.terms["model_states"] == 12 * 4e6
    bigger_base = estimate_peak(_lora_step(4e6, adapters, params=8e9), "ddp", 1, precision="fp32",
                                grads_held=True)
    assert bigger_base.terms["model_states"] - small.terms["model_states"] == 4 * 1e9


def test_lora_optimizer_temporaries_cover_only_the_adapters() -> None:
    shape = StepShape(
        params=7e9,
        layers=32,
        hidden=4096,
        heads=32,
        vocab=32000,
        seq_len=1,
        micro_batch=1,
        layer_params=2e8,
        trainable_params=4e6,
        adapters=Adapters.lora(LLAMA_7B, None),
    )
    peak = estimate_peak(shape, "ddp", 1, precision="fp32")
    # One token of activations is less than the adapters' foreach scratch, so the optimizer
    # step is the peak, and its scratch is 4 bytes per trainable parameter, not per parameter.
    assert peak.terms["optimizer_temporaries"] == 4 * 4e6


def test_lora_default_targets_are_pefts_and_all_linear_is_every_layer() -> None:
    assert Adapters.lora(LLAMA_7B, None).reads == ("attention_in", "attention_in")
    assert Adapters.lora(LLAMA_7B, "all-linear").reads == (
        "attention_in",
        "attention_in",
        "attention_in",
        "attention_out",
        "mlp_in",
        "mlp_in",
        "mlp_out",
    )
    gpt2 = replace(LLAMA_7B, gated_mlp=False)
    # GPT-2 names both output projections c_proj: an adapter on each.
    assert Adapters.lora(gpt2, ["c_proj"]).reads == ("attention_out", "mlp_out")
    with pytest.raises(ValueError, match="name no layer.*q_proj"):
        Adapters.lora(LLAMA_7B, ["query"])


@pytest.mark.parametrize(
    ("targets", "dropout", "scores_stored", "change"),
    [
        # Korthikanti's 34 less the inputs only weight gradients need (attention_in 2, mlp_in 2,
        # mlp_out 8; attention_out 2 only when the attention kernel does not keep its output),
        # except those an adapter reads.
        pytest.param(["q_proj", "v_proj"], 0.0, False, -10, id="q/v: mlp inputs go"),
        pytest.param(["q_proj", "v_proj"], 0.0, True, -12, id="q/v, scores stored: o's input too"),
        pytest.param("all-linear", 0.0, False, 0, id="all linear: every input stays"),
        pytest.param(["down_proj"], 0.0, False, -4, id="down: its 4h input stays"),
        # Dropout: each adapted layer keeps its own dropped copy (2) and mask (1) instead.
        pytest.param(["q_proj", "v_proj"], 0.1, False, -12 + 2 * 3, id="q/v with dropout"),
    ],
)
def test_lora_activations_keep_what_input_gradients_and_adapters_need(
    targets: list[str] | str, dropout: float, scores_stored: bool, change: float
) -> None:
    adapters = Adapters.lora(LLAMA_7B, targets, dropout)
    s, b, h, a = 2048, 1, 4096, 32
    full = activation_bytes_per_layer(s, b, h, a, attention_scores_stored=scores_stored)
    lora = activation_bytes_per_layer(
        s, b, h, a, attention_scores_stored=scores_stored, adapters=adapters
    )
    assert lora - full == pytest.approx(change * s * b * h)
    # Full recomputation keeps each layer's input, frozen or not.
    assert activation_bytes_per_layer(s, b, h, a, recompute="full", adapters=adapters) == (
        2 * s * b * h
    )


def test_lora_peak_is_far_below_full_training_of_the_same_model() -> None:
    full = estimate_peak(_lora_step(None, None), "ddp", 1)  # type: ignore[arg-type]
    lora = estimate_peak(_lora_step(4e6, Adapters.lora(LLAMA_7B, None)), "ddp", 1)
    assert lora.terms["model_states"] < full.terms["model_states"] / 7
    # Full training peaks in the optimizer step (foreach scratch for 7 B parameters); LoRA, in
    # backward, its adapters' scratch being tiny.
    assert "optimizer_temporaries" in full.terms and "activations" in lora.terms
    assert lora.total_bytes < full.total_bytes / 4
