"""The cost model's FLOPs formula against torch's own count on real transformers models.

Each model is built by transformers on the meta device (shapes only, no memory, so 1B-parameter
configs cost milliseconds) with eager attention, whose QKᵀ and AV are matmuls that
``FlopCounterMode`` sees (torch's CPU SDPA kernel is not counted). A forward and backward of one
batch is counted and divided by its tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModelForCausalLM

from scheduler.cost.flops import TransformerShape, training_flops_per_token
from scheduler.domain.errors import SpecError
from workers.core.parallelize import apply_activation_checkpointing

AGREEMENT = 0.02
"""Relative tolerance; torch counts only matmuls too, so the formula is measured exact."""


@dataclass(frozen=True)
class Case:
    name: str
    architecture: str
    config: dict[str, Any]
    seq_len: int = 128
    batch: int = 2


CASES = [
    Case("llama tiny", "llama", dict(vocab_size=258, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2,
                                     intermediate_size=128), seq_len=32),
    Case("llama 60M", "llama", dict(vocab_size=32000, hidden_size=512, num_hidden_layers=8,
                                    num_attention_heads=8, intermediate_size=1376)),
    Case("tinyllama 1.1B (GQA 32/4)", "llama", dict(
        vocab_size=32000, hidden_size=2048, num_hidden_layers=22, num_attention_heads=32,
        num_key_value_heads=4, intermediate_size=5632), seq_len=256, batch=1),
    Case("llama-3.2 1B (tied, GQA 32/8)", "llama", dict(
        vocab_size=128256, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, intermediate_size=8192, tie_word_embeddings=True,
        head_dim=64), seq_len=256, batch=1),
    Case("qwen2 tiny (qkv bias)", "qwen2", dict(vocab_size=1000, hidden_size=128,
                                                num_hidden_layers=2, num_attention_heads=4,
                                                num_key_value_heads=2, intermediate_size=256)),
    Case("gpt2 tiny", "gpt2", dict(vocab_size=258, n_embd=64, n_layer=2, n_head=4,
                                   n_positions=64), seq_len=32),
    Case("gpt2 124M", "gpt2", dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12,
                                   n_positions=1024)),
    Case("gpt2 355M", "gpt2", dict(vocab_size=50257, n_embd=1024, n_layer=24, n_head=16,
                                   n_positions=1024)),
    Case("gpt2 untied, n_inner", "gpt2", dict(vocab_size=5000, n_embd=256, n_layer=4,
                                              n_head=8, n_positions=256, n_inner=640,
                                              tie_word_embeddings=False)),
]


def _meta_model(case: Case) -> torch.nn.Module:
    # No special-token ids: GPT-2's default 50256 lies outside the small vocabularies here.
    config = AutoConfig.for_model(case.architecture, **case.config, use_cache=False,
                                  attn_implementation="eager", bos_token_id=None,
                                  eos_token_id=None)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _counted_flops_per_token(model: torch.nn.Module, case: Case) -> float:
    ids = torch.zeros(case.batch, case.seq_len, dtype=torch.long, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        # An explicit all-ones mask keeps transformers from inspecting values meta lacks.
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        logits.float().sum().backward()
    return counter.get_total_flops() / (case.batch * case.seq_len)


def _shape(model: torch.nn.Module) -> TransformerShape:
    return TransformerShape.from_config(model.config.to_dict())


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_parameter_count_equals_the_models(case: Case) -> None:
    model = _meta_model(case)
    assert _shape(model).parameter_count() == model.num_parameters()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_training_flops_match_torchs_count_of_forward_and_backward(case: Case) -> None:
    model = _meta_model(case)
    counted = _counted_flops_per_token(model, case)
    predicted = training_flops_per_token(_shape(model), case.seq_len)
    assert predicted == pytest.approx(counted, rel=AGREEMENT)


@pytest.mark.parametrize("case", [CASES[1], CASES[6]], ids=[CASES[1].name, CASES[6].name])
def test_recomputation_adds_one_forward_of_the_layers(case: Case) -> None:
    model = _meta_model(case)
    apply_activation_checkpointing(model)
    model.train()
    # torch stops recomputing once backward has what it needs, which skips a block's last
    # matmul when nothing after it saves its output (Llama's down_proj): up to 2·d·f per layer
    # less than the formula's whole forward. Without early stop the whole forward reruns.
    with torch.utils.checkpoint.set_checkpoint_early_stop(False):
        counted = _counted_flops_per_token(model, case)
    predicted = training_flops_per_token(_shape(model), case.seq_len, recompute=True)
    assert predicted == pytest.approx(counted, rel=AGREEMENT)


def test_the_megatron_form_is_the_special_case_f_4d_without_gqa() -> None:
    # Narayanan et al. 2021, section 5.1: 72·l·h²·(1 + s/6h + V/12lh) per token.
    layers, hidden, seq_len, vocab = 24, 1024, 2048, 50257
    shape = TransformerShape(vocab_size=vocab, hidden_size=hidden, num_layers=layers,
                             num_heads=16, num_kv_heads=16, head_dim=64,
                             intermediate_size=4 * hidden, gated_mlp=False,
                             tied_embeddings=True)
    megatron = 72 * layers * hidden**2 * (1 + seq_len / (6 * hidden)
                                          + vocab / (12 * layers * hidden))
    assert training_flops_per_token(shape, seq_len) == pytest.approx(megatron, rel=1e-12)
    with_recompute = 96 * layers * hidden**2 * (1 + seq_len / (6 * hidden)
                                                + vocab / (16 * layers * hidden))
    assert training_flops_per_token(shape, seq_len, recompute=True) == pytest.approx(
        with_recompute, rel=1e-12)


def test_an_architecture_without_a_formula_is_named() -> None:
    with pytest.raises(SpecError, match=r"model_type 'bert' has no FLOPs formula.*gpt2"):
        TransformerShape.from_config({"model_type": "bert"})
