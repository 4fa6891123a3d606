"""Closed-form memory vs the exact fake-tensor trace over many configurations.

Part 1: fp32, one device, AdamW (foreach), no sharding, as the CPU trainer runs: full training
over 5 small Llama and GPT-2 models × sequence 128/512 × micro-batch 1/4/8, then LoRA (peft:
frozen base, adapters on q/v at rank 8 or on every linear layer at rank 16, one case with
adapter dropout).

Part 2: the trainer's set-up at Llama-3 shapes (8B and 70B layer shapes, and a 1B model with
full multi-head attention): fp32 and bf16 mixed precision (fp32 master weights, bf16 autocast,
a frozen base in bf16), full training and LoRA (q/v r16, all-linear r16), with and without
full activation checkpointing, at (sequence, micro-batch) (2048, 1) and (4096, 4).

Prints one row per configuration and the mean / max absolute error, overall and per part.

    .venv/bin/python bench/cost_memory.py
"""

from __future__ import annotations

import itertools
import statistics
import warnings
from typing import Any

from scheduler.cost.exact import LoraSetting, traced_peak
from scheduler.cost.flops import TransformerShape
from scheduler.cost.memory import StepShape, estimate_peak, stores_attention_scores

LLAMA_SMALL = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 344,
    "vocab_size": 2048,
}
LLAMA_MEDIUM = {
    "hidden_size": 256,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "intermediate_size": 688,
    "vocab_size": 8000,
}
LLAMA_LARGE = {
    "hidden_size": 512,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "intermediate_size": 1376,
    "vocab_size": 32000,
}
GPT2_SMALL = {"n_embd": 256, "n_layer": 4, "n_head": 4, "vocab_size": 4096, "n_positions": 1024}
GPT2_MEDIUM = {"n_embd": 384, "n_layer": 6, "n_head": 6, "vocab_size": 8192, "n_positions": 1024}

MODELS: list[tuple[str, dict[str, Any]]] = [
    ("llama", LLAMA_SMALL),
    ("llama", LLAMA_MEDIUM),
    ("llama", LLAMA_LARGE),
    ("gpt2", GPT2_SMALL),
    ("gpt2", GPT2_MEDIUM),
]
SEQ_LENS = [128, 512]
MICRO_BATCHES = [1, 4, 8]

QV_R8 = LoraSetting(rank=8, target_modules=("q_proj", "v_proj"))
ALL_R16 = LoraSetting(rank=16, target_modules="all-linear")
LORA_MODELS: list[tuple[str, dict[str, Any], LoraSetting]] = [
    ("llama", LLAMA_SMALL, QV_R8),
    ("llama", LLAMA_SMALL, ALL_R16),
    ("llama", LLAMA_MEDIUM, QV_R8),
    ("llama", LLAMA_MEDIUM, ALL_R16),
    ("llama", LLAMA_MEDIUM, LoraSetting(rank=8, target_modules=("q_proj", "v_proj"), dropout=0.05)),
    ("llama", LLAMA_LARGE, QV_R8),
    ("llama", LLAMA_LARGE, ALL_R16),
    ("gpt2", GPT2_MEDIUM, LoraSetting(rank=8, target_modules=("c_attn",))),
]
LORA_BATCHES = [(128, 4), (512, 1), (512, 8)]
"""(sequence, micro-batch) pairs of the LoRA rows: small, long-and-thin, large."""


def _llama3(hidden: int, ffn: float, heads: int, kv_heads: int, layers: int,
            vocab: int) -> dict[str, Any]:
    return {"vocab_size": vocab, "hidden_size": hidden, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "intermediate_size": int(ffn * hidden),
            "tie_word_embeddings": False, "num_hidden_layers": layers}


LLAMA3_SHAPES: list[tuple[str, dict[str, Any]]] = [
    # Llama 3 8B and 70B (Meta's model cards: d 4096/8192, 32/64 heads, 8 KV heads, MLP
    # 14336/28672, vocabulary 128256); a 1B-class model with full multi-head attention.
    ("8B", _llama3(4096, 3.5, 32, 8, 32, 128256)),
    ("70B", _llama3(8192, 3.5, 64, 8, 80, 128256)),
    ("1B-mha", _llama3(2048, 2.6875, 16, 16, 16, 32000)),
]
LLAMA3_LORA = [None, LoraSetting(16, ("q_proj", "v_proj")), LoraSetting(16, "all-linear")]
LLAMA3_BATCHES = [(2048, 1), (4096, 4)]


