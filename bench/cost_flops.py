"""Parameters and training FLOPs of the cost model against the real models, at published sizes.

For each architecture transformers builds the model from a config alone (no hub access) on the
meta device (shapes only, no memory: a 7 B model costs seconds), with eager attention, whose
QKᵀ and AV are matmuls that ``FlopCounterMode`` counts. The cost model's numbers come from
``scheduler.cost.flops`` on the same config dict:

* parameters: ``TransformerShape.parameter_count()`` against ``sum(p.numel())`` over
  ``model.parameters()`` (tied weights once);
* training FLOPs per token: ``training_flops_per_token`` against torch's count of one forward
  and backward of a batch, divided by its tokens;
* LoRA: ``lora_parameter_count`` against the trainable parameters of peft's ``get_peft_model``
  (rank 8 on peft's default targets and rank 16 on every linear layer).

    .venv/bin/python bench/cost_flops.py
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from peft import LoraConfig, get_peft_model
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from scheduler.cost.flops import TransformerShape, training_flops_per_token

ENCODERS = frozenset({"bert"})


@dataclass(frozen=True)
class Case:
    name: str
    architecture: str
    config: dict[str, Any]
    seq_len: int = 256


def _llama(
    hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int, **extra: Any
) -> dict[str, Any]:
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        vocab_size=vocab,
        **extra,
    )


# Sizes from each model's published config.json (hidden, layers, heads, KV heads, MLP, vocab).
CASES = [
    Case("Llama-2 7B (MHA, untied)", "llama", _llama(4096, 32, 32, 32, 11008, 32000), 4096),
    Case(
        "Llama-3 8B (GQA 32/8)",
        "llama",
        _llama(4096, 32, 32, 8, 14336, 128256, rope_theta=500000.0),
        8192,
    ),
    Case(
        "Llama-3.2 1B (GQA, tied)",
        "llama",
        _llama(2048, 16, 32, 8, 8192, 128256, head_dim=64, tie_word_embeddings=True),
        2048,
    ),
    Case("TinyLlama 1.1B (GQA 32/4)", "llama", _llama(2048, 22, 32, 4, 5632, 32000), 2048),
    Case(
        "Llama tiny, attention + MLP bias",
        "llama",
        _llama(256, 2, 4, 2, 688, 1000, attention_bias=True, mlp_bias=True),
    ),
    Case(
        "GPT-2 124M (tied)",
        "gpt2",
        dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024),
        1024,
    ),
    Case(
        "GPT-2 medium 355M",
        "gpt2",
        dict(n_embd=1024, n_layer=24, n_head=16, vocab_size=50257, n_positions=1024),
    ),
    Case("Mistral 7B (GQA 32/8)", "mistral", _llama(4096, 32, 32, 8, 14336, 32000), 4096),
    Case(
        "Qwen2 0.5B (qkv bias, GQA 14/2, tied)",
        "qwen2",
        _llama(896, 24, 14, 2, 4864, 151936, tie_word_embeddings=True),
        2048,
    ),
    Case("Qwen2.5 7B (qkv bias, GQA 28/4)", "qwen2", _llama(3584, 28, 28, 4, 18944, 152064), 4096),
    Case(
        "Qwen3 0.6B (q/k norm, d_h 128, tied)",
        "qwen3",
        _llama(1024, 28, 16, 8, 3072, 151936, head_dim=128, tie_word_embeddings=True),
    ),
    Case(
        "Phi-3 mini 3.8B (fused qkv, gate_up)", "phi3", _llama(3072, 32, 32, 32, 8192, 32064), 4096
    ),
    Case(
        "Gemma 2B (MQA, d_h 256, tied)",
        "gemma",
        _llama(2048, 18, 8, 1, 16384, 256000, head_dim=256),
        2048,
    ),
    Case(
        "all-MiniLM-L6-v2 (BERT encoder)",
        "bert",
        dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
             intermediate_size=1536, vocab_size=30522, max_position_embeddings=512),
        128,
    ),
    Case(
        "Gemma-2 2B (4 norms, softcap)",
        "gemma2",
        _llama(2304, 26, 8, 4, 9216, 256000, head_dim=256),
        2048,
    ),
]


def meta_model(case: Case) -> torch.nn.Module:
    """The real transformers model on the meta device, eager attention, no special tokens."""
    config = AutoConfig.for_model(
        case.architecture,
        **case.config,
        use_cache=False,
        attn_implementation="eager",
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    with torch.device("meta"):
        if case.architecture in ENCODERS:
            return AutoModel.from_config(config)
        return AutoModelForCausalLM.from_config(config)


def counted_flops_per_token(model: torch.nn.Module, seq_len: int, batch: int = 1) -> float:
    """torch's count of one forward and backward, per token."""
    ids = torch.zeros(batch, seq_len, dtype=torch.long, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        # An explicit all-ones mask keeps transformers from inspecting values meta lacks.
        # (an encoder is given no mask: its mask check reads values the meta device lacks)
        mask = None if model.config.model_type in ENCODERS else torch.ones_like(ids)
        out = model(input_ids=ids, attention_mask=mask)
        logits = out.logits if hasattr(out, "logits") else out.last_hidden_state
        logits.float().sum().backward()
    return counter.get_total_flops() / (batch * seq_len)


def peft_trainable(
    model: torch.nn.Module, target_modules: list[str] | str | None, rank: int
) -> int:
    task = "FEATURE_EXTRACTION" if model.config.model_type in ENCODERS else "CAUSAL_LM"
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=target_modules,
                        task_type=task)
    with torch.device("meta"):
        wrapped = get_peft_model(model, config)
    return sum(p.numel() for p in wrapped.parameters() if p.requires_grad)


