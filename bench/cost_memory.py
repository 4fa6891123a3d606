"""Closed-form memory vs the exact fake-tensor trace over many configurations.

Both are fp32, one device, AdamW (foreach), no sharding: the exact mode traces what the CPU
trainer would allocate. Prints one row per configuration and the mean / max absolute error.

    .venv/bin/python bench/cost_memory.py
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

from scheduler.cost.exact import traced_peak
from scheduler.cost.flops import TransformerShape
from scheduler.cost.memory import StepShape, estimate_peak, stores_attention_scores

MODELS: list[tuple[str, dict[str, Any]]] = [
    ("llama", {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
               "num_key_value_heads": 2, "intermediate_size": 344, "vocab_size": 2048}),
    ("llama", {"hidden_size": 256, "num_hidden_layers": 6, "num_attention_heads": 8,
               "num_key_value_heads": 8, "intermediate_size": 688, "vocab_size": 8000}),
    ("llama", {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
               "num_key_value_heads": 4, "intermediate_size": 1376, "vocab_size": 32000}),
    ("gpt2", {"n_embd": 256, "n_layer": 4, "n_head": 4, "vocab_size": 4096, "n_positions": 1024}),
    ("gpt2", {"n_embd": 384, "n_layer": 6, "n_head": 6, "vocab_size": 8192, "n_positions": 1024}),
]
SEQ_LENS = [128, 512]
MICRO_BATCHES = [1, 4, 8]


def closed_form(architecture: str, config: dict[str, Any], seq_len: int, micro_batch: int) -> float:
    from transformers import AutoConfig

    full = AutoConfig.for_model(architecture, **config).to_dict()
    shape = TransformerShape.from_config(full)
    step = StepShape(params=shape.parameter_count(), layers=shape.num_layers,
                     hidden=shape.hidden_size, heads=shape.num_heads, vocab=shape.vocab_size,
                     seq_len=seq_len, micro_batch=micro_batch,
                     layer_params=shape.layer_matmul_parameters / shape.num_layers)
    return estimate_peak(step, "ddp", 1, precision="fp32",
                         attention_scores_stored=stores_attention_scores(full)).total_bytes


def main() -> None:
    errors = []
    print(f"{'model':>6} {'hidden':>6} {'layers':>6} {'seq':>5} {'mb':>3} "
          f"{'closed MiB':>10} {'exact MiB':>10} {'error':>7}")
    for (architecture, config), seq_len, micro_batch in itertools.product(
            MODELS, SEQ_LENS, MICRO_BATCHES):
        exact = traced_peak(architecture, config, seq_len, micro_batch).total_bytes
        closed = closed_form(architecture, config, seq_len, micro_batch)
        error = closed / exact - 1
        errors.append(abs(error))
        hidden = config.get("hidden_size", config.get("n_embd"))
        layers = config.get("num_hidden_layers", config.get("n_layer"))
        print(f"{architecture:>6} {hidden:>6} {layers:>6} {seq_len:>5} {micro_batch:>3} "
              f"{closed / 2**20:>10.1f} {exact / 2**20:>10.1f} {error:>+7.1%}")
    print(f"configurations {len(errors)}, mean |error| {statistics.mean(errors):.1%}, "
          f"max |error| {max(errors):.1%}")


if __name__ == "__main__":
    main()
