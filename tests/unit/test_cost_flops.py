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
from peft import LoraConfig, get_peft_model
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
    Case(
        "llama tiny",
        "llama",
        dict(
            vocab_size=258,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
        ),
        seq_len=32,
    ),
    Case(
        "llama 60M",
        "llama",
        dict(
            vocab_size=32000,
            hidden_size=512,
            num_hidden_layers=8,
            num_attention_heads=8,
            intermediate_size=1376,
        ),
    ),
    Case(
        "tinyllama 1.1B (GQA 32/4)",
        "llama",
        dict(
            vocab_size=32000,
            hidden_size=2048,
            num_hidden_layers=22,
            num_attention_heads=32,
            num_key_value_heads=4,
            intermediate_size=5632,
        ),
        seq_len=256,
        batch=1,
    ),
    Case(
        "llama-3.2 1B (tied, GQA 32/8)",
        "llama",
        dict(
            vocab_size=128256,
            hidden_size=2048,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            intermediate_size=8192,
            tie_word_embeddings=True,
            head_dim=64,
        ),
        seq_len=256,
        batch=1,
    ),
    Case(
        "qwen2 tiny (qkv bias)",
        "qwen2",
        dict(
            vocab_size=1000,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=256,
        ),
    ),
    Case(
        "gpt2 tiny",
        "gpt2",
        dict(vocab_size=258, n_embd=64, n_layer=2, n_head=4, n_positions=64),
        seq_len=32,
    ),
    Case(
        "gpt2 124M",
        "gpt2",
        dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024),
    ),
    Case(
        "gpt2 355M",
        "gpt2",
        dict(vocab_size=50257, n_embd=1024, n_layer=24, n_head=16, n_positions=1024),
    ),
    Case(
        "gpt2 untied, n_inner",
        "gpt2",
        dict(
            vocab_size=5000,
            n_embd=256,
            n_layer=4,
            n_head=8,
            n_positions=256,
            n_inner=640,
            tie_word_embeddings=False,
        ),
    ),
    Case(
        "llama attention and MLP bias",
        "llama",
        dict(
            vocab_size=1000,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=256,
            attention_bias=True,
            mlp_bias=True,
        ),
    ),
    Case(
        "mistral tiny (GQA)",
        "mistral",
        dict(
            vocab_size=1000,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=256,
        ),
    ),
    Case(
        "qwen3 tiny (q/k norm, head_dim 64)",
        "qwen3",
        dict(
            vocab_size=1000,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=256,
            head_dim=64,
        ),
    ),
    Case(
        "phi3 tiny (fused qkv, gate_up)",
        "phi3",
        dict(
            vocab_size=1000,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=256,
            pad_token_id=None,
        ),
    ),
    Case(
        "gemma tiny (MQA, head_dim 64, tied)",
        "gemma",
        dict(
            vocab_size=1000,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            intermediate_size=256,
            head_dim=64,
            pad_token_id=None,
        ),
    ),
    Case(
        "gemma2 tiny (4 norms per layer)",
        "gemma2",
        dict(
            vocab_size=1000,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=256,
            head_dim=64,
            pad_token_id=None,
        ),
    ),
]


def _meta_model(case: Case) -> torch.nn.Module:
    # No special-token ids: GPT-2's default 50256 lies outside the small vocabularies here.
    config = AutoConfig.for_model(
        case.architecture,
        **case.config,
        use_cache=False,
        attn_implementation="eager",
        bos_token_id=None,
        eos_token_id=None,
    )
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
    # The optimizer's and FSDP's host work goes per tensor: count them as torch yields them.
    assert _shape(model).parameter_tensors() == len(list(model.parameters()))


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


BY_NAME = {case.name: case for case in CASES}
LORA_CASES = [
    ("llama tiny", None, 8),
    ("llama tiny", "all-linear", 16),
    ("llama 60M", ["q_proj", "k_proj", "v_proj", "o_proj"], 4),
    ("gpt2 tiny", None, 8),
    ("gpt2 tiny", ["c_proj"], 8),  # both of GPT-2's output projections
    ("gpt2 untied, n_inner", "all-linear", 16),
    ("phi3 tiny (fused qkv, gate_up)", ["qkv_proj"], 8),
    ("phi3 tiny (fused qkv, gate_up)", "all-linear", 16),
    ("gemma tiny (MQA, head_dim 64, tied)", ["gate_proj", "down_proj"], 8),
]


