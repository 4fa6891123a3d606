"""Peak memory per device of one training step, in closed form, by strategy.

All results are bytes per device. Notation: Ψ parameters, n the sharding degree (FSDP / ZeRO
data-parallel shards), t the tensor-parallel degree, L layers, h hidden size, a attention heads,
s sequence length, b micro-batch (sequences per device per micro-step), V vocabulary.

Model states (Rajbhandari et al. 2020, "ZeRO", §3.1 and Fig. 1), Adam with mixed precision:
16 bytes per parameter = 2 (bf16 weights) + 2 (bf16 grads) + 12 (fp32 master, momentum,
variance). ZeRO-1 shards the 12, ZeRO-2 also the grads, ZeRO-3/FSDP everything:

    DDP     16Ψ          ZeRO-1  4Ψ + 12Ψ/n
    ZeRO-2  2Ψ + 14Ψ/n   ZeRO-3  16Ψ/n

fp32 training (CPU) is also 16 bytes per parameter (4 weights + 4 grads + 8 Adam), split
4 + 4 + 8 instead; pure bf16 with bf16 Adam states is 8 (2 + 2 + 4).

Activations per transformer layer (Korthikanti et al. 2022, "Reducing Activation Recomputation
in Large Transformer Models", Table 2), with 16-bit activations and tensor + sequence
parallelism over t:

    no recomputation        s·b·h·(34 + 5·a·s/h) / t
    selective recomputation s·b·h·34 / t
    full recomputation      2·s·b·h            (only each layer's input is kept)

The 5·a·s/h term is the attention score matrix; memory-efficient attention kernels (flash /
SDPA) never store it, so ``attention_scores_stored=False`` drops it. fp32 activations double
every term. The output layer adds logits: s·b·V values, kept in the compute dtype and again in
fp32 for the loss (4 bytes), plus their gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Sharding = Literal["ddp", "zero1", "zero2", "zero3"]
Precision = Literal["fp32", "bf16_mixed", "bf16_pure"]
Recompute = Literal["none", "selective", "full"]

# Bytes per parameter for (weights, grads, optimizer states) — ZeRO §3.1; fp32 and pure bf16
# follow the same accounting with 4-byte and 2-byte tensors.
STATE_BYTES: dict[Precision, tuple[int, int, int]] = {
    "bf16_mixed": (2, 2, 12),
    "fp32": (4, 4, 8),
    "bf16_pure": (2, 2, 4),
}

ACTIVATION_BYTES: dict[Precision, int] = {"bf16_mixed": 2, "bf16_pure": 2, "fp32": 4}
"""Bytes per stored activation value; Korthikanti's constants assume 2."""


def model_state_bytes(params: float, sharding: Sharding, n: int,
                      precision: Precision = "bf16_mixed",
                      trainable_params: float | None = None) -> float:
    """Weights + grads + optimizer states per device (ZeRO §3.1).

    ``trainable_params`` < ``params`` models frozen weights (LoRA): frozen weights need no
    gradient and no optimizer state.
    """
    weights, grads, optim = STATE_BYTES[precision]
    trainable = params if trainable_params is None else trainable_params
    w = weights * params
    g = grads * trainable
    o = optim * trainable
    if sharding == "ddp":
        return w + g + o
    if sharding == "zero1":
        return w + g + o / n
    if sharding == "zero2":
        return w + (g + o) / n
    return (w + g + o) / n


def activation_bytes_per_layer(seq_len: int, micro_batch: int, hidden: int, heads: int,
                               tp: int = 1, recompute: Recompute = "none",
                               precision: Precision = "bf16_mixed",
                               attention_scores_stored: bool = False) -> float:
    """Stored activations of one transformer layer (Korthikanti et al. 2022, Table 2)."""
    sbh = seq_len * micro_batch * hidden
    scale = ACTIVATION_BYTES[precision] / 2
    if recompute == "full":
        return 2 * sbh * scale
    per = 34.0
    if recompute == "none" and attention_scores_stored:
        per += 5 * heads * seq_len / hidden
    return sbh * per / tp * scale


