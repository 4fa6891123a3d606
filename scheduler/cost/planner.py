"""The planner: enumerate resource sets × strategies, drop what does not fit, rank the rest.

Steps:

1. Enumerate candidates: every matching pool, every gang size the pool can run that splits the
   global batch evenly, every strategy that applies (single / DDP, FSDP full-shard and
   shard-grad-op, hybrid sharding (HSDP: shard within a group of 2, 4, … ranks, replicate
   across groups), tensor parallel inside one node with plain replicas or with FSDP over the
   groups (FSDP + TP)), every micro-batch that divides the per-rank batch, with and without full
   activation recomputation.
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

from scheduler.cost.hardware import Accelerator
from scheduler.cost.memory import (
    CPU_FRAMEWORK_OVERHEAD_BYTES,
    CPU_PROCESS_BASELINE_BYTES,
    Adapters,
    GatedBlock,
    MemoryEstimate,
    Precision,
    Recompute,
    Sharding,
    StepShape,
    estimate_peak,
)
from scheduler.cost.profile import ModelProfile
from scheduler.cost.time import HostMode, StepTime, efficiency, elementwise_bytes, step_time
from scheduler.domain.plan import Plan, PlanPins, Strategy

MEMORY_HEADROOM = 0.90
"""Plan to at most 90 % of device memory: allocator fragmentation and library workspaces
(cuBLAS, NCCL buffers) take the rest (PyTorch CUDA caching-allocator notes; a planning prior)."""

HOST_MODES: dict[str, HostMode] = {"cpu": "serial", "gpu": "async", "tpu": "compiled"}
"""How each family runs the host's eager dispatch beside its compute (scheduler.cost.time)."""

STARTUP_S = 60.0
"""Seconds from launch to the first step: process start, imports, model build, data load
(a prior, recalibrated like η)."""


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
    pins: PlanPins | None = None
    """What the job's ``parallelism:`` section fixes; only plans that keep it are weighed."""


@dataclass(frozen=True, slots=True)
class PoolOption:
    """A pool the job may run on: its accelerator figures and how long until devices free up."""

    name: str
    accelerator: Accelerator
    devices_per_node: int
    max_gang: int
    wait_s: float = 0.0
    accelerator_name: str = ""
    """The pool's own name for its accelerator (calibration's key); the catalog's if empty."""


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
    memory: MemoryEstimate | None = None
    timing: StepTime | None = None
    accelerator: str = ""
    efficiency: float = 0.0
    """η the step time was predicted with (calibrated or the prior)."""
    time_parts_s: Mapping[str, float] = field(default_factory=dict)
    """Seconds per step by part (compute, communication, optimizer): calibration splits a
    measured step with them."""

    resident_bytes: float = 0.0

    @property
    def memory_explain(self) -> str:
        """The memory prediction in words (built on demand: most candidates are never shown)."""
        if self.memory is None:
            return ""
        text = self.memory.explain()
        if self.resident_bytes:
            text += f" + resident {self.resident_bytes / 2**30:.2f} GiB (teacher)"
        return text

    @property
    def time_explain(self) -> str:
        return self.timing.explain() if self.timing is not None else ""

    def calibration_inputs(self) -> dict[str, Any]:
        """What the service stores on the job to recalibrate η when the job reports."""
        return {"accelerator": self.accelerator, "strategy": self.plan.strategy.value,
                "efficiency": self.efficiency, "step_time_s": self.step_time_s,
                "compute_s": self.time_parts_s.get("compute", self.step_time_s)}


