"""Time per training step: compute at a calibrated efficiency plus what does not scale with it.

    step_time = compute + exposed_comm + synchronisation + host + bubble + optimizer

* compute = FLOPs per device per step / (peak FLOP/s · η). η (model FLOPs utilisation of the
  matmul work) comes from :data:`EFFICIENCY_PRIOR` until measured runs recalibrate it.
* communication, α–β (Hockney 1994): every collective costs the link's latency α
  (``Accelerator.collective_latency_s``) plus the bytes each device sends over the link's
  bandwidth β. Volumes per step:
  - DDP ring all-reduce of gradients: 2·(n−1)/n · grad bytes (Patarasuk & Yuan 2009), once
    per step, in :data:`DDP_BUCKET_BYTES` buckets;
  - FSDP full shard: all-gather weights in forward and again in backward, reduce-scatter
    gradients: 3·(n−1)/n · weight bytes; shard-grad-op skips the second gather: 2·(n−1)/n;
    both once per micro-step and per FSDP unit (a block, and the root), as the trainer runs
    them; with replicas (``hsdp``) each unit also all-reduces across them; under ``fsdp_tp``
    the same over the tensor-parallel shard of the weights (1/t of them);
  - tensor parallel (Megatron, Shoeybi et al. 2019 §3): 4 all-reduces of s·b·h activations per
    layer per micro-step (2 forward, 2 backward), each 2·(t−1)/t · bytes.
  Data-parallel collectives overlap with backward by ``Accelerator.dp_overlap``; tensor-parallel
  ones sit on the critical path and are fully exposed.
* synchronisation: collectives every step waits on whole: the trainer's loss-and-stop
  all-reduce, and the gradient-norm all-reduce per sharded mesh dimension when clipping
  DTensor gradients (``workers.core.grad_clip``); α each.
* host: eager PyTorch dispatches every op from one Python thread (:data:`HOST_S_PER_LAYER` and
  the strategy's extra). A CPU runs it in series with the compute (``host_mode="serial"``); a
  GPU runs ahead of its kernels, so only host time beyond the device's shows (``"async"``); XLA
  on a TPU runs a compiled graph (``"compiled"``: none).
* elementwise: the ops between the matrix products run one memory-bound pass after another
  (:data:`ELEMENTWISE_VALUES_PER_TOKEN_HIDDEN` values per token and hidden unit per block),
  over the memory bandwidth: 10–20 % of a small model's step.
* pipeline bubble (GPipe / 1F1B): (p − 1)/(m + p − 1) of the step, m micro-batches.
* optimizer: clipping and the AdamW step are memory-bound elementwise passes over the local
  parameters (:data:`OPTIMIZER_BYTES_PER_PARAM` bytes each, over the memory bandwidth) plus a
  host cost per parameter tensor (:data:`OPTIMIZER_S_PER_TENSOR`), far larger for DTensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

HostMode = Literal["serial", "async", "compiled"]

EFFICIENCY_PRIOR: dict[tuple[str, str], float] = {
    # (accelerator family, strategy) -> η. Sources:
    # GPU: torchtitan's Llama 3 8B bf16 FSDP runs on 8 × H100 report ~38–42 % MFU (torchtitan
    #   README/benchmarks, 2024); the PyTorch FSDP paper (Zhao et al. 2023) ~40–55 % on A100.
    ("gpu", "ddp"): 0.40,
    ("gpu", "fsdp_full"): 0.38,
    ("gpu", "fsdp_grad_op"): 0.40,
    ("gpu", "tp"): 0.35,
    # The composites take the prior of the strategy that bounds them, until measured: HSDP
    #   runs FSDP's kernels with fewer ranks per gather; FSDP + TP has TP's exposed collectives.
    ("gpu", "hsdp"): 0.38,
    ("gpu", "fsdp_tp"): 0.35,
    ("gpu", "single"): 0.42,
    # TPU: PaLM 540B trained at 46.2 % MFU on TPU v4 (Chowdhery et al. 2022, Table 3).
    ("tpu", "ddp"): 0.45,
    ("tpu", "fsdp_full"): 0.45,
    ("tpu", "single"): 0.45,
    # CPU: the η of the matmul work against the pool's own GEMM benchmark (measure_cpu_peak),
    #   host dispatch, collectives and the optimizer counted apart. No published figure
    #   applies: these are what `.venv/bin/python bench/cost_time.py` calibrated on the
    #   calibration half of an idle 2-core run (docs/benchmarks/cost-time.md), rounded; the
    #   first measured job of a pool recalibrates them.
    ("cpu", "single"): 0.70,
    ("cpu", "ddp"): 0.65,
    ("cpu", "fsdp_full"): 0.45,
    ("cpu", "fsdp_grad_op"): 0.40,
    ("cpu", "tp"): 0.40,
    ("cpu", "hsdp"): 0.45,
    ("cpu", "fsdp_tp"): 0.40,
}
DEFAULT_EFFICIENCY = 0.30

DP_OVERLAP = 0.8
"""Fraction of data-parallel traffic hidden behind compute (bucketed overlap in DDP and FSDP
prefetch) where the accelerator row gives none (``Accelerator.dp_overlap``'s default); 1 − 0.8
stays exposed. A prior."""

OPTIMIZER_BYTES_PER_PARAM = 84
"""Memory traffic of one optimizer phase per fp32 parameter, as the trainer runs it: gradient
clipping (the norm reads the gradient, 4 B; scaling reads and writes it, 8 B) and torch's AdamW
step without weight decay, one elementwise op after another (``torch.optim.adam``
``_single_tensor_adam``; ``_multi_tensor_adam`` runs the same ops per tensor list):
``exp_avg.lerp_(grad)`` 12 B, ``exp_avg_sq.mul_`` 8 B and ``.addcmul_(grad, grad)`` 12 B,
``sqrt`` 8 B, ``/ bias_correction`` 8 B, ``.add_(eps)`` 8 B, ``param.addcdiv_(exp_avg, denom)``
16 B: 72 B for the step, 84 B with clipping (weight decay adds ``param.mul_``, 8 B). Reading and
writing Adam's 16 bytes of state once (a fused kernel) would be 28 B. On the CPU,
``.venv/bin/python bench/cpu_links.py`` times clip + AdamW on a 3.3 M-parameter Llama at about
10 ms with one thread: 84 B × 3.3 M / 10 ms = 28 GB/s, about the catalog's cpu row, where
charging 16 B would predict 2 ms."""

SGD_BYTES_PER_PARAM = 24
"""The same for plain SGD (no momentum, no weight decay): clipping 12 B and
``param.add_(grad, alpha=-lr)`` 12 B (``torch.optim.sgd``)."""

OPTIMIZER_TRAFFIC: dict[str, int] = {"adamw": OPTIMIZER_BYTES_PER_PARAM,
                                     "sgd": SGD_BYTES_PER_PARAM}
"""Memory traffic of the optimizer phase per parameter, by the optimizer the job names."""

# Host seconds on one core of the 2-core AMD EPYC development machine, measured by
# `.venv/bin/python bench/cpu_links.py` ("host dispatch"): a Llama whose blocks have hidden size
# 16 (compute nil) under each wrapper on a one-rank mesh, the slope between 2 and 8 blocks,
# fastest of 18 steps; the optimizer over that model's 75 tensors. Middle of three invocations
# (plain 0.68–0.86 ms; fsdp +0.81–0.99; tp +3.7–4.3; recompute +1.18–1.25; per tensor 27–28
# and 152–157 µs). Host work is per op, not per FLOP: the same figures serve every model size.
HOST_S_PER_LAYER = 0.75e-3
"""Forward and backward of one block, one micro-batch, plain eager modules."""
HOST_EXTRA_S_PER_LAYER: dict[str, float] = {
    "fsdp_full": 0.95e-3,  # FSDP2 pre/post forward and backward hooks, copy-in/out per unit
    "fsdp_grad_op": 0.9e-3,
    "tp": 4.0e-3,  # DTensor dispatch and redistribution of every sharded linear layer
    "hsdp": 0.95e-3,  # FSDP2's hooks, as fsdp_full
    "fsdp_tp": 4.95e-3,  # both wrappers' work: FSDP2's hooks and TP's DTensor dispatch
}
RECOMPUTE_HOST_S_PER_LAYER = 1.2e-3
"""Non-reentrant activation checkpointing: the block's forward again plus its saved-tensor
hooks."""
OPTIMIZER_S_PER_TENSOR = 28e-6
"""Clip + AdamW host work per plain parameter tensor."""
OPTIMIZER_S_PER_DTENSOR = 155e-6
"""The same per DTensor parameter (FSDP2 and tensor-parallel parameters): DTensor dispatch."""

ELEMENTWISE_VALUES_PER_TOKEN_HIDDEN = 200
"""Values read or written per token and hidden unit in one block's forward and backward by the
ops that are not matrix products (norms, rotary embedding, SiLU and gating, residual adds),
each a separate memory-bound pass in eager PyTorch. Counted: forward about 75 (two RMSNorms
~12 each, rotary on q and k ~32, residuals 6, SiLU and gate over f ≈ 2.7·h ~13), backward
about twice that. Measured: `.venv/bin/python bench/cpu_links.py` ("elementwise") times model
M's step less its matrix products, attention and host dispatch: 193–230 values at the cpu
row's 25 GB/s in three invocations."""

SHARDED = ("fsdp_full", "fsdp_grad_op", "hsdp", "fsdp_tp")
"""Strategies that run FSDP2 over ``dp_shard`` ranks: all-gather weights, reduce-scatter
gradients."""

DDP_BUCKET_BYTES = 25 * 2**20
"""``DistributedDataParallel(bucket_cap_mb=25)``, torch's default; the first bucket holds
1 MiB (``torch.distributed._DEFAULT_FIRST_BUCKET_BYTES``)."""
DDP_FIRST_BUCKET_BYTES = 2**20


def efficiency(
    family: str, strategy: str, calibrated: dict[tuple[str, str], float] | None = None
) -> float:
    """η for this accelerator family and strategy: calibrated if measured, else the prior."""
    key = (family, strategy)
    if calibrated and key in calibrated:
        return calibrated[key]
    return EFFICIENCY_PRIOR.get(key, DEFAULT_EFFICIENCY)


def ring_allreduce_bytes(payload_bytes: float, ranks: int) -> float:
    """Bytes each rank sends in a ring all-reduce."""
    return 0.0 if ranks <= 1 else 2 * (ranks - 1) / ranks * payload_bytes


def ring_gather_bytes(payload_bytes: float, ranks: int) -> float:
    """Bytes each rank sends in a ring all-gather or reduce-scatter of a full payload."""
    return 0.0 if ranks <= 1 else (ranks - 1) / ranks * payload_bytes


def elementwise_bytes(tokens: float, hidden: int, layers: int, bytes_per_value: int,
                      tp: int = 1, recompute: bool = False, forward_only: bool = False) -> float:
    """Bytes the non-matmul ops of ``layers`` blocks move for ``tokens`` tokens (one
    micro-batch): recomputation runs the forward's third again, a forward-only job only it."""
    values = ELEMENTWISE_VALUES_PER_TOKEN_HIDDEN * tokens * hidden / tp * layers
    if forward_only:
        values /= 3
    elif recompute:
        values *= 4 / 3
    return values * bytes_per_value


def ddp_buckets(gradient_bytes: float) -> int:
    """All-reduces DDP issues for this many gradient bytes (its bucketing)."""
    rest = max(0.0, gradient_bytes - DDP_FIRST_BUCKET_BYTES)
    return 1 + math.ceil(rest / DDP_BUCKET_BYTES)


def data_parallel_collectives(strategy: str, layers: int, dp: int, dp_replicate: int,
                              grad_bytes_total: float, grad_accum: int) -> int:
    """Collectives of the data-parallel wrapper per step (DDP, FSDP units, HSDP)."""
    if dp <= 1:
        return 0
    units = layers + 1  # every block, and the root (embeddings, final norm, head)
    if strategy == "ddp":
        return ddp_buckets(grad_bytes_total)
    if strategy in SHARDED:
        sharded = dp // max(dp_replicate, 1) > 1
        per_unit = 0
        if sharded:
            # Full shard gathers each block in forward and again in backward, the root once
            # (FSDP2 keeps the root gathered after forward); grad-op once per unit; each unit
            # reduce-scatters its gradients.
            per_unit = 2 * units if strategy == "fsdp_grad_op" else 3 * layers + 2
        replicas = units if dp_replicate > 1 else 0  # HSDP all-reduce across replicas
        return grad_accum * (per_unit + replicas)
    if strategy == "tp":
        return grad_accum * units  # FSDP over the replicas: one all-reduce per unit
    return 0


@dataclass(frozen=True, slots=True)
class StepTime:
    """Predicted seconds per optimizer step, with its parts for explanations."""

    total_s: float
    parts_s: dict[str, float] = field(default_factory=dict)

    def explain(self) -> str:
        """``1.31 s = compute 1.2 s, ...``: each part in ms below a second, else in s."""
        parts = ", ".join(f"{name} {_seconds_text(value)}" for name, value in self.parts_s.items())
        return f"{_seconds_text(self.total_s)} = {parts}"


def _seconds_text(seconds: float) -> str:
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:,.3g} s" if seconds < 1000 else f"{seconds:,.0f} s"