# peft reads transformers' deprecated is_gradient_checkpointing; GPT-2's Conv1D gets a note that
# peft sets fan_in_fan_out itself.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:fan_in_fan_out is set to False:UserWarning")
@pytest.mark.parametrize(
    ("name", "targets", "rank"),
    LORA_CASES,
    ids=[f"{name}, {targets} r{rank}" for name, targets, rank in LORA_CASES],
)
def test_lora_parameters_equal_pefts_trainable_count(
    name: str, targets: list[str] | str | None, rank: int
) -> None:
    model = _meta_model(BY_NAME[name])
    shape = _shape(model)
    config = LoraConfig(r=rank, target_modules=targets, task_type="CAUSAL_LM")
    with torch.device("meta"):
        wrapped = get_peft_model(model, config)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert shape.lora_parameter_count(targets, rank) == trainable


def test_the_megatron_form_is_the_special_case_f_4d_without_gqa() -> None:
    # Narayanan et al. 2021, section 5.1: 72·l·h²·(1 + s/6h + V/12lh) per token.
    layers, hidden, seq_len, vocab = 24, 1024, 2048, 50257
    shape = TransformerShape(
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=16,
        num_kv_heads=16,
        head_dim=64,
        intermediate_size=4 * hidden,
        gated_mlp=False,
        tied_embeddings=True,
    )
    megatron = (
        72 * layers * hidden**2 * (1 + seq_len / (6 * hidden) + vocab / (12 * layers * hidden))
    )
    assert training_flops_per_token(shape, seq_len) == pytest.approx(megatron, rel=1e-12)
    with_recompute = (
        96 * layers * hidden**2 * (1 + seq_len / (6 * hidden) + vocab / (16 * layers * hidden))
    )
    assert training_flops_per_token(shape, seq_len, recompute=True) == pytest.approx(
        with_recompute, rel=1e-12
    )


def test_an_architecture_without_a_formula_is_named() -> None:
    with pytest.raises(SpecError, match=r"model_type 't5' has no FLOPs formula.*bert.*gpt2"):
        TransformerShape.from_config({"model_type": "t5"})


MINILM_L6 = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                 intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)
"""all-MiniLM-L6-v2's sizes (its config.json): the encoder examples/classify-minilm.yaml tunes."""


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_an_encoder_counts_its_parameters_flops_and_lora_like_torch_and_peft() -> None:
    from peft import TaskType
    from transformers import AutoModel, AutoModelForSequenceClassification

    config = AutoConfig.for_model("bert", **MINILM_L6, attn_implementation="eager")
    shape = TransformerShape.from_config(config.to_dict())
    model = AutoModel.from_config(config)
    assert shape.parameter_count() == sum(p.numel() for p in model.parameters())
    assert shape.parameter_tensors() == len(list(model.parameters()))
    seq_len, batch = 64, 2
    counter = FlopCounterMode(display=False)
    with counter:
        ids = torch.randint(0, 1000, (batch, seq_len))
        model(input_ids=ids).last_hidden_state.sum().backward()
    measured = counter.get_total_flops() / (batch * seq_len)
    # the pooler works on one token per sequence: 0.007 % here
    assert training_flops_per_token(shape, seq_len) == pytest.approx(measured, rel=1e-3)
    classifier = AutoModelForSequenceClassification.from_config(
        AutoConfig.for_model("bert", **MINILM_L6, num_labels=2))
    tuned = get_peft_model(classifier, LoraConfig(r=8, task_type=TaskType.SEQ_CLS))
    trainable = sum(p.numel() for p in tuned.parameters() if p.requires_grad)
    head = 384 * 2 + 2  # peft trains the new classifier too
    assert shape.lora_parameter_count(None, 8) + head == trainable