@dataclass
class PlanReport:
    """Ranked feasible candidates, the rejected ones with their reasons, and the choice."""

    ranked: list[Candidate] = field(default_factory=list)
    rejected: list[Candidate] = field(default_factory=list)
    pins: PlanPins | None = None
    """The job's pinned plan choices, named when they rule out everything that would fit."""
    larger_gang: Candidate | None = None
    """When nothing fits for lack of memory: the smallest gang (on one of the pools' accelerator,
    beyond what the job or the pool allows) whose best plan would fit (:func:`plan_job`)."""

    @property
    def best(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None

    def smallest_fix(self) -> str:
        """What would make the job fit, from the rejected candidate closest to fitting.

        A job whose plans fit in memory but miss its deadline or break its budget is told the
        deadline or budget the best plan would need; otherwise the memory it lacks."""
        if self.ranked:
            return ""
        if not self.rejected:
            if self.pins is not None:
                return (f"no plan keeps the parallelism section's pins ({self.pins.describe()}) "
                        f"on these pools and devices (the architecture, the device count or "
                        f"the global batch rule them out): loosen them")
            return ""
        in_memory = [c for c in self.rejected if c.memory_bytes <= c.memory_limit_bytes]
        if in_memory:
            cheapest = min(in_memory, key=lambda c: c.price_usd)
            fastest = min(in_memory, key=lambda c: c.completion_s)
            return (f"no plan meets the goal: the fastest ({fastest.pool}, "
                    f"{fastest.plan.describe()}) finishes in {fastest.completion_s / 3600:.2f} h "
                    f"for ${fastest.price_usd:,.2f}; the cheapest ({cheapest.pool}, "
                    f"{cheapest.plan.describe()}) costs ${cheapest.price_usd:,.2f} and finishes "
                    f"in {cheapest.completion_s / 3600:.2f} h: move the deadline or raise "
                    f"budget_usd accordingly")
        closest = min(self.rejected, key=lambda c: c.memory_bytes / c.memory_limit_bytes)
        gib = 2**30
        options = []
        if self.larger_gang is not None:
            gang = self.larger_gang
            options.append(f"{gang.plan.world_size} devices of {gang.pool} "
                           f"({gang.plan.describe()}: {gang.memory_bytes / gib:.1f} GiB per "
                           f"device; set resources.devices or a larger max, on a pool that "
                           f"has them)")
        if closest.plan.micro_batch > 1:
            options.append(f"micro_batch 1 (the closest plan has {closest.plan.micro_batch})")
        activations = closest.memory.terms.get("activations", 0.0) if closest.memory else 0.0
        if not closest.plan.activation_checkpointing and activations > 0.1 * closest.memory_bytes:
            options.append("activation checkpointing")
        options.append("a shorter seq_len or an accelerator with more memory")
        if self.pins is not None:
            options.append(f"fewer pins in the parallelism section ({self.pins.describe()}): "
                           f"only plans that keep them were weighed")
        return (f"needs {closest.memory_bytes / gib:.1f} GiB per device at best "
                f"({closest.pool}, {closest.plan.describe()}); the device has "
                f"{closest.memory_limit_bytes / gib:.1f} GiB usable. Options: "
                + "; ".join(options))


def _precision(plan_precision: str, family: str) -> Precision:
    """What the trainer computes in: bf16 autocast over fp32 master weights on accelerators
    (``workers.core.parallelize.compute_dtype``); a CPU pool computes in fp32 whatever the
    spec asks."""
    return "bf16_mixed" if plan_precision == "bf16" and family != "cpu" else "fp32"


def sharding(plan: Plan) -> Sharding:
    """How the plan shards model states: FSDP over ``dp_shard`` ranks keeps 1/n of weights,
    gradients and optimizer states (ZeRO-3), or of the last two while weights stay gathered
    (shard-grad-op: ZeRO-2); every other layout keeps whole copies (tensor parallel's own split
    is applied apart, by ``tp``)."""
    if plan.dp_shard <= 1:
        return "ddp"
    return "zero2" if plan.strategy is Strategy.FSDP_GRAD_OP else "zero3"


def _gang_sizes(request: PlanRequest, pool: PoolOption) -> list[int]:
    if request.devices is not None:
        return [request.devices] if request.devices <= pool.max_gang else []
    return auto_gang_sizes(request.global_batch, pool.max_gang)


def auto_gang_sizes(global_batch: int, max_gang: int) -> list[int]:
    """The gang sizes ``devices: auto`` weighs, smallest first: powers of two up to the pool's
    largest gang that split the global batch evenly. ``corral plan`` and the cycle
    (:func:`scheduler.policies.placement.gang_shapes`) enumerate the same ones."""
    sizes, size = [], 1
    while size <= max_gang:
        sizes.append(size)
        size *= 2
    return [n for n in sizes if global_batch % n == 0]


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
        shard = 2
        while shard < world:  # HSDP: shard over `shard` ranks, replicate over the groups
            if world % shard == 0:
                layouts.append((Strategy.HSDP, world // shard, shard, 1))
            shard *= 2
        tp = 2
        while tp <= min(world, pool.devices_per_node):
            if _tp_divides(request.profile, tp) and world % tp == 0:
                layouts.append((Strategy.TP, world // tp, 1, tp))
                if world > tp:  # FSDP over the tensor-parallel groups
                    layouts.append((Strategy.FSDP_TP, 1, world // tp, tp))
            tp *= 2
    allowed = request.profile.strategies
    for strategy, replicate, shard, tp in layouts:
        if allowed is not None and strategy.value not in allowed:
            continue
        dp = replicate * shard
        if request.global_batch % dp:
            continue
        per_rank = request.global_batch // dp
        micro_batches = [request.micro_batch] if request.micro_batch else [
            m for m in (1, 2, 4, 8, 16, 32, 64) if per_rank % m == 0]
        for micro in micro_batches:
            if micro > per_rank or per_rank % micro:
                continue
            for recompute in (False, True) if request.profile.trains else (False,):
                nodes = -(-world // pool.devices_per_node)
                plan = Plan(strategy, world, replicate, shard, tp, 1, micro, per_rank // micro,
                            recompute, precision, nodes)
                if request.pins is None or request.pins.admits(plan):
                    yield plan


Calibrated = Mapping[tuple[str, str], float]
"""η measured on this cluster, keyed by (accelerator name as the pool gives it, strategy)."""


@dataclass(frozen=True, slots=True)
class _Fixed:
    """What every plan of one job on one pool shares: worked out once per pool, not per plan."""

    trainable: float | None
    synced: float
    """Parameters whose gradients are reduced and whose optimizer states are stepped: all of
    them, the adapters of a LoRA job, none for a forward-only job."""
    adapters: Adapters | None
    overhead_bytes: float
    limit_bytes: float
    tensors: int
    host_mode: HostMode
    label: str
    block: GatedBlock | None = None
    shapes: dict[int, StepShape] = field(default_factory=dict)
    """The step's shape by micro-batch, the one thing in it that differs between plans."""

    def shape(self, request: PlanRequest, micro_batch: int) -> StepShape:
        shape = self.shapes.get(micro_batch)
        if shape is None:
            profile = request.profile
            shape = self.shapes[micro_batch] = StepShape(
                params=profile.params, layers=profile.layers, hidden=profile.hidden,
                heads=profile.heads, vocab=profile.vocab, seq_len=request.seq_len,
                micro_batch=micro_batch, layer_params=profile.layer_params,
                trainable_params=self.trainable, adapters=self.adapters,
                optimizer=profile.optimizer, block=self.block)
        return shape

    @classmethod
    def of(cls, request: PlanRequest, pool: PoolOption) -> _Fixed:
        profile, acc = request.profile, pool.accelerator
        trainable = profile.trainable_params if profile.trains else 0.0
        adapters = Adapters(tuple(profile.adapter_reads), profile.adapter_dropout) \
            if profile.adapter_reads is not None else None  # type: ignore[arg-type]
        # A CPU rank's whole footprint counts against the machine's memory: the process after
        # its imports plus what autograd and the optimizer hold beyond tensors (memory.py,
        # measured). On accelerators the process lives in host memory and only the tensors
        # (and MEMORY_HEADROOM for allocator and library workspaces) count against the device.
        overhead = CPU_PROCESS_BASELINE_BYTES + CPU_FRAMEWORK_OVERHEAD_BYTES \
            if acc.family == "cpu" else 0.0
        tensors = profile.parameter_tensors or 9 * profile.layers + 3
        if not profile.trains:
            tensors = 0
        elif profile.adapter_reads is not None:
            tensors = 2 * len(profile.adapter_reads) * profile.layers  # LoRA's A and B
        block = GatedBlock((profile.kv_heads or profile.heads) / profile.heads,
                           (profile.intermediate or 4 * profile.hidden) / profile.hidden) \
            if profile.gated_block else None
        return cls(trainable, profile.params if trainable is None else trainable, adapters,
                   overhead, acc.memory_bytes * MEMORY_HEADROOM, tensors,
                   HOST_MODES.get(acc.family, "async"), pool.accelerator_name or acc.name,
                   block)


def evaluate(request: PlanRequest, pool: PoolOption, plan: Plan,
             calibrated: Calibrated | None = None, fixed: _Fixed | None = None) -> Candidate:
    """Predict memory, time and price of one plan on one pool."""
    profile, acc = request.profile, pool.accelerator
    fixed = fixed or _Fixed.of(request, pool)
    strategy = plan.strategy.value
    precision = _precision(plan.precision, acc.family)
    recompute: Recompute = "full" if plan.activation_checkpointing else "none"
    memory = estimate_peak(fixed.shape(request, plan.micro_batch), sharding(plan),
                           plan.dp_shard, plan.tp, precision, recompute,
                           framework_overhead_bytes=fixed.overhead_bytes,
                           grads_held=plan.grad_accum > 1 or plan.strategy is Strategy.DDP,
                           dp_replicate=plan.dp_replicate,
                           # torch steps AdamW with foreach kernels on GPUs, one tensor at a
                           # time on a CPU (torch.optim's _default_to_fused_or_foreach)
                           optimizer_foreach=acc.family != "cpu")
    memory_bytes = memory.total_bytes + profile.resident_bytes
    limit = fixed.limit_bytes
    tokens_per_device = request.global_batch * request.seq_len / plan.world_size
    per_token = profile.flops_per_token - profile.masked_attention_flops_per_token
    if not profile.trains:
        per_token /= 3  # forward only: 2·N of training's 6·N
    elif recompute == "full":
        per_token = (profile.recompute_flops_per_token or profile.flops_per_token * 8 / 6) \
            - profile.masked_attention_flops_per_token * 4 / 3  # skipped again when recomputed
    flops = (per_token + profile.extra_flops_per_token) * tokens_per_device
    bytes_per_value = 2 if precision != "fp32" else 4
    # Gradients are reduced as the master weights hold them: fp32 (DDP's fp32 gradients;
    # FSDP's reduce_dtype=float32).
    grad_bytes = 4
    synced, tp = fixed.synced, plan.tp
    eta = (calibrated or {}).get((fixed.label, strategy)) or efficiency(acc.family, strategy)
    timing = step_time(
        flops_per_device=flops, peak_flops=acc.peak_bf16_flops,
        eta=eta, strategy=strategy,
        params_per_device_full=synced / tp, weight_bytes=bytes_per_value,
        grad_bytes=grad_bytes, dp=plan.dp, dp_replicate=plan.dp_replicate,
        dp_link_bytes_per_s=acc.network_bytes_per_s if plan.nodes > 1
        else acc.intra_node_bytes_per_s,
        tp=tp, tp_link_bytes_per_s=acc.intra_node_bytes_per_s,
        tp_activation_bytes=request.seq_len * plan.micro_batch * profile.hidden * bytes_per_value,
        layers=profile.layers, grad_accum=plan.grad_accum,
        memory_bandwidth_bytes_per_s=acc.memory_bandwidth_bytes_per_s,
        local_params=(synced / tp / (plan.dp_shard if plan.dp_shard > 1 else 1)),
        collective_latency_s=acc.collective_latency_s, dp_overlap=acc.dp_overlap,
        parameter_tensors=fixed.tensors, recompute=recompute == "full",
        host_mode=fixed.host_mode, host_speed=acc.host_speed,
        forward_only=not profile.trains,
        elementwise_bytes=elementwise_bytes(
            request.seq_len * plan.micro_batch, profile.hidden, profile.layers // plan.pp,
            bytes_per_value, tp, recompute == "full", not profile.trains),
        optimizer=profile.optimizer,
    )
    run_s = STARTUP_S + request.total_steps * timing.total_s
    price = plan.world_size * run_s / 3600 * acc.price_per_device_hour
    fits = memory_bytes <= limit
    why = "" if fits else (f"needs {memory_bytes / 2**30:.2f} GiB per device; {acc.name} "
                           f"has {limit / 2**30:.2f} GiB usable")
    return Candidate(pool.name, plan, memory_bytes, limit, timing.total_s, run_s,
                     pool.wait_s + run_s, price, fits, why, memory, timing,
                     fixed.label, eta, timing.parts_s, profile.resident_bytes)


def rank_key(objective: str, candidate: Candidate) -> tuple[float, ...]:
    """Smaller is better: price first for a deadline (every ranked plan meets it), else the
    predicted completion (a budget's limit is applied before ranking)."""
    if objective == "deadline":
        return (candidate.price_usd, candidate.completion_s)
    return (candidate.completion_s, candidate.price_usd)


def plan_job(request: PlanRequest, pools: Sequence[PoolOption],
             calibrated: Calibrated | None = None,
             suggest_larger_gang: bool = True) -> PlanReport:
    """Enumerate → predict → reject → rank (module docstring).

    When nothing fits for lack of memory, ``suggest_larger_gang`` also searches gangs beyond
    the job's and the pools' limits for :attr:`PlanReport.larger_gang` (several times the
    planning's own work: the scheduling cycle, which plans every pending shape every tick,
    leaves it out)."""
    report = PlanReport(pins=request.pins)
    for pool in pools:
        fixed = _Fixed.of(request, pool)
        for world in _gang_sizes(request, pool):
            for plan in _layouts(request, pool, world):
                candidate = _apply_limits(request,
                                          evaluate(request, pool, plan, calibrated, fixed))
                (report.ranked if candidate.fits else report.rejected).append(candidate)
    report.ranked.sort(key=lambda c: rank_key(request.objective, c))
    if suggest_larger_gang and not report.ranked and report.rejected and all(
            c.memory_bytes > c.memory_limit_bytes for c in report.rejected):
        report.larger_gang = _smallest_fitting_gang(request, pools, calibrated)
    return report


LARGEST_GANG_SEARCHED = 4096
"""How far :func:`_smallest_fitting_gang` looks: the device counts of the largest clusters."""


def _smallest_fitting_gang(request: PlanRequest, pools: Sequence[PoolOption],
                           calibrated: Calibrated | None) -> Candidate | None:
    """The best plan of the smallest power-of-two gang, beyond the job's and the pools' limits,
    that fits in memory on one of ``pools``' accelerators (deadline and budget aside): the
    concrete fix for a job that fits nowhere."""
    unbounded = replace(request, devices=None, deadline_s=None, budget_usd=None,
                        objective="completion")
    # What a pool's plans share does not depend on the gang size: worked out once per pool.
    fixed = [_Fixed.of(unbounded, pool) for pool in pools]
    size = 2
    while size <= LARGEST_GANG_SEARCHED:
        found = []
        for pool, shared in zip(pools, fixed, strict=True):
            wide = replace(pool, max_gang=size)
            for plan in _layouts(unbounded, wide, size):
                candidate = evaluate(unbounded, wide, plan, calibrated, shared)
                if candidate.fits:
                    found.append(candidate)
        if found:
            return min(found, key=lambda c: rank_key("completion", c))
        size *= 2
    return None


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
