"""Least attained service: jobs that have received the least device-time go first.

Tiresias's discretized two-dimensional LAS (Gu et al., "Tiresias: A GPU Cluster Manager for
Distributed Deep Learning", NSDI 2019, §4.2). A job's *attained service* is in two dimensions,
devices × time, summed over all its attempts::

    attained_device_s = Σ_attempts devices × seconds run

Service is discretized into K queues by thresholds ``T_1 < … < T_{K-1}`` (device-seconds): a job
is in queue ``k`` when ``T_k <= attained < T_{k+1}`` (``T_0 = 0``, ``T_K = ∞``). Lower queues go
first; inside a queue, the job submitted first (Tiresias: FIFO by arrival), so jobs of similar
service do not thrash. Optional starvation guard (Tiresias's ``PROMOTEKNOB``): a job that has
waited at least ``promote_knob × its last run's length`` goes back to queue 0.

Corral adds the priority level on top: the key is ``(-priority, queue, submitted_seq)``, so LAS
orders jobs within a priority level. The defaults are ours: Tiresias's simulator shows
thresholds of 3600, 7200 and 18000 GPU-seconds for small DL jobs; LLM gangs hold 8–512 devices,
so we scale to 8, 64 and 512 device-hours (one, eight and sixty-four hours of one 8-device node).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scheduler.domain.resources import PendingJobView

DEFAULT_THRESHOLDS_DEVICE_S = (8 * 3600.0, 64 * 3600.0, 512 * 3600.0)
"""Queue boundaries in device-seconds: 8, 64 and 512 device-hours (four queues)."""


@dataclass(frozen=True, slots=True)
class LasConfig:
    """Knobs of the LAS order, validated when built."""

    thresholds_device_s: tuple[float, ...] = DEFAULT_THRESHOLDS_DEVICE_S
    promote_knob: float | None = None
    """Promote a job to queue 0 once it waited ``promote_knob ×`` its last run; None: never."""

    def __post_init__(self) -> None:
        thresholds = self.thresholds_device_s
        if any(t <= 0 for t in thresholds) or any(
            a >= b for a, b in zip(thresholds, thresholds[1:], strict=False)
        ):
            raise ValueError(
                f"thresholds_device_s must be positive and strictly increasing, got {thresholds}"
            )
        if self.promote_knob is not None and not self.promote_knob > 0:
            raise ValueError(f"promote_knob must be > 0 or None, got {self.promote_knob}")

    @property
    def queues(self) -> int:
        return len(self.thresholds_device_s) + 1


@dataclass(frozen=True, slots=True)
class AttainedService:
    """What a pending job has received so far, and how long it has been waiting."""

    attained_device_s: float = 0.0
    """Σ over its attempts of devices × seconds run."""
    waiting_s: float = 0.0
    """Seconds since it last stopped running (or since it was submitted)."""
    last_run_s: float = 0.0
    """Length of its last run in seconds (0 if it never ran)."""


def queue_index(
    attained_device_s: float, thresholds_device_s: tuple[float, ...] = DEFAULT_THRESHOLDS_DEVICE_S
) -> int:
    """0 for the least served queue; ``len(thresholds)`` for the most served."""
    return bisect.bisect_right(thresholds_device_s, attained_device_s)


def starving(service: AttainedService, promote_knob: float | None) -> bool:
    """Tiresias's promotion rule: waited at least ``promote_knob ×`` its last run."""
    return (
        promote_knob is not None
        and service.last_run_s > 0
        and service.waiting_s >= promote_knob * service.last_run_s
    )


def las_key(
    job: PendingJobView, service: AttainedService, config: LasConfig = LasConfig()
) -> tuple[int, int, int]:
    """Sort key: priority (descending), LAS queue (ascending), submission (ascending)."""
    queue = (
        0
        if starving(service, config.promote_knob)
        else queue_index(service.attained_device_s, config.thresholds_device_s)
    )
    return (-job.priority, queue, job.submitted_seq)


def order_by_las(
    jobs: Iterable[PendingJobView],
    services: Mapping[int, AttainedService],
    config: LasConfig = LasConfig(),
) -> list[PendingJobView]:
    """Pending jobs, first to consider first; a job missing from ``services`` never ran."""
    fresh = AttainedService()
    return sorted(jobs, key=lambda job: las_key(job, services.get(job.job_id, fresh), config))


__all__ = [
    "DEFAULT_THRESHOLDS_DEVICE_S",
    "AttainedService",
    "LasConfig",
    "las_key",
    "order_by_las",
    "queue_index",
    "starving",
]
