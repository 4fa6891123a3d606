"""What a submission checks in the database besides the spec: tenant limits and idempotency.

Both run inside the transaction that stores the job, after the tenant's row is locked, so two
replicas serving the same tenant cannot both let through "the 100th pending job", and the job
and its idempotency key commit together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.db.models import IdempotencyKey, Job, Tenant, as_utc
from scheduler.domain.errors import ConflictError, ForbiddenError, LimitError
from scheduler.domain.state import JobState

RATE_WINDOW_S = 60.0
"""Submissions per minute are counted over a sliding window of this many seconds."""


@dataclass(frozen=True, slots=True)
class SubmitLimits:
    """The server's defaults for tenants whose own row leaves a limit unset (None: no limit)."""

    max_pending_jobs: int | None = None
    submissions_per_minute: int | None = None
    max_priority: int | None = None
    """Highest priority a member may ask for; admins are not capped."""


@dataclass(frozen=True, slots=True)
class Submitted:
    job_id: int
    created: bool
    """False when an earlier submission with the same idempotency key made the job."""


def lock_tenant(session: Session, tenant_id: int) -> Tenant:
    """The tenant row, locked until the transaction ends (PostgreSQL; SQLite's writer lock
    already serializes)."""
    return session.scalars(select(Tenant).where(Tenant.id == tenant_id).with_for_update()).one()


def check_priority(tenant: Tenant, priority: int, limits: SubmitLimits, is_admin: bool) -> None:
    cap = tenant.max_priority if tenant.max_priority is not None else limits.max_priority
    if is_admin or cap is None or priority <= cap:
        return
    raise ForbiddenError(
        f"resources.priority {priority} is above tenant {tenant.name!r}'s limit {cap}; ask for "
        f"at most {cap} or ask an admin to raise it (corral admin tenant set --max-priority)")


def check_limits(session: Session, tenant: Tenant, limits: SubmitLimits, now: datetime) -> None:
    """Raise :class:`LimitError` if the tenant has too many pending jobs or submitted too often
    in the last minute; ``retry_after_s`` is when the oldest counted submission leaves the
    window (a pending-job limit frees up only as jobs start: a guess of one window)."""
    max_pending = tenant.max_pending_jobs if tenant.max_pending_jobs is not None \
        else limits.max_pending_jobs
    per_minute = tenant.submissions_per_minute if tenant.submissions_per_minute is not None \
        else limits.submissions_per_minute
    if max_pending is not None:
        pending = session.scalar(select(func.count()).select_from(Job).where(
            Job.tenant_id == tenant.id, Job.state == JobState.PENDING.value)) or 0
        if pending >= max_pending:
            raise LimitError(
                f"tenant {tenant.name!r} has {pending} pending jobs, its limit is {max_pending}: "
                f"wait until some start or cancel some (corral queue)", RATE_WINDOW_S)
    if per_minute is not None:
        since = now - timedelta(seconds=RATE_WINDOW_S)
        recent = list(session.scalars(
            select(Job.submitted_at).where(Job.tenant_id == tenant.id, Job.submitted_at > since)
            .order_by(Job.submitted_at.desc()).limit(per_minute)))
        if len(recent) >= per_minute:
            # A limit of 0 stops the tenant's submissions: nothing leaves the window to wait for.
            oldest = as_utc(recent[-1]) if recent else now
            retry = max(1.0, RATE_WINDOW_S - (now - oldest).total_seconds())
            raise LimitError(
                f"tenant {tenant.name!r} submitted {per_minute} jobs in the last "
                f"{RATE_WINDOW_S:.0f} s, its limit: retry in {retry:.0f} s", retry)


def find_by_key(session: Session, tenant_id: int, key: str, request_sha256: str) -> int | None:
    """The job an earlier submission with this key made, or None; a different body under the
    same key is a :class:`ConflictError`."""
    row = session.scalar(select(IdempotencyKey).where(
        IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key))
    if row is None:
        return None
    if row.request_sha256 != request_sha256:
        raise ConflictError(
            f"Idempotency-Key {key!r} was used for a different job spec (job {row.job_id}); "
            f"use a new key for a new job")
    return row.job_id


def remember_key(session: Session, tenant_id: int, key: str, request_sha256: str,
                 job_id: int) -> None:
    session.add(IdempotencyKey(tenant_id=tenant_id, key=key, request_sha256=request_sha256,
                               job_id=job_id))
    session.flush()
