"""What a replay produced: per-job records, the timeline, the cycle's speed, and what went wrong."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.sim.metrics import JobRecord, SimMetrics, percentile


@dataclass(frozen=True, slots=True)
class TimelineSample:
    """The cluster from ``time_s`` until the next sample."""

    time_s: float
    busy_devices: int
    pending_jobs: int
    running_jobs: int


@dataclass(frozen=True, slots=True)
class SimResult:
    """One replay: what happened to every job, the timeline, and how fast the cycle ran."""

    policy: str
    jobs: int
    """Jobs in the replayed workload."""
    total_devices: int
    records: tuple[JobRecord, ...]
    """Jobs that succeeded, in completion order."""
    timeline: tuple[TimelineSample, ...]
    cycle_seconds: tuple[float, ...]
    """Wall time of each cycle (zeros without a timer)."""
    wall_s: float
    rejected: Mapping[int, str]
    """Jobs no pool could ever run, with the reason the service would give at submit."""
    gave_up: tuple[int, ...]
    """Jobs that failed ``max_attempts`` times."""
    unfinished: tuple[int, ...]
    """Jobs still pending when no event was left (the cycle never admitted them)."""
    failed_attempts: int
    narrowed: int
    """Jobs allowing several accelerator types, narrowed to one per cycle."""
    metrics: SimMetrics | None
    """Scores over ``records``; None when no job succeeded."""
    preemptions: int = 0
    """Attempts stopped by a preemption order (of any job, finished or not)."""
    lost_device_s: float = 0.0
    """Device-seconds of work lost by stopped attempts: run since their last checkpoint."""

    @property
    def jobs_per_wall_s(self) -> float | None:
        """Simulated jobs per wall-clock second; None without a timer."""
        return self.jobs / self.wall_s if self.wall_s > 0 else None

    def cycle_ms(self, q: float) -> float | None:
        """The ``q``-th percentile of cycle wall time in milliseconds; None without cycles."""
        return percentile(self.cycle_seconds, q) * 1e3 if self.cycle_seconds else None
