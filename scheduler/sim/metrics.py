"""Scores of a finished replay: completion and queueing times, utilization, fairness, deadlines.

Definitions, for job ``i`` with arrival ``a_i``, first start ``s_i``, end ``e_i`` and ``T_ind,i``
(its run time alone on its shape, no waiting, no preemption — from ``groundtruth.py``):

- job completion time ``JCT_i = e_i − a_i``; queueing delay ``Q_i = s_i − a_i`` (the wait
  before the first start; waits after a preemption show in JCT, not here);
- slowdown ``S_i = JCT_i / T_ind,i`` (1 = as if alone on the cluster);
- makespan ``max_i e_i − min_i a_i``;
- device utilization ``∫ busy(t) dt / (devices × (t_end − t_start))`` over a step-function
  timeline of busy devices;
- percentiles by nearest rank: ``p_q = x_(⌈q/100 · n⌉)`` of the sorted values, so p99 of
  100 values is the 99th smallest and p99 of fewer than 100 values is the largest;
- Jain's fairness index ``J(x) = (Σ x_k)² / (n · Σ x_k²)`` (Jain, Chiu and Hawe, "A
  Quantitative Measure of Fairness and Discrimination for Resource Allocation in Shared
  Computer Systems", DEC-TR-301, 1984): 1 when all ``n`` shares are equal, ``1/n`` when one
  takes all. Across tenants we apply it to each tenant's mean slowdown (demand-neutral: a tenant
  that asks for less is not "treated unfairly" for receiving less) and, separately, to
  weighted service ``device-seconds_t / weight_t``;
- finish-time fairness ``ρ_i = T_shared,i / T_independent,i`` (Mahajan et al., "Themis: Fair
  and Efficient GPU Cluster Scheduling", NSDI 2020) with ``T_shared = JCT``. Themis defines
  ``T_independent`` as the completion time on a private ``1/N`` share of the cluster, ``N`` the
  number of contending jobs; with ``C`` cluster devices a gang of ``g`` devices then runs at
  ``min(1, (C/N) / g)`` of its speed: ``T_independent = T_ind · max(1, g · N / C)``. Without
  ``C`` and ``N`` we use ``T_independent = T_ind`` (the job alone on its own gang). ``ρ ≤ 1``
  is fair; Themis minimises ``max ρ``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One finished job as the simulator saw it."""

    job_id: int
    tenant: str
    arrival_s: float
    start_s: float
    """First start."""
    end_s: float
    devices: int
    deadline_s: float | None = None
    preemptions: int = 0
    ideal_run_s: float | None = None
    """``T_ind``: the run time alone on its shape; None falls back to ``end − start``."""
    run_s: float | None = None
    """Seconds it held its devices over all attempts; None falls back to ``end − start``."""

    def __post_init__(self) -> None:
        if not self.arrival_s <= self.start_s <= self.end_s:
            raise ValueError(
                f"job {self.job_id}: need arrival_s <= start_s <= end_s, got "
                f"{self.arrival_s}, {self.start_s}, {self.end_s}"
            )
        if self.devices < 1 or self.preemptions < 0:
            raise ValueError(f"job {self.job_id}: devices must be >= 1 and preemptions >= 0")

    @property
    def completion_s(self) -> float:
        return self.end_s - self.arrival_s

    @property
    def queueing_s(self) -> float:
        return self.start_s - self.arrival_s

    @property
    def independent_s(self) -> float:
        """``T_ind``, never 0 (a zero-length job counts as one microsecond)."""
        ideal = self.ideal_run_s if self.ideal_run_s is not None else self.end_s - self.start_s
        return max(ideal, 1e-6)

    @property
    def device_seconds(self) -> float:
        held = self.run_s if self.run_s is not None else self.end_s - self.start_s
        return self.devices * held


@dataclass(frozen=True, slots=True)
class UtilizationSample:
    """``busy_devices`` are in use from ``time_s`` until the next sample."""

    time_s: float
    busy_devices: int


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile: the ``⌈q/100 · n⌉``-th smallest value (``q`` in (0, 100])."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100], got {q}")
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def mean(values: Iterable[float]) -> float:
    items = list(values)
    if not items:
        raise ValueError("mean of no values")
    return math.fsum(items) / len(items)


def makespan_s(records: Sequence[JobRecord]) -> float:
    """``max end − min arrival``; 0 for no records."""
    if not records:
        return 0.0
    return max(r.end_s for r in records) - min(r.arrival_s for r in records)


