"""Compression on a tiny random model: quantization, pruning, distillation loss, measurements."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from scheduler.domain.spec import ModelSpec
from workers.core.compress_distill import build_student, distillation_loss
from workers.core.compress_export import (
    load_compressed_model,
    save_compressed_model,
    save_quantized_model,
)
from workers.core.compress_measure import count_parameters, paired_latency_s
from workers.core.compress_prune import prunable_layers, prune_magnitude
from workers.core.compress_quantize import (
    Int4WeightOnlyLinear,
    QuantizeResult,
    quantize_int4_weight_only,
    quantize_int8_dynamic,
)
from workers.core.model import build_model
from workers.core.tokenizer import ByteTokenizer

# Widths the int4 kernel takes (multiples of 32), except the MLP's 80-wide down projection input.
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 80}


@pytest.fixture
def model() -> PreTrainedModel:
    return build_model(ModelSpec(architecture="llama", config=TINY), ByteTokenizer(), 0).eval()


def _inputs() -> torch.Tensor:
    return torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=_inputs()).logits


QUANTIZERS = {
    # dtype: (quantize, group size, largest logit change as a fraction of the largest logit).
    # Bounds measured on this random model: int8 moves the logits 2 %, int4 13 % (16 levels
    # per group of 32 weights).
    "int8": (quantize_int8_dynamic, 32, 0.05),
    "int4": (lambda model: quantize_int4_weight_only(model, 32), 32, 0.25),
}


@pytest.mark.parametrize("dtype", sorted(QUANTIZERS))
def test_a_quantized_export_loads_back_to_the_same_outputs(
        dtype: str, model: PreTrainedModel, tmp_path: Path) -> None:
    quantize, group_size, bound = QUANTIZERS[dtype]
    reference = _logits(model)
    result: QuantizeResult = quantize(model)
    quantized_logits = _logits(model)
    save_quantized_model(model, result, group_size, tmp_path / "export", None,
                         {"method": "quantize"})
    loaded = load_compressed_model(tmp_path / "export")
    assert torch.equal(_logits(loaded), quantized_logits)
    # Quantization moves the outputs a little, never wildly: the weights are within a step.
    assert 0 < (quantized_logits - reference).abs().max() < bound * reference.abs().max()


def test_int4_codes_are_within_half_a_step_of_the_weights() -> None:
    linear = nn.Linear(64, 40)  # 40 output rows: padded to 48 for the kernel
    module = Int4WeightOnlyLinear.from_linear(linear, group_size=32)
    step = module.scales.float().repeat_interleave(32, dim=1)
    error = (module.dequantized_weight() - linear.weight.detach()).abs()
    # bf16 scales and zeros add their own rounding (8 significant bits) to the half step.
    assert (error <= step / 2 + 0.01 * linear.weight.detach().abs().max()).all()
    inputs = torch.randn(3, 5, 64)
    expected = F.linear(inputs, module.dequantized_weight(), linear.bias.detach())
    assert torch.allclose(module(inputs), expected, atol=0.05)


def test_int4_leaves_layers_the_kernel_cannot_take_in_fp32(model: PreTrainedModel) -> None:
    result = quantize_int4_weight_only(model, group_size=32)
    assert set(result.skipped) == {f"model.layers.{i}.mlp.down_proj" for i in range(2)}
    assert all("input width 80" in reason for reason in result.skipped.values())
    assert "lm_head" in result.quantized  # 258 rows, padded to 272 for the kernel


def test_quantization_keeps_the_parameter_count(model: PreTrainedModel) -> None:
    before, _ = count_parameters(model)
    quantize_int8_dynamic(model)
    after, nonzero = count_parameters(model)
    assert after == before and 0 < nonzero <= after


@pytest.mark.parametrize("structure", ["unstructured", "structured"])
def test_pruning_reaches_the_target_sparsity_and_spares_the_output_embedding(
        structure: str, model: PreTrainedModel, tmp_path: Path) -> None:
    output_before = model.lm_head.weight.detach().clone()
    result = prune_magnitude(model, 0.5, structure)
    assert result.sparsity == pytest.approx(0.5, abs=0.01)
    assert torch.equal(model.lm_head.weight, output_before)
    for _, linear in prunable_layers(model):
        assert not hasattr(linear, "weight_mask")  # made permanent: a plain parameter again
        if structure == "structured":
            zero_rows = (linear.weight == 0).all(dim=1).sum()
            assert zero_rows == round(0.5 * linear.out_features)
    save_compressed_model(model, tmp_path / "export", None, {"method": "prune"})
    loaded = load_compressed_model(tmp_path / "export")
    assert torch.equal(_logits(loaded), _logits(model))
    assert count_parameters(loaded)[1] == count_parameters(model)[1]


def test_the_distillation_loss_blends_soft_and_hard_terms() -> None:
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 11, generator=generator), torch.randn(2, 3, 11)
    labels = torch.randint(0, 11, (2, 3), generator=generator)
    hard = float(F.cross_entropy(student.flatten(0, 1), labels.flatten()))

    def loss(student: torch.Tensor, temperature: float, alpha: float) -> float:
        return float(distillation_loss(student, teacher, labels, temperature, alpha))

    assert loss(student, 2.0, alpha=0.0) == pytest.approx(hard)
    # A student equal to its teacher pays nothing for the soft term.
    assert loss(teacher, 4.0, alpha=1.0) == pytest.approx(0.0, abs=1e-6)
    soft = float(F.kl_div(F.log_softmax(student / 3, -1).flatten(0, 1),
                          F.softmax(teacher / 3, -1).flatten(0, 1), reduction="batchmean"))
    assert loss(student, 3.0, alpha=1.0) == pytest.approx(9 * soft, rel=1e-5)
    assert loss(student, 3.0, alpha=0.25) == pytest.approx(0.25 * 9 * soft + 0.75 * hard,
                                                            rel=1e-5)


def test_the_student_is_the_teachers_config_with_the_changes(model: PreTrainedModel) -> None:
    student = build_student(model, {"hidden_size": 32, "num_hidden_layers": 1},
                            ByteTokenizer(), seed=0)
    assert type(student) is type(model)
    config = student.config
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (32, 1, 80)
    assert config.head_dim == 32 // 4  # derived again from the student's own width
    assert student.lm_head.weight.shape[0] == model.lm_head.weight.shape[0]


def test_paired_latency_times_each_model_on_the_same_batch(model: PreTrainedModel) -> None:
    smaller = copy.deepcopy(model)
    before_s, after_s = paired_latency_s(model, smaller, {"input_ids": _inputs()}, runs=3)
    assert before_s > 0 and after_s > 0 and math.isfinite(before_s + after_s)
