"""The cycle's inputs read from the database in one read transaction.

:func:`snapshot` gathers what :func:`scheduler.cycle.run_cycle` decides on — pools with their
free devices, pending jobs with their history (waiting time, attained service), running jobs
(devices, priority, predicted end, work since the last checkpoint), the calibration table and
each tenant's fair share — and :func:`policy_config` the per-tenant settings (quotas, cohorts,
weights) the policies apply.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import MutableMapping
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.db.models import (
    Allocation,
    Checkpoint,
    Job,
    JobEvent,
    Node,
    Pool,
    Quota,
    Tenant,
    as_utc,
    utcnow,
)
from scheduler.db.repo import calibration_table, load_pool_views
from scheduler.domain.resources import PendingJobView, RunningJobView, Snapshot
from scheduler.domain.spec import JobSpec
from scheduler.domain.state import LIVE_STATES, JobState
from scheduler.policies.config import Ordering, PolicyConfig
from scheduler.policies.fairshare import (
    FairShareConfig,
    UsageRecord,
    capacity_by_accelerator,
    dominant_shares,
    usage_at,
)
from scheduler.policies.quota import CohortQuota, Quotas, TenantQuota

_IN_CHUNK = 5_000
"""Ids per ``IN (...)`` list: SQLite allows 32,766 bound parameters per statement."""

HISTORY_HALF_LIVES = 6
"""Usage older than this many half-lives weighs under 2 % (2^-6) and is not read."""


def snapshot(session: Session, config: PolicyConfig | None = None,
             now: datetime | None = None,
             spec_cache: MutableMapping[int, JobSpec] | None = None) -> Snapshot:
    """Everything one cycle decides on (module docstring); ``spec_cache`` keeps parsed specs
    between cycles (see :func:`pending_views`)."""
    now = now or utcnow()
    fair_share = (config or PolicyConfig()).fair_share
    pools = load_pool_views(session)
    return Snapshot(pools=pools, pending=pending_views(session, now, spec_cache),
                    calibration=calibration_table(session), running=running_views(session, now),
                    tenant_shares=tenant_shares(session, pools, fair_share, now))


def pending_views(session: Session, now: datetime,
                  spec_cache: MutableMapping[int, JobSpec] | None = None,
                  ) -> tuple[PendingJobView, ...]:
    """Pending jobs with how long they waited and how much service they already had.

    A job's spec never changes after submit, so a caller that ticks repeatedly passes a
    ``spec_cache`` (job id -> parsed spec): only new jobs' specs are read and validated, and
    jobs no longer pending leave the cache (``bench/service_tick.py``: with 10,000 pending jobs
    the parsing was about half of the snapshot's time)."""
    cache: MutableMapping[int, JobSpec] = spec_cache if spec_cache is not None else {}
    # Plain rows of the columns used, not ORM objects: building 10,000 of those took most of
    # the snapshot's time.
    jobs = session.execute(select(Job.id, Job.submitted_at, Job.deadline_at, Job.priority,
                                  Job.model_profile)
                           .where(Job.state == JobState.PENDING.value)).all()
    if not jobs:
        cache.clear()
        return ()
    ids = [job.id for job in jobs]
    missing = [job_id for job_id in ids if job_id not in cache]
    for start in range(0, len(missing), _IN_CHUNK):
        chunk = missing[start:start + _IN_CHUNK]
        for job_id, spec in session.execute(select(Job.id, Job.spec).where(Job.id.in_(chunk))):
            cache[job_id] = JobSpec.model_validate(spec)
    for stale in set(cache) - set(ids):
        del cache[stale]
    queued_at = dict(session.execute(
        select(JobEvent.job_id, func.max(JobEvent.time))
        .where(JobEvent.job_id.in_(ids), JobEvent.to_state == JobState.PENDING.value)
        .group_by(JobEvent.job_id)).all())
    attained: dict[int, float] = defaultdict(float)
    last_run: dict[int, tuple[datetime, float]] = {}
    for job_id, started, ended, devices in session.execute(
            select(Allocation.job_id, Allocation.allocated_at, Allocation.released_at,
                   func.count()).where(Allocation.job_id.in_(ids),
                                       Allocation.released_at.is_not(None))
            .group_by(Allocation.job_id, Allocation.allocated_at, Allocation.released_at)):
        seconds = (as_utc(ended) - as_utc(started)).total_seconds()
        attained[job_id] += devices * seconds
        if job_id not in last_run or last_run[job_id][0] < as_utc(started):
            last_run[job_id] = (as_utc(started), seconds)
    views = []
    for job in jobs:
        since = queued_at.get(job.id, job.submitted_at)
        deadline_s = (as_utc(job.deadline_at) - now).total_seconds() if job.deadline_at else None
        views.append(PendingJobView.from_spec(
            job.id, cache[job.id], job.priority, job.model_profile,
            deadline_s, waited_s=(now - as_utc(since)).total_seconds(),
            attained_device_s=attained.get(job.id, 0.0),
            last_run_s=last_run.get(job.id, (now, 0.0))[1]))
    return tuple(views)


def running_views(session: Session, now: datetime) -> tuple[RunningJobView, ...]:
    """Jobs that hold devices: what quota, preemption and backfill need of each."""
    live = session.execute(select(
        Job.id, Job.tenant_id, Job.name, Job.priority, Job.pool_id, Job.started_at,
        Job.predicted_run_time_s, Job.preempt_requested).where(
        Job.state.in_([state.value for state in LIVE_STATES]))).all()
    if not live:
        return ()
    ids = [job.id for job in live]
    held: dict[int, list[tuple[int, int]]] = defaultdict(list)
    since: dict[int, datetime] = {}
    for job_id, node_id, device, allocated in session.execute(
            select(Allocation.job_id, Allocation.node_id, Allocation.device_index,
                   Allocation.allocated_at)
            .where(Allocation.job_id.in_(ids), Allocation.released_at.is_(None))):
        held[job_id].append((node_id, device))
        since[job_id] = as_utc(allocated)
    checkpointed = dict(session.execute(
        select(Checkpoint.job_id, func.max(Checkpoint.created_at))
        .where(Checkpoint.job_id.in_(ids)).group_by(Checkpoint.job_id)).all())
    accelerators = dict(session.execute(select(Pool.id, Pool.accelerator)).all())
    tenants = dict(session.execute(select(Tenant.id, Tenant.name)).all())
    views = []
    for job in live:
        devices = tuple(sorted(held.get(job.id, ())))
        if not devices or job.pool_id is None:
            continue
        started = job.started_at and as_utc(job.started_at) or since.get(job.id, now)
        last = checkpointed.get(job.id)
        safe_since = max(started, as_utc(last)) if last is not None else started
        per_node: dict[int, int] = defaultdict(int)
        for node_id, _ in devices:
            per_node[node_id] += 1
        end_s = None
        if job.predicted_run_time_s is not None:
            end_s = job.predicted_run_time_s - (now - started).total_seconds()
        views.append(RunningJobView(
            job_id=job.id, tenant=tenants.get(job.tenant_id, ""), priority=job.priority,
            pool_id=job.pool_id, accelerator=accelerators.get(job.pool_id, ""),
            devices_by_node=tuple(sorted(per_node.items())),
            seconds_since_checkpoint=max(0.0, (now - safe_since).total_seconds()),
            name=job.name, predicted_end_s=end_s, device_ids=devices,
            preempting=job.preempt_requested))
    return tuple(views)


def tenant_shares(session: Session, pools: tuple, config: FairShareConfig,
                  now: datetime) -> dict[str, float]:
    """Each tenant's weighted dominant share of its decayed device usage (fair share)."""
    oldest = now.timestamp() - HISTORY_HALF_LIVES * config.half_life_s
    rows = session.execute(
        select(Tenant.name, Pool.accelerator, Allocation.allocated_at, Allocation.released_at,
               func.count())
        .join(Job, Job.id == Allocation.job_id).join(Tenant, Tenant.id == Job.tenant_id)
        .join(Node, Node.id == Allocation.node_id).join(Pool, Pool.id == Node.pool_id)
        .where((Allocation.released_at.is_(None))
               | (Allocation.released_at >= datetime.fromtimestamp(oldest, UTC)))
        .group_by(Tenant.name, Pool.accelerator, Allocation.allocated_at,
                  Allocation.released_at))
    records = [UsageRecord(tenant, accelerator, count, as_utc(start).timestamp(),
                           as_utc(end).timestamp() if end is not None else now.timestamp())
               for tenant, accelerator, start, end, count in rows]
    if not records:
        return {}
    weights = dict(session.execute(select(Tenant.name, Tenant.weight)).all())
    usage = usage_at(records, now.timestamp(), config.half_life_s)
    return dominant_shares(usage, capacity_by_accelerator(pools), config.half_life_s, weights)


def policy_config(session: Session, ordering: Ordering = "fair_share",
                  **switches: bool) -> PolicyConfig:
    """The policies with this cluster's quotas and cohorts (``switches``: preemption,
    backfill, moldable)."""
    cohorts = dict(session.execute(select(Tenant.id, Tenant.cohort)).all())
    names = dict(session.execute(select(Tenant.id, Tenant.name)).all())
    tenant_rows, cohort_rows = [], []
    for row in session.scalars(select(Quota).order_by(Quota.id)):
        if row.tenant_id is not None:
            tenant_rows.append(TenantQuota(
                names[row.tenant_id], row.accelerator, row.nominal, row.borrowing_limit,
                row.lending_limit, cohorts.get(row.tenant_id)))
        else:
            cohort_rows.append(CohortQuota(row.cohort or "", row.accelerator, row.nominal))
    return PolicyConfig(ordering=ordering,
                        quotas=Quotas(tuple(tenant_rows), tuple(cohort_rows)), **switches)
