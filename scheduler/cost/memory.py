"""Peak memory per device of one training step, in closed form, by strategy.

All results are bytes per device. Notation: Ψ parameters, n the sharding degree (FSDP / ZeRO
data-parallel shards), t the tensor-parallel degree, L layers, h hidden size, a attention heads,
s sequence length, b micro-batch (sequences per device per micro-step), V vocabulary.

Model states, as Corral's trainer holds them (``workers.core``): the optimizer steps fp32
master weights with fp32 gradients; AdamW keeps two fp32 states (momentum, variance), SGD
without momentum none (``workers.core.optim.build_optimizer``). Per trained parameter:

    fp32        4 weights + 4 grads + 4·k optimizer      (k states: AdamW 2, SGD 0)
    bf16 mixed  the same, and a bf16 copy of every trained matrix during forward and backward
                (2 bytes): autocast casts each fp32 weight once per forward and autograd keeps
                the copy for backward; under FSDP the copy is the unit FSDP gathers in bf16
                (its ``MixedPrecisionPolicy(param_dtype=bfloat16)``) instead

(Pure bf16 without fp32 master weights is not something the trainer runs, so it is not costed.)

A frozen parameter (LoRA's base) keeps its weight only, in the compute dtype: the trainer casts
the frozen base to bf16 under bf16 (``workers.core.lora.freeze_base``), 2 bytes, and autocast
makes no copy of a tensor already in bf16. With AdamW that is 16 bytes per trained parameter,
ZeRO's count (Rajbhandari et al. 2020, §3.1: 2 + 2 + 12 under mixed precision), split
differently: Corral keeps fp32 gradients and the bf16 copy is transient. Sharding (FSDP over n
ranks) divides weights, gradients and optimizer states by n (ZeRO-3); shard-grad-op (ZeRO-2 as
FSDP2 runs it: ``reshard_after_forward=False``) also keeps every unit gathered from its forward
to its backward:

    DDP  W + G + O          ZeRO-3  (W + G + O)/n          ZeRO-2  (W + G + O)/n + gathered

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
Precision = Literal["fp32", "bf16_mixed"]
Recompute = Literal["none", "selective", "full"]

@dataclass(frozen=True, slots=True)
class StateBytes:
    """Bytes per parameter of each model state under one precision (module docstring)."""

    weight: int
    """A trained weight as the optimizer steps it (the master copy)."""
    grad: int
    state: int
    """One optimizer state value (AdamW has two per parameter, SGD none)."""
    frozen: int
    """A frozen weight: kept in the compute dtype."""
    compute_copy: int
    """The compute-dtype copy of a trained weight during forward and backward (autocast)."""


STATE_BYTES: dict[Precision, StateBytes] = {
    "fp32": StateBytes(weight=4, grad=4, state=4, frozen=4, compute_copy=0),
    "bf16_mixed": StateBytes(weight=4, grad=4, state=4, frozen=2, compute_copy=2),
}

OPTIMIZER_STATES: dict[str, int] = {"adamw": 2, "sgd": 0}
"""State tensors per trained parameter: AdamW's ``exp_avg`` and ``exp_avg_sq``
(``torch.optim.AdamW``); SGD without momentum keeps none (``torch.optim.SGD``,
``momentum=0``, as ``workers.core.optim.build_optimizer`` builds it)."""

ACTIVATION_BYTES: dict[Precision, int] = {"bf16_mixed": 2, "fp32": 4}
"""Bytes per stored activation value; Korthikanti's constants assume 2."""


def model_state_bytes(
    params: float,
    sharding: Sharding,
    n: int,
    precision: Precision = "bf16_mixed",
    trainable_params: float | None = None,
    optimizer: str = "adamw",
) -> float:
    """Weights + grads + optimizer states per device, as the trainer keeps them between steps
    (module docstring); the transient compute-dtype copies are counted in :func:`estimate_peak`.

    ``trainable_params`` < ``params`` models frozen weights (LoRA): frozen weights need no
    gradient and no optimizer state. ``zero1`` shards the optimizer states only (ZeRO-1).
    """
    sizes = STATE_BYTES[precision]
    trainable = params if trainable_params is None else trainable_params
    w = sizes.weight * trainable + sizes.frozen * (params - trainable)
    g = sizes.grad * trainable
    o = sizes.state * OPTIMIZER_STATES[optimizer] * trainable
    if sharding == "ddp":
        return w + g + o
    if sharding == "zero1":
        return w + g + o / n
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