def device_utilization(
    timeline: Sequence[UtilizationSample],
    total_devices: int,
    start_s: float | None = None,
    end_s: float | None = None,
) -> float:
    """Busy device-seconds over available device-seconds in ``[start_s, end_s]``.

    The timeline is a step function (samples sorted by time); before its first sample nothing
    is busy and its last sample holds until ``end_s``. The window defaults to the first and last
    sample times.
    """
    if total_devices < 1:
        raise ValueError(f"total_devices must be >= 1, got {total_devices}")
    if not timeline:
        return 0.0
    times = [sample.time_s for sample in timeline]
    if times != sorted(times):
        raise ValueError("timeline samples must be sorted by time_s")
    start = times[0] if start_s is None else start_s
    end = times[-1] if end_s is None else end_s
    if end <= start:
        return 0.0
    busy = 0.0
    for sample, next_time in zip(timeline, [*times[1:], math.inf], strict=True):
        low, high = max(sample.time_s, start), min(next_time, end)
        if high > low:
            busy += sample.busy_devices * (high - low)
    return busy / (total_devices * (end - start))


def jain_index(values: Sequence[float]) -> float:
    """``(Σx)² / (n · Σx²)``: 1 for equal shares, ``1/n`` when one of ``n`` takes all."""
    if not values:
        raise ValueError("Jain's index of no values")
    if any(v < 0 for v in values):
        raise ValueError("Jain's index needs non-negative values")
    squares = math.fsum(v * v for v in values)
    if squares == 0:
        return 1.0  # all zero: equal
    return math.fsum(values) ** 2 / (len(values) * squares)


def _by_tenant(records: Iterable[JobRecord]) -> dict[str, list[JobRecord]]:
    groups: dict[str, list[JobRecord]] = defaultdict(list)
    for record in records:
        groups[record.tenant].append(record)
    return dict(sorted(groups.items()))


def tenant_slowdowns(records: Sequence[JobRecord]) -> dict[str, float]:
    """Each tenant's mean slowdown ``JCT / T_ind`` over its jobs."""
    return {
        tenant: mean(r.completion_s / r.independent_s for r in group)
        for tenant, group in _by_tenant(records).items()
    }


def tenant_service(
    records: Sequence[JobRecord], weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Each tenant's device-seconds divided by its weight (1 when unlisted)."""
    weights = weights or {}
    return {
        tenant: math.fsum(r.device_seconds for r in group) / weights.get(tenant, 1.0)
        for tenant, group in _by_tenant(records).items()
    }


def finish_time_fairness(
    records: Sequence[JobRecord], cluster_devices: int | None = None, contending: int | None = None
) -> dict[int, float]:
    """Themis' ``ρ = T_shared / T_independent`` per job id (see the module docstring)."""
    if (cluster_devices is None) != (contending is None):
        raise ValueError("give both cluster_devices and contending, or neither")
    ratios = {}
    for r in records:
        independent = r.independent_s
        if cluster_devices is not None and contending is not None:
            independent *= max(1.0, r.devices * contending / cluster_devices)
        ratios[r.job_id] = r.completion_s / independent
    return ratios


def deadline_hit_rate(records: Sequence[JobRecord]) -> float | None:
    """Share of jobs with a deadline that ended by it; None when no job has one."""
    with_deadline = [r for r in records if r.deadline_s is not None]
    if not with_deadline:
        return None
    hits = sum(1 for r in with_deadline if r.deadline_s is not None and r.end_s <= r.deadline_s)
    return hits / len(with_deadline)


@dataclass(frozen=True, slots=True)
class SimMetrics:
    jobs: int
    mean_completion_s: float
    p99_completion_s: float
    mean_queueing_s: float
    p99_queueing_s: float
    makespan_s: float
    device_utilization: float
    jain_slowdown: float
    """Jain's index over tenants' mean slowdowns."""
    jain_service: float
    """Jain's index over tenants' weighted device-seconds."""
    max_finish_time_fairness: float
    mean_finish_time_fairness: float
    deadline_hit_rate: float | None
    preemptions: int


def summarize(
    records: Sequence[JobRecord],
    timeline: Sequence[UtilizationSample],
    total_devices: int,
    weights: Mapping[str, float] | None = None,
    contending: int | None = None,
) -> SimMetrics:
    """Every metric of the module over one replay; utilization spans the makespan.

    ``contending`` switches finish-time fairness to Themis' ``1/N`` share (see above).
    """
    if not records:
        raise ValueError("no finished jobs to score")
    completion = [r.completion_s for r in records]
    queueing = [r.queueing_s for r in records]
    rho = list(
        finish_time_fairness(
            records, total_devices if contending is not None else None, contending
        ).values()
    )
    first = min(r.arrival_s for r in records)
    return SimMetrics(
        jobs=len(records),
        mean_completion_s=mean(completion),
        p99_completion_s=percentile(completion, 99),
        mean_queueing_s=mean(queueing),
        p99_queueing_s=percentile(queueing, 99),
        makespan_s=makespan_s(records),
        device_utilization=device_utilization(
            timeline, total_devices, first, first + makespan_s(records)
        ),
        jain_slowdown=jain_index(list(tenant_slowdowns(records).values())),
        jain_service=jain_index(list(tenant_service(records, weights).values())),
        max_finish_time_fairness=max(rho),
        mean_finish_time_fairness=mean(rho),
        deadline_hit_rate=deadline_hit_rate(records),
        preemptions=sum(r.preemptions for r in records),
    )