def step_time(
    *,
    flops_per_device: float,
    peak_flops: float,
    eta: float,
    strategy: str,
    params_per_device_full: float,
    weight_bytes: int,
    grad_bytes: int,
    dp: int,
    dp_link_bytes_per_s: float,
    tp: int = 1,
    tp_link_bytes_per_s: float = 1.0,
    tp_activation_bytes: float = 0.0,
    layers: int = 0,
    grad_accum: int = 1,
    pp: int = 1,
    memory_bandwidth_bytes_per_s: float = 1.0,
    local_params: float | None = None,
    dp_replicate: int = 1,
    collective_latency_s: float = 0.0,
    dp_overlap: float = DP_OVERLAP,
    parameter_tensors: int = 0,
    recompute: bool = False,
    host_mode: HostMode = "compiled",
    host_speed: float = 1.0,
    forward_only: bool = False,
    elementwise_bytes: float = 0.0,
    optimizer: str = "adamw",
) -> StepTime:
    """Seconds per optimizer step; every argument is per device and per step (see module).

    ``elementwise_bytes`` is one micro-step's traffic of the non-matmul ops
    (:func:`elementwise_bytes`). ``host_speed`` is the share of one core each rank's Python
    thread gets (1 unless ranks outnumber cores); host seconds are divided by it.
    """
    alpha = collective_latency_s
    parts: dict[str, float] = {"compute": flops_per_device / (peak_flops * eta)}
    if elementwise_bytes:
        parts["elementwise"] = elementwise_bytes * grad_accum / memory_bandwidth_bytes_per_s
    weights = params_per_device_full * weight_bytes
    gradients = params_per_device_full * grad_bytes
    if strategy in SHARDED:
        gathers = 1 if strategy == "fsdp_grad_op" else 2
        shard = dp // max(dp_replicate, 1)
        # Every micro-step gathers the weights and reduce-scatters its gradients: the trainer
        # lets FSDP reduce after each micro-batch, so whole gradients are never held
        # (workers.core.parallelize.gradient_sync). Replicas all-reduce their shards.
        volume = grad_accum * (
            gathers * ring_gather_bytes(weights, shard) + ring_gather_bytes(gradients, shard)
            + ring_allreduce_bytes(gradients / shard, dp_replicate)
        )
    elif strategy == "tp":
        # Tensor parallel with replicas runs under FSDP over the data-parallel ranks, which
        # all-reduces gradients after every micro-batch as well.
        volume = grad_accum * ring_allreduce_bytes(gradients, dp)
    else:
        # DDP all-reduces once per step: no_sync() on all micro-batches but the last.
        volume = ring_allreduce_bytes(gradients, dp)
    dp_collectives = data_parallel_collectives(strategy, layers, dp, dp_replicate, gradients,
                                               grad_accum)
    parts["data_parallel_comm_exposed"] = (1 - dp_overlap) * (
        volume / dp_link_bytes_per_s + dp_collectives * alpha)
    if tp > 1:
        tp_volume = 4 * layers * grad_accum * ring_allreduce_bytes(tp_activation_bytes, tp)
        parts["tensor_parallel_comm"] = (tp_volume / tp_link_bytes_per_s
                                         + 4 * layers * grad_accum * alpha)
    world = dp * tp * pp
    if world > 1 and alpha > 0:
        # DDP's gradients are plain tensors; DTensor ones complete their norm per mesh dim.
        clip = 0 if strategy == "ddp" else int(tp > 1) + int(dp > 1)
        parts["synchronisation"] = (1 + clip) * alpha
    dtensors = strategy in (*SHARDED, "tp") and (dp > 1 or tp > 1)
    per_tensor = OPTIMIZER_S_PER_DTENSOR if dtensors else OPTIMIZER_S_PER_TENSOR
    optimizer_host = 0.0
    if host_mode != "compiled":
        per_layer = HOST_S_PER_LAYER + (HOST_EXTRA_S_PER_LAYER.get(strategy, 0.0)
                                        if dtensors else 0.0)
        if recompute:
            per_layer += RECOMPUTE_HOST_S_PER_LAYER
        if forward_only:
            per_layer /= 3  # forward is about a third of a training micro-step's ops
        host = per_layer * layers / pp * grad_accum / host_speed
        if host_mode == "async":
            host = max(0.0, host - sum(parts.values()))  # the device's work hides the rest
        parts["host"] = host
        optimizer_host = per_tensor * parameter_tensors / max(pp, 1) / host_speed
    if pp > 1:
        busy = sum(parts.values())
        parts["pipeline_bubble"] = busy * (pp - 1) / grad_accum
    params_local = params_per_device_full / max(dp, 1) if local_params is None else local_params
    optimizer_memory = OPTIMIZER_TRAFFIC[optimizer] * params_local / memory_bandwidth_bytes_per_s
    parts["optimizer"] = (optimizer_memory + optimizer_host if host_mode == "serial"
                          else max(optimizer_memory, optimizer_host))
    return StepTime(sum(parts.values()), parts)