@dataclass(frozen=True, slots=True)
class GatedBlock:
    """A Llama-style block as activation memory sees it: RMSNorm, rotary attention through
    SDPA (grouped KV heads), a gated SiLU MLP of width ``ffn_ratio``·h."""

    kv_ratio: float
    """KV heads / attention heads (GQA: Llama 3 8B has 8 / 32)."""
    ffn_ratio: float
    """MLP width / hidden size (Llama 3 8B: 14336 / 4096 = 3.5)."""


def gated_activation_bytes_per_layer(
    seq_len: int,
    micro_batch: int,
    hidden: int,
    block: GatedBlock,
    tp: int = 1,
    recompute: Recompute = "none",
    precision: Precision = "bf16_mixed",
    adapters: Adapters | None = None,
    weights_in_compute_dtype: bool = False,
) -> float:
    """Stored activations of one Llama-style block as the trainer runs it, counted tensor by
    tensor from what autograd saves (bytes per token, × s·b·h), checked against the exact trace
    (``bench/cost_memory.py``; derivation in docs/benchmarks/cost-memory.md):

    * each RMSNorm saves its input and the normalised value in fp32 (8), or only the fp32 copy
      of its input when its weight is frozen (4);
    * a linear layer whose weight trains (or that carries an adapter) keeps its input: in fp32
      one tensor shared by q/k/v and one by gate/up (4 each), the down projection's 4·f; under
      bf16 autocast each layer keeps its own bf16 cast (2 each, 2·f for down), except o_proj,
      whose input is SDPA's saved output already; a peft adapter under autocast keeps its own
      bf16 copy of its input, o_proj's too (2);
    * SDPA (flash / memory-efficient: no s×s scores) keeps q, k, v and its output:
      c·(2 + 2·kv_ratio), c = 4 in fp32, 2 under bf16;
    * the MLP keeps the gate's output (SiLU's input), SiLU's output and up's output: 3·c·f.

    Tensor parallelism (without sequence parallelism, as ``workers.core.tensor_parallel``
    shards) splits what lies between the column- and row-parallel layers by ``tp`` and leaves
    the norms and the layers' inputs whole. Full recomputation keeps only each block's input
    (the residual stream: fp32, or bf16 when a frozen bf16 embedding starts it).

    ``weights_in_compute_dtype``: FSDP gathers every weight in bf16 (its ``param_dtype``), the
    embedding's too, so the residual stream is bf16: each norm keeps the fp32 copy of its input
    and its bf16 output (4 + 2), which q/k/v (and gate/up) share, uncast.
    """
    sbh = seq_len * micro_batch * hidden
    mixed = precision != "fp32"
    c = 2 if mixed else 4
    frozen = adapters is not None
    bf16_stream = mixed and (frozen or weights_in_compute_dtype)
    if recompute == "full":
        return sbh * (2 if bf16_stream else 4)
    kv, f = block.kv_ratio, block.ffn_ratio
    if mixed and weights_in_compute_dtype and not frozen:
        whole = 2 * (4.0 + 2.0) + 0.0  # norms; their bf16 outputs are the layers' inputs
        split = 2 * (2 + 2 * kv) + 3 * 2 * f + 2 * f  # SDPA, the MLP core, down's input
        return sbh * (whole + split / tp)
    if frozen:
        assert adapters is not None
        reads = list(adapters.reads)
    else:
        reads = ["attention_in"] * 3 + ["attention_out", "mlp_in", "mlp_in", "mlp_out"]
    width = {"attention_in": 1.0, "attention_out": 1.0, "mlp_in": 1.0, "mlp_out": f}
    whole = 2 * (4.0 if frozen else 8.0)  # the two norms
    split = c * (2 + 2 * kv) + 3 * c * f  # SDPA's q, k, v, output; the MLP's core
    if not mixed:
        whole += 4 * ("attention_in" in reads) + 4 * ("mlp_in" in reads)
        split += 4 * f * ("mlp_out" in reads)
    else:
        for read in reads:
            if read == "attention_out" and not frozen:
                continue  # SDPA's saved output, already counted
            if read in ("attention_out", "mlp_out"):  # between the tensor-parallel layers
                split += 2 * width[read]
            else:
                whole += 2 * width[read]
    if frozen and adapters is not None and adapters.dropout:
        # adapter dropout keeps a dropped copy of each adapted input and its 1-byte mask
        whole += sum(1.5 * c * width[read] for read in adapters.reads)
    return sbh * (whole + split / tp)


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
    """Logits in the compute dtype, their fp32 copy for the loss (transformers upcasts them;
    none needed in fp32), the log-softmax cross-entropy keeps (fp32), and the logits' gradient:
    12 bytes per value in fp32 and under bf16 alike (measured by the exact trace)."""
    values = seq_len * micro_batch * vocab / tp
    compute = ACTIVATION_BYTES[precision]
    upcast = 4 if compute != 4 else 0
    return values * (compute + upcast + 4 + compute)


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
    optimizer: str = "adamw"
    """The optimizer that steps the trained parameters (``OPTIMIZER_STATES``)."""
    block: GatedBlock | None = None
    """A Llama-style block (its activations counted by :func:`gated_activation_bytes_per_layer`);
    None: Korthikanti's GPT block."""

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
        block = GatedBlock(shape.num_kv_heads / shape.num_heads,
                           shape.intermediate_size / shape.hidden_size) \
            if shape.gated_mlp and not shape.fused_projections else None
        return cls(params=params, layers=shape.num_layers, hidden=shape.hidden_size,
                   heads=shape.num_heads, vocab=shape.vocab_size, seq_len=seq_len,
                   micro_batch=micro_batch,
                   layer_params=shape.layer_matmul_parameters / shape.num_layers,
                   trainable_params=trainable, adapters=adapters, block=block)


