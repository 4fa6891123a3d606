"""Which policies one scheduling cycle applies, with their knobs: one immutable value.

The service builds it each tick from the database (quotas, cohorts, tenant weights) and its own
settings (``corral scheduler --ordering ...``); the simulator builds one per policy it compares.

Orderings (step 1 of the cycle):

* ``priority`` — higher priority first, then the older job (:func:`priority_then_age`);
* ``fifo`` — submission order, priorities ignored;
* ``fair_share`` — priority aged by waiting time, then the tenant's weighted dominant share of
  decayed usage, then age (:mod:`scheduler.policies.fairshare`);
* ``las`` — priority, then least attained service (:mod:`scheduler.policies.las`).

Corral's default is ``fair_share`` with quota, preemption, EASY backfill and moldable shapes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from scheduler.domain.resources import PendingJobView, Snapshot
from scheduler.policies.fairshare import FairShareConfig, order_by_fair_share
from scheduler.policies.las import AttainedService, LasConfig, order_by_las
from scheduler.policies.ordering import priority_then_age
from scheduler.policies.quota import Quotas

Ordering = Literal["priority", "fifo", "fair_share", "las"]
ORDERINGS: tuple[Ordering, ...] = ("priority", "fifo", "fair_share", "las")


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The policies of one cycle; the defaults are Corral's."""

    ordering: Ordering = "fair_share"
    quotas: Quotas = field(default_factory=Quotas)
    fair_share: FairShareConfig = field(default_factory=FairShareConfig)
    las: LasConfig = field(default_factory=LasConfig)
    preemption: bool = True
    """Stop lower-priority jobs (or jobs on borrowed quota) for a job that cannot fit."""
    backfill: bool = True
    """EASY backfill: later jobs may use a pool reserved for a blocked job if they are
    predicted to end before it can start, or use devices it will not need."""
    moldable: bool = True
    """Pick a moldable job's gang size by earliest predicted completion (else: the largest
    size that fits now)."""

    def __post_init__(self) -> None:
        if self.ordering not in ORDERINGS:
            raise ValueError(f"ordering must be one of {', '.join(ORDERINGS)}, "
                             f"got {self.ordering!r}")


def _fifo(jobs: Sequence[PendingJobView]) -> list[PendingJobView]:
    return sorted(jobs, key=lambda job: job.submitted_seq)


def order_pending(snapshot: Snapshot, config: PolicyConfig) -> list[PendingJobView]:
    """Step 1 of the cycle: the pending jobs, first to consider first."""
    jobs = snapshot.pending
    if config.ordering == "fifo":
        return _fifo(jobs)
    if config.ordering == "fair_share":
        return order_by_fair_share(jobs, snapshot.tenant_shares,
                                   {job.job_id: job.waited_s for job in jobs}, config.fair_share)
    if config.ordering == "las":
        services = {job.job_id: AttainedService(job.attained_device_s, job.waited_s,
                                                job.last_run_s) for job in jobs}
        return order_by_las(jobs, services, config.las)
    return priority_then_age(jobs)
