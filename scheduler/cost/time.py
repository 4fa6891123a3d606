"""Time per training step: compute at a calibrated efficiency plus exposed communication.

    step_time = compute + exposed_comm + bubble + optimizer

* compute = FLOPs per device per step / (peak FLOP/s · η). η (model FLOPs utilisation of the
  matmul work) comes from :data:`EFFICIENCY_PRIOR` until measured runs recalibrate it.
* communication volumes per step (bytes each device sends), over the right link:
  - DDP ring all-reduce of gradients: 2·(n−1)/n · grad bytes (Patarasuk & Yuan 2009), once
    per step;
  - FSDP full shard: all-gather weights in forward and again in backward, reduce-scatter
    gradients: 3·(n−1)/n · weight bytes; shard-grad-op skips the second gather: 2·(n−1)/n;
    both once per micro-step, as the trainer runs them;
  - tensor parallel (Megatron, Shoeybi et al. 2019 §3): 4 all-reduces of s·b·h activations per
    layer per micro-step (2 forward, 2 backward), each 2·(t−1)/t · bytes.
  Data-parallel collectives overlap with backward; only ``1 − overlap`` of them is exposed.
  Tensor-parallel collectives sit on the critical path and are fully exposed.
* pipeline bubble (GPipe / 1F1B): (p − 1)/(m + p − 1) of the step, m micro-batches.
* optimizer: clipping and the AdamW step are memory-bound elementwise passes over the local
  parameters: :data:`OPTIMIZER_BYTES_PER_PARAM` bytes each, over the memory bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EFFICIENCY_PRIOR: dict[tuple[str, str], float] = {
    # (accelerator family, strategy) -> η. Sources:
    # GPU: torchtitan's Llama 3 8B bf16 FSDP runs on 8 × H100 report ~38–42 % MFU (torchtitan
    #   README/benchmarks, 2024); the PyTorch FSDP paper (Zhao et al. 2023) ~40–55 % on A100.
    ("gpu", "ddp"): 0.40,
    ("gpu", "fsdp_full"): 0.38,
    ("gpu", "fsdp_grad_op"): 0.40,
    ("gpu", "tp"): 0.35,
    ("gpu", "single"): 0.42,
    # TPU: PaLM 540B trained at 46.2 % MFU on TPU v4 (Chowdhery et al. 2022, Table 3).
    ("tpu", "ddp"): 0.45,
    ("tpu", "fsdp_full"): 0.45,
    ("tpu", "single"): 0.45,
    # CPU: no published figure means anything here; the pool's GEMM benchmark sets the peak and
    #   η starts at a conservative guess until the first measured job recalibrates it.
    ("cpu", "single"): 0.30,
    ("cpu", "ddp"): 0.30,
    ("cpu", "fsdp_full"): 0.25,
    ("cpu", "fsdp_grad_op"): 0.25,
    ("cpu", "tp"): 0.20,
}
DEFAULT_EFFICIENCY = 0.30

DP_OVERLAP = 0.8
"""Fraction of data-parallel gradient/weight traffic hidden behind compute (bucketed overlap in
DDP and FSDP prefetch); 1 − 0.8 stays exposed. A prior: calibration absorbs the rest."""

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


@dataclass(frozen=True, slots=True)
class StepTime:
    """Predicted seconds per optimizer step, with its parts for explanations."""

    total_s: float
    parts_s: dict[str, float] = field(default_factory=dict)

    def explain(self) -> str:
        parts = ", ".join(f"{name} {value * 1e3:.3g}" for name, value in self.parts_s.items())
        return f"{self.total_s * 1e3:.3g} ms = {parts} (ms)"


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
) -> StepTime:
    """Seconds per optimizer step; every argument is per device and per step (see module)."""
    parts: dict[str, float] = {"compute": flops_per_device / (peak_flops * eta)}
    weights = params_per_device_full * weight_bytes
    gradients = params_per_device_full * grad_bytes
    if strategy in ("fsdp_full", "fsdp_grad_op"):
        gathers = 2 if strategy == "fsdp_full" else 1
        # Every micro-step gathers the weights and reduce-scatters its gradients: the trainer
        # lets FSDP reduce after each micro-batch, so whole gradients are never held
        # (workers.core.parallelize.gradient_sync).
        volume = grad_accum * (
            gathers * ring_gather_bytes(weights, dp) + ring_gather_bytes(gradients, dp)
        )
    elif strategy == "tp":
        # Tensor parallel with replicas runs under FSDP over the data-parallel ranks, which
        # all-reduces gradients after every micro-batch as well.
        volume = grad_accum * ring_allreduce_bytes(gradients, dp)
    else:
        # DDP all-reduces once per step: no_sync() on all micro-batches but the last.
        volume = ring_allreduce_bytes(gradients, dp)
    parts["data_parallel_comm_exposed"] = (1 - DP_OVERLAP) * volume / dp_link_bytes_per_s
    if tp > 1:
        tp_volume = 4 * layers * grad_accum * ring_allreduce_bytes(tp_activation_bytes, tp)
        parts["tensor_parallel_comm"] = tp_volume / tp_link_bytes_per_s
    if pp > 1:
        busy = sum(parts.values())
        parts["pipeline_bubble"] = busy * (pp - 1) / grad_accum
    params_local = params_per_device_full / max(dp, 1) if local_params is None else local_params
    parts["optimizer"] = OPTIMIZER_BYTES_PER_PARAM * params_local / memory_bandwidth_bytes_per_s
    return StepTime(sum(parts.values()), parts)
