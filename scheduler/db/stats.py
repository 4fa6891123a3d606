"""Cluster figures the ``/metrics`` endpoint reads at scrape time, each one query.

- pending jobs per tenant (every tenant, zero included, so a gauge falls back to 0);
- devices live jobs hold, per pool and tenant;
- step-time predictions against measurements, per accelerator: how many jobs have both, and
  the mean absolute relative error ``|predicted − measured| / measured`` (0.1: 10 % off).

Each takes ``tenant``: None counts every tenant (an admin's scrape), a name only that tenant's
jobs (a member's: a member learns nothing of other tenants, their names included).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.calibrate import measured_step_time
from scheduler.db.models import Allocation, Job, Node, Pool, Tenant
from scheduler.domain.state import JobState


def pending_jobs_by_tenant(session: Session, tenant: str | None = None) -> dict[str, int]:
    names = select(Tenant.name)
    query = (select(Tenant.name, func.count(Job.id)).join(Job, Job.tenant_id == Tenant.id)
             .where(Job.state == JobState.PENDING.value).group_by(Tenant.name))
    if tenant is not None:
        names, query = names.where(Tenant.name == tenant), query.where(Tenant.name == tenant)
    counts = dict.fromkeys(session.scalars(names), 0)
    rows = session.execute(query)
    counts.update({name: int(count) for name, count in rows})
    return counts


def allocated_devices(session: Session,
                      tenant: str | None = None) -> dict[tuple[str, str], int]:
    """(pool, tenant) -> devices held by live allocations."""
    query = (select(Pool.name, Tenant.name, func.count(Allocation.id))
             .join(Node, Node.id == Allocation.node_id).join(Pool, Pool.id == Node.pool_id)
             .join(Job, Job.id == Allocation.job_id).join(Tenant, Tenant.id == Job.tenant_id)
             .where(Allocation.released_at.is_(None)).group_by(Pool.name, Tenant.name))
    if tenant is not None:
        query = query.where(Tenant.name == tenant)
    rows = session.execute(query)
    return {(pool, tenant): int(count) for pool, tenant, count in rows}


@dataclass(frozen=True, slots=True)
class PredictionError:
    """How well the cost model predicted step times on one accelerator."""

    jobs: int
    mean_abs_relative_error: float


def prediction_errors(session: Session,
                      tenant: str | None = None) -> dict[str, PredictionError]:
    """Accelerator -> prediction error over jobs with a predicted and a measured step time.

    The measurement is the median of the latest attempt's reports (without its first, see
    :func:`scheduler.calibrate.measured_step_time`), else the last reported step time."""
    query = (select(Pool.accelerator, Job.predicted_step_time_s, Job.step_times_s,
                    Job.step_time_s)
             .join(Pool, Pool.id == Job.pool_id).where(Job.predicted_step_time_s.is_not(None)))
    if tenant is not None:
        query = query.join(Tenant, Tenant.id == Job.tenant_id).where(Tenant.name == tenant)
    rows = session.execute(query)
    errors: dict[str, list[float]] = defaultdict(list)
    for accelerator, predicted, samples, last in rows:
        measured = measured_step_time(samples) or last
        if measured is None or not measured > 0 or predicted is None:
            continue
        errors[accelerator].append(abs(predicted - measured) / measured)
    return {accelerator: PredictionError(len(values), sum(values) / len(values))
            for accelerator, values in errors.items()}