def main() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renames
    warnings.filterwarnings("ignore", message="fan_in_fan_out")  # peft on GPT-2's Conv1D
    transformers.logging.set_verbosity_error()
    print(
        f"{'model':<40} {'params (torch)':>15} {'params (ours)':>14} {'error':>8} "
        f"{'GFLOP/token (torch)':>19} {'(ours)':>8} {'error':>8}   seq"
    )
    parameter_errors, flop_errors, lora_rows = [], [], []
    start_s = time.perf_counter()
    for case in CASES:
        model = meta_model(case)
        shape = TransformerShape.from_config(model.config.to_dict())
        real = sum(p.numel() for p in model.parameters())
        ours = shape.parameter_count()
        counted = counted_flops_per_token(model, case.seq_len)
        predicted = training_flops_per_token(shape, case.seq_len)
        parameter_errors.append(abs(ours / real - 1))
        flop_errors.append(abs(predicted / counted - 1))
        print(
            f"{case.name:<40} {real:>15,} {ours:>14,} {ours / real - 1:>+8.2%} "
            f"{counted / 1e9:>19.3f} {predicted / 1e9:>8.3f} {predicted / counted - 1:>+8.2%}"
            f"   {case.seq_len}",
            flush=True,
        )
        targets: list[tuple[list[str] | str | None, int]] = [("all-linear", 16)]
        if not shape.fused_projections:  # peft has no default target for Phi-3
            targets.insert(0, (None, 8))
        for target, rank in targets:
            lora_rows.append(
                (
                    case.name,
                    target,
                    rank,
                    peft_trainable(meta_model(case), target, rank),
                    shape.lora_parameter_count(target, rank),
                )
            )
    print(
        f"{len(CASES)} models: parameters mean |error| {statistics.mean(parameter_errors):.3%}, "
        f"max {max(parameter_errors):.3%} (equal in {parameter_errors.count(0.0)}); training "
        f"FLOPs per token mean |error| {statistics.mean(flop_errors):.3%}, max "
        f"{max(flop_errors):.3%} (equal in {flop_errors.count(0.0)})"
    )
    print()
    print(f"{'model':<40} {'LoRA':>16} {'trainable (peft)':>17} {'(ours)':>12} {'error':>8}")
    lora_errors = []
    for name, target, rank, peft_count, ours in lora_rows:
        label = f"{target or 'peft default'} r{rank}"
        lora_errors.append(abs(ours / peft_count - 1))
        print(
            f"{name:<40} {label:>16} {peft_count:>17,} {ours:>12,} {ours / peft_count - 1:>+8.2%}"
        )
    print(
        f"{len(lora_rows)} LoRA settings: trainable parameters max |error| "
        f"{max(lora_errors):.3%} (equal in {lora_errors.count(0.0)}); "
        f"{time.perf_counter() - start_s:.0f} s"
    )


if __name__ == "__main__":
    main()
