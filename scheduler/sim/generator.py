"""A seeded generator of LLM-development workloads, shaped after the Acme trace summary.

Shape source: ``traces/acme/cluster_summary.csv`` (Hu et al., "Characterization of Large
Language Model Development in the Datacenter", NSDI 2024), row ``Kalos`` — the cluster that ran
LLM work only. Columns used (values quoted where they are used below):

- ``med_run_time_gpu`` = 124 s and ``avg_run_time_gpu`` = 1,259.7 s: most jobs are minutes
  long, a few run for days — the per-kind run-time distributions below mix to a median of
  ~2 min and a mean of ~20 min (run time as observed, failed jobs stopping early).
- ``max_run_time_gpu`` = 625,740 s: no job runs longer (run times are capped there).
- ``med_gpu_num`` = 1 with ``avg_gpu_num`` = 26.77 and ``max_gpu`` = 1,024: most jobs take
  one GPU, a few pretraining jobs take a large slice of the cluster. Gang sizes of pretraining
  jobs are therefore fractions of the cluster's largest pool, not absolute counts.
- ``fail_rate_gpu`` = 0.397: the share of GPU jobs that fail. ``fail_rate_gpu_time`` = 0.08 is
  far smaller, as failures strike early (the paper's finding), so a failing job runs
  ``u² × run_time`` with ``u ~ Uniform(0, 1)`` (median a quarter of its run) before it fails.
- ``avg_que_time_gpu`` / ``med_que_time_gpu`` are *outputs* of a scheduler, not inputs: they
  are what a replay is compared with, not what the generator draws.

The paper's qualitative finding that pretraining jobs are few but hold most GPU time, while
evaluation jobs are many, short and small, fixes the kind mix in :data:`KINDS`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from scheduler.cost.hardware import lookup
from scheduler.sim.workload import ClusterSpec, PoolSpec, TraceJob, TraceKind

KALOS_MAX_RUN_TIME_S = 625_740.0
"""``max_run_time_gpu`` of Kalos in cluster_summary.csv."""
KALOS_FAIL_RATE = 0.397
"""``fail_rate_gpu`` of Kalos in cluster_summary.csv."""
KALOS_MEDIAN_RUN_TIME_S = 124.0
"""``med_run_time_gpu`` of Kalos; the generator's target, checked by its tests."""
KALOS_MEAN_RUN_TIME_S = 1259.689
"""``avg_run_time_gpu`` of Kalos; the generator's target, checked by its tests."""
KALOS_MEDIAN_GPUS = 1
"""``med_gpu_num`` of Kalos."""


@dataclass(frozen=True, slots=True)
class KindProfile:
    """How jobs of one kind are drawn.

    Run time (on ``max_devices`` reference devices) is lognormal: ``median × exp(sigma × z)``
    with ``z ~ N(0, 1)``. Gang sizes are drawn from ``gangs`` (size → weight), or, when
    ``gang_fractions`` is set, as ``floor_pow2(largest_pool × fraction)``.
    """

    kind: TraceKind
    share: float
    """Fraction of all jobs."""
    median_run_s: float
    sigma: float
    gangs: tuple[tuple[int, float], ...] = ()
    gang_fractions: tuple[float, ...] = ()
    moldable: bool = False
    """May run on ``[max/2, max]`` devices (powers of two halve cleanly)."""
    scaling_exponent: float = 1.0
    priority: int = 0


