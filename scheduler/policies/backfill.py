"""EASY backfill (Lifka 1995; Mu'alem & Feitelson 2001) with the cost model's run times.

When the job at the head of the order cannot start on a pool, it *reserves* the pool: the
reservation's start (the "shadow time") is when enough devices will be free for it, from the
predicted end of every job running there (admission stores the cost model's run time; users
give no time limit), and its *extra* devices are those free at that moment beyond its need.
A later job may still start on the pool now if

1. it is predicted to end before the shadow time, so it cannot delay the reserved job; or
2. it uses no more than the extra devices (which the reserved job will not need).

A job without a prediction can only use rule 2; a pool whose running jobs have no predictions
has an unknown shadow time (infinite), so only rule 2 applies there too. Devices are counted per
pool, not per node: on a pool whose gangs must stay on one node the reservation can be
optimistic about topology, which only makes backfill more careful (rule 2 takes devices the
reserved job might have used there; it then waits for the next ones to free up).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from scheduler.domain.resources import PoolView, RunningJobView


@dataclass(frozen=True, slots=True)
class Reservation:
    """A blocked job's claim on a pool: when it can start, and what it leaves spare."""

    job_id: int
    job_name: str
    devices: int
    start_s: float
    """Seconds from now until enough devices are predicted free (math.inf when unknown)."""
    extra_devices: int
    """Devices free at ``start_s`` beyond the reserved job's need: backfill may use them."""

    def describe(self) -> str:
        when = "unknown" if math.isinf(self.start_s) else f"in {self.start_s / 3600:.2f} h"
        return f"#{self.job_id} ({self.job_name}), reserved start {when}"


def reserve(job_id: int, job_name: str, pool: PoolView, devices: int,
            running: Sequence[RunningJobView]) -> Reservation:
    """The reservation of a job of ``devices`` on ``pool`` (module docstring)."""
    free = pool.free_devices
    start_s = 0.0
    ends = sorted((0.0 if job.preempting else _end_s(job), job.devices)
                  for job in running if job.pool_id == pool.pool_id)
    for end_s, held in ends:
        if free >= devices:
            break
        free += held
        start_s = end_s
    if free < devices:
        start_s = math.inf
    return Reservation(job_id, job_name, devices, start_s, max(0, free - devices))


def _end_s(job: RunningJobView) -> float:
    """When a running job is expected to free its devices: its predicted end, or unknown
    (infinite) without a prediction or once it has overrun it — an overrun says the prediction
    was wrong, and taking it as "ending now" would let backfill delay the reserved job."""
    if job.predicted_end_s is None or job.predicted_end_s < 0:
        return math.inf
    return job.predicted_end_s


def may_backfill(reservation: Reservation, devices: int,
                 predicted_run_s: float | None) -> tuple[bool, Reservation, str]:
    """Whether a job of ``devices`` predicted to run ``predicted_run_s`` may start now on the
    reserved pool; the reservation after it does; and why (for the pending reason)."""
    if predicted_run_s is not None and predicted_run_s <= reservation.start_s:
        return True, reservation, "ends before the reserved start"
    if devices <= reservation.extra_devices:
        return True, replace(reservation, extra_devices=reservation.extra_devices - devices), \
            "uses devices the reserved job will not need"
    run = "a run of unknown length" if predicted_run_s is None else \
        f"a {predicted_run_s / 3600:.2f} h run"
    return False, reservation, (f"reserved for {reservation.describe()}; {run} on "
                                f"{devices} devices would delay it")


def available_at(pool: PoolView, devices: int, running: Sequence[RunningJobView]) -> float:
    """Seconds from now until ``devices`` devices are predicted free on ``pool`` (0 if they are
    free now; math.inf when unknown): the wait a moldable shape would have."""
    return reserve(0, "", pool, devices, running).start_s
