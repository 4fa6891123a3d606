"""The planner: enumerate resource sets × strategies, drop what does not fit, rank the rest.

Steps:

1. Enumerate candidates: every matching pool, every gang size the pool can run that splits the
   global batch evenly, every strategy that applies (single / DDP, FSDP full-shard and
   shard-grad-op, tensor parallel inside one node), every micro-batch that divides the per-rank
   batch, with and without full activation recomputation.
2. Predict each candidate's peak memory per device (:mod:`scheduler.cost.memory`) and its step
   time (:mod:`scheduler.cost.time`); totals and price follow.
3. Reject what does not fit in device memory (keeping the numbers for the explanation).
4. Rank by the objective: ``deadline`` — the cheapest plan that finishes in time; ``budget`` —
   the fastest plan within the budget; default — the earliest predicted completion
   (wait for devices + run time), then price.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from scheduler.cost.flops import TransformerShape, training_flops_per_token
from scheduler.cost.hardware import Accelerator
from scheduler.cost.memory import Precision, Recompute, Sharding, StepShape, estimate_peak
from scheduler.cost.time import efficiency, step_time
from scheduler.domain.plan import Plan, Strategy

MEMORY_HEADROOM = 0.90
"""Plan to at most 90 % of device memory: allocator fragmentation and library workspaces
(cuBLAS, NCCL buffers) take the rest (PyTorch CUDA caching-allocator notes; a planning prior)."""

STARTUP_S = 60.0
"""Seconds from launch to the first step: process start, imports, model build, data load
(a prior, recalibrated like η)."""


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
        # workers.core.tensor_parallel shards Llama-style (gated-MLP) blocks only.
        tensor_parallel=shape.gated_mlp,
    )


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """One job as the planner sees it."""

    profile: ModelProfile
    seq_len: int
    global_batch: int
    total_steps: int
    precision: str = "fp32"
    micro_batch: int | None = None
    devices: int | None = None
    objective: str = "completion"
    deadline_s: float | None = None
    budget_usd: float | None = None
    checkpoint_interval_steps: int = 100


@dataclass(frozen=True, slots=True)
class PoolOption:
    """A pool the job may run on: its accelerator figures and how long until devices free up."""

    name: str
    accelerator: Accelerator
    devices_per_node: int
    max_gang: int
    wait_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Candidate:
    pool: str
    plan: Plan
    memory_bytes: float
    memory_limit_bytes: float
    step_time_s: float
    run_time_s: float
    completion_s: float
    price_usd: float
    fits: bool
    why_not: str = ""
    memory_explain: str = ""
    time_explain: str = ""


@dataclass
class PlanReport:
    """Ranked feasible candidates, the rejected ones with their reasons, and the choice."""

    ranked: list[Candidate] = field(default_factory=list)
    rejected: list[Candidate] = field(default_factory=list)

    @property
    def best(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None

    def smallest_fix(self) -> str:
        """What would make the job fit, from the rejected candidate closest to fitting."""
        if self.ranked or not self.rejected:
            return ""
        closest = min(self.rejected, key=lambda c: c.memory_bytes / c.memory_limit_bytes)
        gib = 2**30
        return (f"needs {closest.memory_bytes / gib:.1f} GiB per device at best "
                f"({closest.pool}, {closest.plan.describe()}); the device has "
                f"{closest.memory_limit_bytes / gib:.1f} GiB usable: use more devices with "
                f"fsdp_full, a smaller micro_batch or seq_len, or a larger accelerator")


def _precision(plan_precision: str) -> Precision:
    return "bf16_mixed" if plan_precision in ("bf16", "fp16") else "fp32"


SHARDING: dict[Strategy, Sharding] = {
    Strategy.SINGLE: "ddp", Strategy.DDP: "ddp", Strategy.TP: "ddp",
    Strategy.FSDP_FULL: "zero3", Strategy.FSDP_GRAD_OP: "zero2",
}


def _gang_sizes(request: PlanRequest, pool: PoolOption) -> list[int]:
    if request.devices is not None:
        return [request.devices] if request.devices <= pool.max_gang else []
    sizes, size = [], 1
    while size <= pool.max_gang:
        sizes.append(size)
        size *= 2
    return [n for n in sizes if request.global_batch % n == 0]


def _tp_divides(profile: ModelProfile, tp: int) -> bool:
    """Tensor parallelism needs a supported architecture and sizes that split evenly."""
    sizes = [profile.heads, profile.kv_heads or profile.heads, profile.intermediate or tp]
    return profile.tensor_parallel and all(size % tp == 0 for size in sizes)


def _layouts(request: PlanRequest, pool: PoolOption, world: int) -> Iterable[Plan]:
    precision = request.precision
    layouts: list[tuple[Strategy, int, int, int]] = []  # strategy, dp_replicate, dp_shard, tp
    if world == 1:
        layouts.append((Strategy.SINGLE, 1, 1, 1))
    else:
        layouts += [(Strategy.DDP, world, 1, 1), (Strategy.FSDP_FULL, 1, world, 1),
                    (Strategy.FSDP_GRAD_OP, 1, world, 1)]
        tp = 2
        while tp <= min(world, pool.devices_per_node):
            if _tp_divides(request.profile, tp) and world % tp == 0:
                layouts.append((Strategy.TP, world // tp, 1, tp))
            tp *= 2
    for strategy, replicate, shard, tp in layouts:
        dp = replicate * shard
        if request.global_batch % dp:
            continue
        per_rank = request.global_batch // dp
        micro_batches = [request.micro_batch] if request.micro_batch else [
            m for m in (1, 2, 4, 8, 16, 32, 64) if per_rank % m == 0]
        for micro in micro_batches:
            if micro > per_rank or per_rank % micro:
                continue
            for recompute in (False, True):
                nodes = -(-world // pool.devices_per_node)
                yield Plan(strategy, world, replicate, shard, tp, 1, micro, per_rank // micro,
                           recompute, precision, nodes)


def evaluate(request: PlanRequest, pool: PoolOption, plan: Plan,
             calibrated: dict[tuple[str, str], float] | None = None) -> Candidate:
    """Predict memory, time and price of one plan on one pool."""
    profile, acc = request.profile, pool.accelerator
    precision = _precision(plan.precision)
    recompute: Recompute = "full" if plan.activation_checkpointing else "none"
    shape = StepShape(params=profile.params, layers=profile.layers, hidden=profile.hidden,
                      heads=profile.heads, vocab=profile.vocab, seq_len=request.seq_len,
                      micro_batch=plan.micro_batch, layer_params=profile.layer_params,
                      trainable_params=profile.trainable_params)
    memory = estimate_peak(shape, SHARDING[plan.strategy], plan.dp_shard, plan.tp, precision,
                           recompute)
    limit = acc.memory_bytes * MEMORY_HEADROOM
    tokens_per_device = request.global_batch * request.seq_len / plan.world_size
    per_token = profile.flops_per_token
    if recompute == "full":
        per_token = profile.recompute_flops_per_token or per_token * 8 / 6
    flops = per_token * tokens_per_device
    bytes_per_value = 2 if precision == "bf16_mixed" else 4
    multi_node = plan.nodes > 1
    timing = step_time(
        flops_per_device=flops, peak_flops=acc.peak_bf16_flops,
        eta=efficiency(acc.family, plan.strategy.value, calibrated), strategy=plan.strategy.value,
        params_per_device_full=profile.params / plan.tp, weight_bytes=bytes_per_value,
        grad_bytes=bytes_per_value, dp=plan.dp,
        dp_link_bytes_per_s=acc.network_bytes_per_s if multi_node else acc.intra_node_bytes_per_s,
        tp=plan.tp, tp_link_bytes_per_s=acc.intra_node_bytes_per_s,
        tp_activation_bytes=request.seq_len * plan.micro_batch * profile.hidden * bytes_per_value,
        layers=profile.layers, grad_accum=plan.grad_accum,
        memory_bandwidth_bytes_per_s=acc.memory_bandwidth_bytes_per_s,
        local_params=(profile.params / plan.tp / (plan.dp_shard if plan.dp_shard > 1 else 1)),
    )
    run_s = STARTUP_S + request.total_steps * timing.total_s
    price = plan.world_size * run_s / 3600 * acc.price_per_device_hour
    fits = memory.total_bytes <= limit
    why = "" if fits else (f"needs {memory.total_bytes / 2**30:.2f} GiB per device; {acc.name} "
                           f"has {limit / 2**30:.2f} GiB usable")
    return Candidate(pool.name, plan, memory.total_bytes, limit, timing.total_s, run_s,
                     pool.wait_s + run_s, price, fits, why, memory.explain(), timing.explain())


def _rank_key(request: PlanRequest, candidate: Candidate) -> tuple[float, ...]:
    if request.objective == "deadline":
        return (candidate.price_usd, candidate.completion_s)
    if request.objective == "budget":
        return (candidate.completion_s, candidate.price_usd)
    return (candidate.completion_s, candidate.price_usd)


def plan_job(request: PlanRequest, pools: Sequence[PoolOption],
             calibrated: dict[tuple[str, str], float] | None = None) -> PlanReport:
    """Enumerate → predict → reject → rank (module docstring)."""
    report = PlanReport()
    for pool in pools:
        for world in _gang_sizes(request, pool):
            for plan in _layouts(request, pool, world):
                candidate = _apply_limits(request, evaluate(request, pool, plan, calibrated))
                (report.ranked if candidate.fits else report.rejected).append(candidate)
    report.ranked.sort(key=lambda c: _rank_key(request, c))
    return report


def _apply_limits(request: PlanRequest, candidate: Candidate) -> Candidate:
    """Reject a fitting candidate that misses the deadline or breaks the budget."""
    if not candidate.fits:
        return candidate
    hours = candidate.completion_s / 3600
    if request.deadline_s is not None and candidate.completion_s > request.deadline_s:
        why = f"finishes in {hours:.2f} h, after the deadline ({request.deadline_s / 3600:.2f} h)"
        return replace(candidate, fits=False, why_not=why)
    if request.budget_usd is not None and candidate.price_usd > request.budget_usd:
        why = f"costs ${candidate.price_usd:,.2f}, over the budget ${request.budget_usd:,.2f}"
        return replace(candidate, fits=False, why_not=why)
    return candidate