KINDS: tuple[KindProfile, ...] = (
    # Evaluation: the bulk of jobs, a minute or two on one GPU (Hu et al. §3: short, small).
    KindProfile(TraceKind.EVAL, 0.78, 150.0, 1.0, gangs=((1, 0.7), (2, 0.1), (4, 0.1), (8, 0.1))),
    KindProfile(
        TraceKind.COMPRESS, 0.08, 600.0, 1.0, gangs=((1, 0.5), (2, 0.2), (4, 0.2), (8, 0.1))
    ),
    KindProfile(
        TraceKind.FINETUNE,
        0.11,
        1800.0,
        1.2,
        gangs=((1, 0.15), (2, 0.15), (4, 0.2), (8, 0.3), (16, 0.1), (32, 0.1)),
        moldable=True,
        scaling_exponent=0.9,
        priority=1,
    ),
    # Pretraining: few jobs, large gangs, hours to days; they hold most of the device time.
    KindProfile(
        TraceKind.PRETRAIN,
        0.03,
        12600.0,
        1.5,
        gang_fractions=(1 / 2, 1 / 4, 1 / 8, 1 / 16),
        moldable=True,
        scaling_exponent=0.95,
        priority=2,
    ),
)


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """What to generate: ``jobs`` jobs from ``tenants`` tenants on ``cluster``, Poisson arrivals
    at ``arrival_rate_per_s``, reproducible from ``seed``."""

    jobs: int
    tenants: int
    arrival_rate_per_s: float
    cluster: ClusterSpec
    seed: int = 0
    kinds: tuple[KindProfile, ...] = KINDS
    fail_rate: float = KALOS_FAIL_RATE
    max_run_time_s: float = KALOS_MAX_RUN_TIME_S
    deadline_fraction: float = 0.0
    """Share of non-pretraining jobs given a deadline of ``arrival + slack × run time``."""
    deadline_slack: tuple[float, float] = (1.5, 4.0)
    constrained_fraction: float = 0.0
    """Share of jobs pinned to one accelerator type (drawn in proportion to its devices)."""
    speeds: Mapping[str, float] | None = None
    """Speed of each accelerator relative to the first pool's; None = from the hardware
    catalog's peak compute (1.0 for types the catalog lacks)."""
    tenant_names: tuple[str, ...] = field(init=False, repr=False)
    """``tenant-0`` .. ``tenant-{tenants-1}`` (zero-padded to sort)."""

    def __post_init__(self) -> None:
        rules = [
            (self.jobs >= 0, f"jobs must be >= 0, got {self.jobs}"),
            (self.tenants >= 1, f"tenants must be >= 1, got {self.tenants}"),
            (
                self.arrival_rate_per_s > 0,
                f"arrival_rate_per_s must be > 0, got {self.arrival_rate_per_s}",
            ),
            (0 <= self.fail_rate <= 1, f"fail_rate must be in [0, 1], got {self.fail_rate}"),
            (0 <= self.deadline_fraction <= 1, "deadline_fraction must be in [0, 1]"),
            (0 <= self.constrained_fraction <= 1, "constrained_fraction must be in [0, 1]"),
            (
                1 <= self.deadline_slack[0] <= self.deadline_slack[1],
                f"deadline_slack must be (low, high) with 1 <= low <= high, got "
                f"{self.deadline_slack}",
            ),
            (
                abs(sum(k.share for k in self.kinds) - 1) < 1e-9,
                f"kind shares must sum to 1, got {sum(k.share for k in self.kinds)}",
            ),
        ]
        for ok, message in rules:
            if not ok:
                raise ValueError(message)
        width = len(str(self.tenants - 1))
        names = tuple(f"tenant-{i:0{width}d}" for i in range(self.tenants))
        object.__setattr__(self, "tenant_names", names)


def homogeneous_cluster(
    devices: int, accelerator: str = "A100-80G", devices_per_node: int = 8
) -> ClusterSpec:
    """One pool of ``devices`` devices (rounded up to whole nodes)."""
    nodes = max(1, math.ceil(devices / devices_per_node))
    return ClusterSpec((PoolSpec("main", accelerator, nodes, devices_per_node),))


def catalog_speeds(cluster: ClusterSpec) -> dict[str, float]:
    """Each accelerator's peak dense bf16 FLOP/s over the first pool's (1.0 where unknown).

    Peak ratios are an upper bound on real speed-ups (memory-bound work gains less); they are
    a default, not a measurement.
    """
    reference = cluster.pools[0].accelerator

    def peak(name: str) -> float | None:
        try:
            return lookup(name).peak_bf16_flops
        except KeyError:
            return None

    base = peak(reference)
    speeds = {}
    for accelerator in cluster.devices_by_accelerator():
        own = peak(accelerator)
        speeds[accelerator] = own / base if own and base else 1.0
    return speeds


def _floor_pow2(value: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(1.0, value)))))


def _weighted(rng: random.Random, options: tuple[tuple[int, float], ...]) -> int:
    return rng.choices([size for size, _ in options], [weight for _, weight in options])[0]


