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

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") freezes the base
weights and trains small adapters ``B·A`` beside some linear layers. Model states: the frozen
weights keep their weights only (no gradient, no optimizer state), so ``trainable_params`` (the
adapters) alone carry gradients and Adam states, and the optimizer's temporaries cover them
alone. Activations: backward still runs through every frozen layer to reach the adapters below
it, so whatever the input gradients need stays stored; what goes is what only a weight gradient
needs, because autograd saves a matmul operand only when the other operand's gradient is wanted
(``torch.autograd`` derivatives save an input only for a gradient that requires it). In
Korthikanti's 34 those are the inputs of the block's linear layers (Table 2's breakdown, in
s·b·h bytes at 16 bits)::

    attention_in   2   q, k, v projections' input (the first norm's output)
    attention_out  2   output projection's input; memory-efficient attention keeps it anyway
                       (its backward needs the output), so it goes only when scores are stored
    mlp_in         2   first MLP matmul(s)' input (the second norm's output)
    mlp_out        8   last MLP matmul's input (the 4h-wide hidden activation)

An adapter needs its layer's input again (for the gradient of A), so that input stays. With
adapter dropout each adapted layer instead keeps its own dropped copy of the input (the input's
size) and the dropout mask (half that: 1 byte per value). The adapters' rank-r intermediates
(r/h of an input each) are left out. Checked against the exact trace with peft in
``bench/cost_memory.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from scheduler.cost.flops import LinearInput, TransformerShape

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


def model_state_bytes(
    params: float,
    sharding: Sharding,
    n: int,
    precision: Precision = "bf16_mixed",
    trainable_params: float | None = None,
) -> float:
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