def optimizer_temporary_bytes(trainable_params: float, foreach: bool = True,
                              optimizer: str = "adamw", value_bytes: int = 4) -> float:
    """Scratch memory of the optimizer step: foreach Adam/AdamW computes its update for all
    parameters at once, holding one tensor (of the master weights' dtype) the size of the
    (local) trainable parameters (measured with MemTracker in exact mode; ``foreach=False``
    works one tensor at a time). SGD without momentum adds the scaled gradients in place
    (``torch._foreach_add_``): no scratch."""
    if not foreach or OPTIMIZER_STATES[optimizer] == 0:
        return 0.0
    return value_bytes * trainable_params


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
    grads_held: bool = False,
    optimizer_foreach: bool = True,
    dp_replicate: int = 1,
) -> MemoryEstimate:
    """Peak memory of one device.

    The step has two peaks (three under FSDP, whose backward ends with the root's gradients)
    and we take the larger: during forward/backward the model states
    plus activations, logits, the compute-dtype copies of the trained weights (autocast's, or
    the units FSDP gathers); during the optimizer step the model states plus the optimizer's
    temporaries. The trainer frees gradients after each step (``zero_grad(set_to_none=True)``),
    so backward's peak (as it starts, every activation still stored) holds none, unless
    ``grads_held``: gradient accumulation (the micro-batches after the first add to them) or
    DDP, whose gradients are views of buckets allocated once (``gradient_as_bucket_view``).
    Framework overhead (CUDA context, allocator slack; calibrated per accelerator) is added to
    both; for a CPU rank it is ``CPU_PROCESS_BASELINE_BYTES + CPU_FRAMEWORK_OVERHEAD_BYTES``,
    measured; 0 leaves it out.
    """
    sizes = STATE_BYTES[precision]
    # Tensor parallelism splits the blocks' matrices; the root (embeddings, final norm, output
    # head) stays whole on every rank (workers.core.tensor_parallel shards the blocks only).
    root = max(0.0, shape.params - shape.layers * shape.layer_params)
    params = (shape.params - root) / tp + root
    trainable = params if shape.trainable_params is None else shape.trainable_params / tp
    states = model_state_bytes(params, sharding, dp_shard, precision, trainable,
                               shape.optimizer)
    grads = sizes.grad * trainable / (dp_shard if sharding in ("zero2", "zero3") else 1)
    # The trainer wraps the model in FSDP2 when it shards, or runs tensor parallel with
    # replicas (workers.core.parallelize.ParallelDims.uses_fsdp); FSDP gathers in bf16.
    fsdp = dp_shard > 1 or (tp > 1 and dp_replicate > 1)
    if shape.block is not None:
        per_layer = gated_activation_bytes_per_layer(
            shape.seq_len, shape.micro_batch, shape.hidden, shape.block, tp, recompute,
            precision, shape.adapters, weights_in_compute_dtype=fsdp)
    else:
        per_layer = activation_bytes_per_layer(
            shape.seq_len,
            shape.micro_batch,
            shape.hidden,
            shape.heads,
            tp,
            recompute,
            precision,
            attention_scores_stored,
            shape.adapters,
        )
    backward = {
        "activations": shape.layers * per_layer,
        # The output head is not tensor parallel: every rank holds all the logits.
        "logits": logits_bytes(shape.seq_len, shape.micro_batch, shape.vocab, 1, precision),
    }
    if recompute == "full" and shape.block is not None:
        # Backward recomputes one block at a time and holds its activations while it runs,
        # once the logits and their gradient are gone: the larger of the two counts.
        layer = gated_activation_bytes_per_layer(
            shape.seq_len, shape.micro_batch, shape.hidden, shape.block, tp, "none",
            precision, shape.adapters, weights_in_compute_dtype=fsdp)
        backward["recomputed_layer"] = max(0.0, layer - backward["logits"])
    sharded = sharding in ("zero2", "zero3") and dp_shard > 1
    # FSDP gathers weights in the compute dtype (its param_dtype), or as they are in fp32.
    gathered_bytes = sizes.compute_copy or sizes.weight
    # FSDP2's root unit (embeddings, final norm, output head) stays gathered from the start of
    # forward to the end of backward.
    if sharded and sharding == "zero3":
        # The root, the block backward works on and the next, prefetched.
        backward["fsdp_gathered_units"] = (root + 2 * shape.layer_params / tp) * gathered_bytes
    elif sharded:
        # Shard-grad-op keeps every unit gathered from its forward until its backward.
        backward["fsdp_gathered_units"] = (params + shape.layer_params / tp) * gathered_bytes
    elif fsdp:
        # Tensor parallel with replicas: FSDP over shards of one keeps a gathered copy of every
        # weight (in bf16 under mixed precision) from forward to backward.
        backward["fsdp_gathered_units"] = params * gathered_bytes
    elif sizes.compute_copy:
        # Autocast's copy of every trained weight, kept by autograd for backward.
        backward["compute_copies"] = sizes.compute_copy * trainable
    local_trainable = trainable / dp_shard if sharding != "ddp" else trainable
    backward = {"model_states": states - (0.0 if grads_held else grads), **backward}
    if optimizer_foreach or shape.trainable_params is not None:
        scratch = optimizer_temporary_bytes(local_trainable, optimizer_foreach, shape.optimizer,
                                            sizes.weight)
    else:
        # One tensor at a time: AdamW's scratch for the largest (the embedding or the output
        # head, V·h, sharded by FSDP but not by tensor parallelism), two of its size (measured
        # with the sharded trace, bench/cost_memory_sharded.py).
        largest = shape.vocab * shape.hidden / (dp_shard if sharding != "ddp" else 1)
        scratch = 2 * largest * sizes.weight if OPTIMIZER_STATES[shape.optimizer] else 0.0
    optimizer_step = {"model_states": states, "optimizer_temporaries": scratch}
    phases = [backward, optimizer_step]
    if sharded:
        # Backward ends with the root's gradients: unsharded in the compute dtype, cast to fp32
        # for the reduce-scatter (in bf16), beside every sharded gradient.
        cast = 4 if gathered_bytes != 4 else 0  # the fp32 copy reduce_dtype makes
        phases.append({"model_states": states,
                       "fsdp_root_gradients": root * (gathered_bytes + cast)})
    peak = max(phases, key=lambda terms: sum(terms.values()))
    terms = {**peak, "framework_overhead": framework_overhead_bytes}
    return MemoryEstimate(sum(terms.values()), terms)
