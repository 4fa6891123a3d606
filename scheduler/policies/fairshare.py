"""Fair share: pending jobs of tenants that used less of the cluster lately go first.

Three pieces, each a pure function of its inputs:

1. **Decayed usage** (Slurm's ``PriorityDecayHalfLife``, slurm.schedmd.com/priority_multifactor
   .html): a device held at time τ counts ``2^(-(now - τ) / h)`` device-seconds at ``now``, so
   a record of ``n`` devices held over ``[start, end]`` weighs

       U = n · ∫_start^end 2^(-(now - τ)/h) dτ
         = n · (h / ln 2) · (2^(-(now - end)/h) - 2^(-(now - start)/h))

   device-seconds (exact, not sampled; a running job's record ends at ``now``).
2. **Dominant share** (DRF: Ghodsi et al., "Dominant Resource Fairness", NSDI 2011), one
   resource per accelerator type. A tenant that held every device of type ``a`` forever would
   have decayed usage ``C_a · h / ln 2``; its share of ``a`` is its usage over that, and its
   dominant share is the largest over types, divided by its weight (weighted DRF)::

       s_t = max_a  U_{t,a} / (C_a · h / ln 2)  /  w_t

3. **Order**: higher effective priority first, then the smaller dominant share, then the job
   submitted first. Waiting raises a job's effective priority by one per ``age_step_s``::

       effective_priority = priority + floor(waited_s / age_step_s)

   so a job of a heavy tenant overtakes, after ``Δp · age_step_s`` of waiting, every newer job
   that is ``Δp`` priority levels above it: nothing waits forever.

Where Corral differs from Slurm: shares are flat per tenant (no account tree, no Fair Tree), the
fair-share term orders jobs inside a priority level instead of being one weighted term of a
sum, and shares are computed once per cycle (not after each admission within it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scheduler.domain.resources import PendingJobView, PoolView

DEFAULT_HALF_LIFE_S = 7 * 24 * 3600.0
"""Slurm's default ``PriorityDecayHalfLife`` (7 days)."""
DEFAULT_AGE_STEP_S = 3600.0
"""One priority level per hour of waiting."""


@dataclass(frozen=True, slots=True)
class FairShareConfig:
    """Knobs of the fair-share order, validated when built."""

    half_life_s: float = DEFAULT_HALF_LIFE_S
    age_step_s: float = DEFAULT_AGE_STEP_S

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise ValueError(f"half_life_s must be > 0, got {self.half_life_s}")
        if not self.age_step_s > 0:
            raise ValueError(f"age_step_s must be > 0, got {self.age_step_s}")


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """``devices`` of ``accelerator`` held by ``tenant`` from ``start_s`` to ``end_s``
    (seconds on the scheduler's clock; a running job's record ends now)."""

    tenant: str
    accelerator: str
    devices: int
    start_s: float
    end_s: float


def decay(age_s: float, half_life_s: float) -> float:
    """Weight of one device-second ``age_s`` seconds ago: ``2^(-age_s / half_life_s)``."""
    return math.exp2(-age_s / half_life_s)


def usage_at(
    records: Iterable[UsageRecord], now_s: float, half_life_s: float
) -> dict[str, dict[str, float]]:
    """Decayed device-seconds at ``now_s``, by tenant, then accelerator (as named in records).

    Time after ``now_s`` does not count (a record that has not started yet weighs nothing)."""
    if not half_life_s > 0:
        raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
    window_s = half_life_s / math.log(2)
    usage: dict[str, dict[str, float]] = {}
    for record in records:
        start, end = record.start_s, min(record.end_s, now_s)
        if end <= start or record.devices <= 0:
            continue
        weight = window_s * (decay(now_s - end, half_life_s) - decay(now_s - start, half_life_s))
        by_type = usage.setdefault(record.tenant, {})
        by_type[record.accelerator] = by_type.get(record.accelerator, 0.0) + record.devices * weight
    return usage


def dominant_shares(
    usage: Mapping[str, Mapping[str, float]],
    capacity_devices: Mapping[str, int],
    half_life_s: float,
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Each tenant's weighted dominant share of decayed usage (formula in the module docstring).

    ``capacity_devices``: devices of each accelerator type in the cluster (types compare
    case-insensitively; a type with no devices is ignored). ``weights``: the Tenant table's
    weight, 1.0 when absent."""
    window_s = half_life_s / math.log(2)
    capacity = {kind.lower(): count for kind, count in capacity_devices.items() if count > 0}
    shares: dict[str, float] = {}
    for tenant, by_type in usage.items():
        weight = (weights or {}).get(tenant, 1.0)
        if not weight > 0:
            raise ValueError(f"tenant {tenant!r}: weight must be > 0, got {weight}")
        dominant = max(
            (
                used / (capacity[kind.lower()] * window_s)
                for kind, used in by_type.items()
                if kind.lower() in capacity
            ),
            default=0.0,
        )
        shares[tenant] = dominant / weight
    return shares


def effective_priority(priority: int, waited_s: float, age_step_s: float) -> int:
    """``priority + floor(waited_s / age_step_s)``: one level more per step of waiting."""
    return priority + math.floor(max(0.0, waited_s) / age_step_s)


def fair_share_key(
    job: PendingJobView,
    dominant_share: float,
    waited_s: float,
    age_step_s: float = DEFAULT_AGE_STEP_S,
) -> tuple[int, float, int]:
    """Sort key: effective priority (descending), dominant share (ascending), submission."""
    return (
        -effective_priority(job.priority, waited_s, age_step_s),
        dominant_share,
        job.submitted_seq,
    )


def order_by_fair_share(
    jobs: Iterable[PendingJobView],
    shares: Mapping[str, float],
    waited_s: Mapping[int, float],
    config: FairShareConfig = FairShareConfig(),
) -> list[PendingJobView]:
    """Pending jobs, first to consider first. A tenant missing from ``shares`` has share 0; a
    job missing from ``waited_s`` has waited 0 s."""
    return sorted(
        jobs,
        key=lambda job: fair_share_key(
            job, shares.get(job.tenant, 0.0), waited_s.get(job.job_id, 0.0), config.age_step_s
        ),
    )


def capacity_by_accelerator(pools: Iterable[PoolView]) -> dict[str, int]:
    """Devices per accelerator type (lower-cased) over all nodes of ``pools``."""
    capacity: dict[str, int] = {}
    for pool in pools:
        kind = pool.accelerator.lower()
        capacity[kind] = capacity.get(kind, 0) + pool.total_devices
    return capacity


__all__ = [
    "DEFAULT_AGE_STEP_S",
    "DEFAULT_HALF_LIFE_S",
    "FairShareConfig",
    "UsageRecord",
    "capacity_by_accelerator",
    "decay",
    "dominant_shares",
    "effective_priority",
    "fair_share_key",
    "order_by_fair_share",
    "usage_at",
]