def stores_attention_scores(config: dict[str, object]) -> bool:
    """Whether training keeps the s×s attention probabilities: memory-efficient attention
    kernels (SDPA flash / efficient) do not, but attention dropout sends SDPA to its math path
    on CPU, which materialises them (observed with the exact trace on GPT-2, attn_pdrop 0.1)."""
    dropout = config.get("attn_pdrop", config.get("attention_dropout", 0.0))
    return isinstance(dropout, int | float) and dropout > 0


def logits_bytes(seq_len: int, micro_batch: int, vocab: int, tp: int = 1,
                 precision: Precision = "bf16_mixed") -> float:
    """Logits in the compute dtype, their fp32 copy for the loss, and the gradient."""
    values = seq_len * micro_batch * vocab / tp
    compute = ACTIVATION_BYTES[precision]
    return values * (compute + 4 + compute)


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Peak bytes per device and the terms that make it up, for explanations."""

    total_bytes: float
    terms: dict[str, float] = field(default_factory=dict)

    def explain(self) -> str:
        parts = ", ".join(f"{name} {value / 2**30:.2f}" for name, value in self.terms.items())
        return f"{self.total_bytes / 2**30:.2f} GiB = {parts} (GiB)"


@dataclass(frozen=True, slots=True)
class StepShape:
    """What one device runs in one micro-step: the model's size and the batch it sees."""

    params: float
    layers: int
    hidden: int
    heads: int
    vocab: int
    seq_len: int
    micro_batch: int
    layer_params: float
    """Parameters of one transformer block (what FSDP gathers at a time)."""
    trainable_params: float | None = None


def optimizer_temporary_bytes(trainable_params: float, foreach: bool = True) -> float:
    """Scratch memory of the optimizer step: foreach Adam/AdamW computes its update for all
    parameters at once, holding one fp32 tensor the size of the (local) trainable parameters
    (measured with MemTracker in exact mode; ``foreach=False`` works one tensor at a time)."""
    return 4 * trainable_params if foreach else 0.0


def estimate_peak(shape: StepShape, sharding: Sharding, dp_shard: int, tp: int = 1,
                  precision: Precision = "bf16_mixed", recompute: Recompute = "none",
                  framework_overhead_bytes: float = 0.0,
                  attention_scores_stored: bool = False) -> MemoryEstimate:
    """Peak memory of one device.

    The step has two peaks and we take the larger: during forward/backward the model states
    plus activations, logits and gathered FSDP units; during the optimizer step the model
    states plus the optimizer's temporaries. Framework overhead (CUDA context, allocator slack;
    calibrated per accelerator) is added to both.
    """
    params = shape.params / tp
    trainable = params if shape.trainable_params is None else shape.trainable_params / tp
    states = model_state_bytes(params, sharding, dp_shard, precision, trainable)
    backward = {
        "activations": shape.layers * activation_bytes_per_layer(
            shape.seq_len, shape.micro_batch, shape.hidden, shape.heads, tp, recompute,
            precision, attention_scores_stored),
        "logits": logits_bytes(shape.seq_len, shape.micro_batch, shape.vocab, tp, precision),
    }
    if sharding == "zero3" and dp_shard > 1:
        # FSDP all-gathers one block's weights (and the next, prefetched) and reduce-scatters
        # one block's gradients: two unsharded units in the compute dtype plus one gradient.
        weight_bytes = STATE_BYTES[precision][0]
        backward["fsdp_gathered_units"] = 3 * shape.layer_params / tp * weight_bytes
    local_trainable = trainable / dp_shard if sharding != "ddp" else trainable
    optimizer_step = {"optimizer_temporaries": optimizer_temporary_bytes(local_trainable)}
    transient = max(backward, optimizer_step, key=lambda terms: sum(terms.values()))
    terms = {"model_states": states, **transient,
             "framework_overhead": framework_overhead_bytes}
    return MemoryEstimate(sum(terms.values()), terms)