LINEAR_INPUT_ACTIVATIONS: dict[LinearInput, float] = {
    "attention_in": 2.0,
    "attention_out": 2.0,
    "mlp_in": 2.0,
    "mlp_out": 8.0,
}
"""The linear layers' inputs among Korthikanti's 34 (s·b·h bytes at 16 bits), which a frozen
layer does not keep (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class Adapters:
    """LoRA on a frozen base, as the activation memory sees it: what the adapted layers read."""

    reads: tuple[LinearInput, ...]
    """One entry per adapted linear layer of a block (q_proj and v_proj: two attention_in)."""
    dropout: bool = False
    """Adapter dropout > 0: each adapted layer keeps a dropped copy of its input and a mask."""

    @classmethod
    def lora(
        cls,
        shape: TransformerShape,
        target_modules: Sequence[str] | str | None,
        dropout: float = 0.0,
    ) -> Adapters:
        """The adapters of a peft ``LoraConfig(target_modules=..., lora_dropout=...)``."""
        layers = shape.adapted_layers(target_modules)
        return cls(tuple(layer.reads for layer in layers), dropout > 0)

    def activation_change(self, attention_output_kept: bool = True) -> float:
        """Change to the 34 of one layer (s·b·h bytes at 16 bits) when its base is frozen.

        ``attention_output_kept``: the attention kernel saves its output for backward
        (memory-efficient attention does; the plain softmax path does not).
        """
        frozen_only = {
            read
            for read in LINEAR_INPUT_ACTIVATIONS
            if not (read == "attention_out" and attention_output_kept)
        }
        still_read = set() if self.dropout else set(self.reads)
        change = -sum(LINEAR_INPUT_ACTIVATIONS[read] for read in frozen_only - still_read)
        if self.dropout:
            change += sum(1.5 * LINEAR_INPUT_ACTIVATIONS[read] for read in self.reads)
        return change


def activation_bytes_per_layer(
    seq_len: int,
    micro_batch: int,
    hidden: int,
    heads: int,
    tp: int = 1,
    recompute: Recompute = "none",
    precision: Precision = "bf16_mixed",
    attention_scores_stored: bool = False,
    adapters: Adapters | None = None,
) -> float:
    """Stored activations of one transformer layer (Korthikanti et al. 2022, Table 2); with
    ``adapters``, of a frozen layer under LoRA (module docstring)."""
    sbh = seq_len * micro_batch * hidden
    scale = ACTIVATION_BYTES[precision] / 2
    if recompute == "full":
        return 2 * sbh * scale
    per = 34.0
    if recompute == "none" and attention_scores_stored:
        per += 5 * heads * seq_len / hidden
    if adapters is not None:
        per += adapters.activation_change(attention_output_kept=not attention_scores_stored)
    return sbh * per / tp * scale


def stores_attention_scores(config: dict[str, object]) -> bool:
    """Whether training keeps the s×s attention probabilities: memory-efficient attention
    kernels (SDPA flash / efficient) do not, but attention dropout sends SDPA to its math path
    on CPU, which materialises them (observed with the exact trace on GPT-2, attn_pdrop 0.1)."""
    dropout = config.get("attn_pdrop", config.get("attention_dropout", 0.0))
    return isinstance(dropout, int | float) and dropout > 0


def logits_bytes(
    seq_len: int, micro_batch: int, vocab: int, tp: int = 1, precision: Precision = "bf16_mixed"
) -> float:
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
    """Parameters that train (LoRA: the adapters); None: all of them."""
    adapters: Adapters | None = None
    """LoRA on a frozen base (``Adapters.lora``); None: every weight trains."""

    @classmethod
    def of_model(cls, shape: TransformerShape, seq_len: int, micro_batch: int,
                 lora_targets: Sequence[str] | str | None = None, lora_rank: int = 0,
                 lora_dropout: float = 0.0) -> StepShape:
        """The step of a whole model from its shape; with ``lora_rank``, of peft LoRA adapters
        on ``lora_targets`` over its frozen weights."""
        params = shape.parameter_count()
        trainable, adapters = None, None
        if lora_rank:
            trainable = shape.lora_parameter_count(lora_targets, lora_rank)
            params += trainable
            adapters = Adapters.lora(shape, lora_targets, lora_dropout)
        return cls(params=params, layers=shape.num_layers, hidden=shape.hidden_size,
                   heads=shape.num_heads, vocab=shape.vocab_size, seq_len=seq_len,
                   micro_batch=micro_batch,
                   layer_params=shape.layer_matmul_parameters / shape.num_layers,
                   trainable_params=trainable, adapters=adapters)


def optimizer_temporary_bytes(trainable_params: float, foreach: bool = True) -> float:
    """Scratch memory of the optimizer step: foreach Adam/AdamW computes its update for all
    parameters at once, holding one fp32 tensor the size of the (local) trainable parameters
    (measured with MemTracker in exact mode; ``foreach=False`` works one tensor at a time)."""
    return 4 * trainable_params if foreach else 0.0


CPU_FRAMEWORK_OVERHEAD_BYTES = 30 * 2**20
"""What a CPU training process holds during a step beyond its tensors: autograd graph nodes,
module and optimizer objects, oneDNN caches. Measured as peak RSS growth over the process's RSS
before the model is built, minus the MemTracker tensor peak, over 15 fp32 AdamW runs of Llama
and GPT-2 models (0.03–1 GiB of tensors, micro-batch 1–8, with and without recomputation and
LoRA): 21–30 MiB, fitted 25.1 MiB + 0.001 × tensor peak with residuals within ±4.2 MiB, so a
constant; this is the largest seen. Measured with glibc's mmap threshold fixed
(``MALLOC_MMAP_THRESHOLD_=131072``) so that freed tensors go back to the system; with glibc as it
comes the process also keeps freed heap, 25–258 MiB over the tensor peak on the same runs, which
follows the order of allocations rather than any size here and is not modelled. Command:
``.venv/bin/python bench/cost_memory_measured.py`` (docs/benchmarks/cost-memory.md)."""

CPU_PROCESS_BASELINE_BYTES = 390 * 2**20
"""Resident memory of a CPU training process once Python, torch, transformers' model code (and
peft) are imported, before any model: 377–387 MiB in the same runs (``ru_maxrss``). A rank's
whole footprint is this + the step's peak + ``CPU_FRAMEWORK_OVERHEAD_BYTES``."""


def estimate_peak(
    shape: StepShape,
    sharding: Sharding,
    dp_shard: int,
    tp: int = 1,
    precision: Precision = "bf16_mixed",
    recompute: Recompute = "none",
    framework_overhead_bytes: float = 0.0,
    attention_scores_stored: bool = False,
) -> MemoryEstimate:
    """Peak memory of one device.

    The step has two peaks and we take the larger: during forward/backward the model states
    plus activations, logits and gathered FSDP units; during the optimizer step the model
    states plus the optimizer's temporaries. Framework overhead (CUDA context, allocator slack;
    calibrated per accelerator) is added to both; for a CPU rank it is
    ``CPU_PROCESS_BASELINE_BYTES + CPU_FRAMEWORK_OVERHEAD_BYTES``, measured; 0 leaves it out.
    """
    params = shape.params / tp
    trainable = params if shape.trainable_params is None else shape.trainable_params / tp
    states = model_state_bytes(params, sharding, dp_shard, precision, trainable)
    backward = {
        "activations": shape.layers
        * activation_bytes_per_layer(
            shape.seq_len,
            shape.micro_batch,
            shape.hidden,
            shape.heads,
            tp,
            recompute,
            precision,
            attention_scores_stored,
            shape.adapters,
        ),
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
    terms = {"model_states": states, **transient, "framework_overhead": framework_overhead_bytes}
    return MemoryEstimate(sum(terms.values()), terms)