def closed_form(
    architecture: str,
    config: dict[str, Any],
    seq_len: int,
    micro_batch: int,
    lora: LoraSetting | None = None,
    precision: str = "fp32",
    recompute: bool = False,
) -> float:
    from transformers import AutoConfig

    full = AutoConfig.for_model(architecture, **config).to_dict()
    shape = TransformerShape.from_config(full)
    targets, rank, dropout = (lora.target_modules, lora.rank, lora.dropout) if lora \
        else (None, 0, 0.0)
    step = StepShape.of_model(shape, seq_len, micro_batch, targets, rank, dropout)
    return estimate_peak(
        step, "ddp", 1, precision=precision,  # type: ignore[arg-type]
        recompute="full" if recompute else "none",
        attention_scores_stored=stores_attention_scores(full),
    ).total_bytes


def lora_label(lora: LoraSetting | None) -> str:
    if lora is None:
        return "-"
    targets = lora.target_modules
    names = (
        targets
        if isinstance(targets, str)
        else "/".join(name.removesuffix("_proj") for name in targets or ("default",))
    )
    return f"{names} r{lora.rank}" + (f" drop{lora.dropout:g}" if lora.dropout else "")


def main() -> None:
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renames, via peft
    transformers.logging.set_verbosity_error()
    cases: list[tuple[str, dict[str, Any], int, int, LoraSetting | None]] = [
        (architecture, config, seq_len, micro_batch, None)
        for (architecture, config), seq_len, micro_batch in itertools.product(
            MODELS, SEQ_LENS, MICRO_BATCHES
        )
    ] + [
        (architecture, config, seq_len, micro_batch, lora)
        for (architecture, config, lora), (seq_len, micro_batch) in itertools.product(
            LORA_MODELS, LORA_BATCHES
        )
    ]
    errors: dict[str, list[float]] = {"full": [], "lora": []}
    print(
        f"{'model':>6} {'hidden':>6} {'layers':>6} {'seq':>5} {'mb':>3} {'lora':>18} "
        f"{'closed MiB':>10} {'exact MiB':>10} {'error':>7}"
    )
    for architecture, config, seq_len, micro_batch, lora in cases:
        exact = traced_peak(architecture, config, seq_len, micro_batch, lora=lora).total_bytes
        closed = closed_form(architecture, config, seq_len, micro_batch, lora)
        error = closed / exact - 1
        errors["full" if lora is None else "lora"].append(abs(error))
        hidden = config.get("hidden_size", config.get("n_embd"))
        layers = config.get("num_hidden_layers", config.get("n_layer"))
        print(
            f"{architecture:>6} {hidden:>6} {layers:>6} {seq_len:>5} {micro_batch:>3} "
            f"{lora_label(lora):>18} {closed / 2**20:>10.1f} {exact / 2**20:>10.1f} "
            f"{error:>+7.1%}",
            flush=True,
        )
    print()
    print(f"{'shape':>6} {'precision':>10} {'lora':>16} {'ckpt':>4} {'seq':>5} {'mb':>3} "
          f"{'closed GiB':>10} {'exact GiB':>10} {'error':>7}")
    errors["trainer set-up"] = []
    for (name, config), precision, lora, recompute, (seq_len, micro_batch) in itertools.product(
            LLAMA3_SHAPES, ("fp32", "bf16_mixed"), LLAMA3_LORA, (False, True), LLAMA3_BATCHES):
        exact = traced_peak("llama", config, seq_len, micro_batch, lora=lora,
                            precision=precision, recompute=recompute).total_bytes
        closed = closed_form("llama", config, seq_len, micro_batch, lora, precision, recompute)
        error = closed / exact - 1
        errors["trainer set-up"].append(abs(error))
        print(f"{name:>6} {precision:>10} {lora_label(lora):>16} {'full' if recompute else '-':>4}"
              f" {seq_len:>5} {micro_batch:>3} {closed / 2**30:>10.2f} {exact / 2**30:>10.2f} "
              f"{error:>+7.1%}", flush=True)
    everything = errors["full"] + errors["lora"] + errors["trainer set-up"]
    for name, values in (
        ("full training", errors["full"]),
        ("LoRA", errors["lora"]),
        ("trainer set-up", errors["trainer set-up"]),
        ("all", everything),
    ):
        print(
            f"{name:>13}: configurations {len(values)}, mean |error| "
            f"{statistics.mean(values):.1%}, max |error| {max(values):.1%}"
        )


if __name__ == "__main__":
    main()