def generate(config: GeneratorConfig) -> tuple[TraceJob, ...]:
    """``config.jobs`` jobs with ids 0.. in arrival order; the same config gives the same jobs.

    Steps per job: 1. arrival (exponential gap), 2. kind, 3. tenant (Zipf weights: tenant ``i``
    submits in proportion to ``1/(i+1)``), 4. accelerator constraint, 5. gang size capped by the
    largest pool it may use, 6. run time and work, 7. failure, 8. deadline.
    """
    rng = random.Random(config.seed)
    cluster = config.cluster
    speeds = dict(config.speeds) if config.speeds is not None else catalog_speeds(cluster)
    job_speeds = tuple(sorted(speeds.items()))
    capacity = cluster.devices_by_accelerator()
    tenant_weights = [1 / (i + 1) for i in range(config.tenants)]
    jobs: list[TraceJob] = []
    now_s = 0.0
    for job_id in range(config.jobs):
        # 1. Poisson arrivals.
        now_s += rng.expovariate(config.arrival_rate_per_s)
        # 2-3. Kind and tenant.
        profile = rng.choices(config.kinds, [k.share for k in config.kinds])[0]
        tenant = rng.choices(config.tenant_names, tenant_weights)[0]
        # 4. Pin to one type, in proportion to its devices.
        accelerators: tuple[str, ...] = ()
        if rng.random() < config.constrained_fraction:
            accelerators = (rng.choices(list(capacity), list(capacity.values()))[0],)
        # 5. Gang size: a gang lives in one pool.
        largest = cluster.largest_gang(accelerators)
        if profile.gang_fractions:
            devices = _floor_pow2(largest * rng.choice(profile.gang_fractions))
        else:
            devices = _weighted(rng, profile.gangs)
        devices = min(devices, largest)
        low = max(1, devices // 2) if profile.moldable else devices
        # 6. Run time on `devices` reference devices; work scales it back to one device.
        run_s = min(
            profile.median_run_s * math.exp(profile.sigma * rng.gauss(0.0, 1.0)),
            config.max_run_time_s,
        )
        work_s = run_s * math.pow(devices, profile.scaling_exponent)
        # 7. Failures strike early: after u² of the run.
        fails_after_s = None
        if rng.random() < config.fail_rate:
            fails_after_s = max(1.0, run_s * rng.random() ** 2)
        # 8. Deadlines for the interactive kinds.
        deadline_s = None
        if profile.kind is not TraceKind.PRETRAIN and rng.random() < config.deadline_fraction:
            deadline_s = now_s + rng.uniform(*config.deadline_slack) * run_s
        jobs.append(
            TraceJob(
                job_id=job_id,
                arrival_s=now_s,
                tenant=tenant,
                priority=profile.priority,
                kind=profile.kind,
                min_devices=low,
                max_devices=devices,
                accelerators=accelerators,
                work_s=work_s,
                scaling_exponent=profile.scaling_exponent,
                speeds=job_speeds,
                deadline_s=deadline_s,
                fails_after_s=fails_after_s,
                name=f"{profile.kind}-{job_id}",
            )
        )
    return tuple(jobs)


def offered_load(
    jobs: tuple[TraceJob, ...], cluster: ClusterSpec, speeds: Mapping[str, float] | None = None
) -> float:
    """Device-seconds asked for per device-second available over the arrival span.

    ``Σ run_time(max_devices, reference) × max_devices / (capacity × span)`` with
    ``capacity = Σ_pools devices × speed`` in reference devices (``speeds`` by accelerator, 1.0
    when None or unlisted: every device counts as one); above 1 the queue grows without bound.
    Failures are ignored (they shorten runs).
    """
    if len(jobs) < 2:
        return 0.0
    span_s = max(job.arrival_s for job in jobs) - min(job.arrival_s for job in jobs)
    demand = sum(
        job.work_s / math.pow(job.max_devices, job.scaling_exponent) * job.max_devices
        for job in jobs
    )
    capacity = sum(
        pool.devices * (speeds or {}).get(pool.accelerator, 1.0) for pool in cluster.pools
    )
    return demand / (capacity * span_s) if span_s > 0 else math.inf
