"""What the planner knows about a model: parameters, FLOPs and the sizes its terms read.

:func:`model_profile` derives it from a transformers config (:mod:`scheduler.cost.flops`); job
kinds that train part of a model or hold a second one adjust it
(``workers.model_config``). Stored on each job as JSON, so every field has a default
that keeps older stored profiles loadable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.cost.flops import TransformerShape, training_flops_per_token


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """What the planner needs to know about a model (from its config: scheduler.cost.flops)."""

    params: float
    layer_params: float
    layers: int
    hidden: int
    heads: int
    vocab: int
    flops_per_token: float
    """Training FLOPs per token (forward + backward), without recomputation."""
    trainable_params: float | None = None
    recompute_flops_per_token: float | None = None
    """The same with full activation recomputation (one more forward of the blocks)."""
    kv_heads: int | None = None
    intermediate: int | None = None
    tensor_parallel: bool = True
    """Whether the trainer can shard this architecture with tensor parallelism."""
    strategies: tuple[str, ...] | None = None
    """Strategies the job's trainer runs (None: every one); LoRA runs replicated only."""
    resident_bytes: float = 0.0
    """Bytes per device held beside the trained model (a distillation teacher's weights)."""
    extra_flops_per_token: float = 0.0
    """FLOPs per token beyond training the model (the teacher's forward pass)."""
    trains: bool = True
    """False for a job that only runs the model forward (quantize, prune): one device, no
    gradients or optimizer states, forward FLOPs only."""
    adapter_reads: tuple[str, ...] | None = None
    """LoRA: the input each adapted linear layer of a block reads (memory.Adapters)."""
    adapter_dropout: bool = False
    parameter_tensors: int = 0
    """Tensors the optimizer steps (host work per tensor); 0 if unknown: 9 per layer + 3."""
    gated_block: bool = False
    """Llama-style blocks (RMSNorm, SDPA, gated SiLU MLP, separate q/k/v): activations are
    counted by ``scheduler.cost.memory.gated_activation_bytes_per_layer``; False: Korthikanti's
    GPT block."""
    optimizer: str = "adamw"
    """The optimizer the trainer steps the trained parameters with (states per parameter:
    ``scheduler.cost.memory.OPTIMIZER_STATES``)."""
    masked_attention_flops_per_token: float = 0.0
    """Of ``flops_per_token``, the attention products a causal kernel never runs: half of
    12·L·H·d_h·S, the masked triangle, which FlashAttention-2 (Dao 2023, §3.1.1) and torch's
    CPU flash kernel skip block by block; 0 for a bidirectional encoder. Time counts the work
    run; MFU keeps the full count (PaLM's convention)."""


def model_profile(config: Mapping[str, Any], seq_len: int,
                  trainable_params: float | None = None) -> ModelProfile:
    """The planner's view of a model from its full transformers config dict."""
    shape = TransformerShape.from_config(config)
    return ModelProfile(
        params=shape.parameter_count(),
        layer_params=shape.layer_matmul_parameters / shape.num_layers,
        layers=shape.num_layers, hidden=shape.hidden_size, heads=shape.num_heads,
        vocab=shape.vocab_size, flops_per_token=training_flops_per_token(shape, seq_len),
        trainable_params=trainable_params,
        recompute_flops_per_token=training_flops_per_token(shape, seq_len, recompute=True),
        kv_heads=shape.num_kv_heads, intermediate=shape.intermediate_size,
        # workers.core.tensor_parallel shards Llama-style (gated-MLP) blocks with separate
        # q/k/v and gate/up matrices only (not Phi-3's fused ones).
        tensor_parallel=shape.gated_mlp and not shape.fused_projections,
        gated_block=shape.gated_mlp and not shape.fused_projections,
        parameter_tensors=shape.parameter_tensors(),
        masked_attention_flops_per_token=0.0 if shape.encoder
        else 3 * shape.attention_flops_per_token(seq_len) / 2,
    )
