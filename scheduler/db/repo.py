"""Repository functions: every read and write the scheduler service makes, one place.

Functions take an open :class:`~sqlalchemy.orm.Session` inside a transaction the caller owns
(``Database.write()`` / ``Database.read()``): a state move and its event commit together or not
at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from scheduler.db.models import (
    Allocation,
    Calibration,
    Checkpoint,
    Job,
    JobEvent,
    Node,
    Pool,
    Tenant,
    utcnow,
)
from scheduler.domain.errors import NotFoundError
from scheduler.domain.resources import NodeView, PoolView
from scheduler.domain.spec import JobSpec
from scheduler.domain.state import JobState, check_transition

# --- tenants and pools ---------------------------------------------------------------------


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name, weight=1.0)
        session.add(tenant)
        session.flush()
    return tenant


def find_tenant(session: Session, name: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.name == name))


def get_pool(session: Session, name: str) -> Pool | None:
    return session.scalar(select(Pool).where(Pool.name == name))


def add_pool(
    session: Session,
    name: str,
    backend: str,
    accelerator: str,
    nodes: int,
    devices_per_node: int,
    price_per_device_hour: float = 0.0,
    interconnect: str = "",
    node_names: Sequence[str] | None = None,
    peak_flops: float | None = None,
    backend_settings: dict[str, str] | None = None,
) -> Pool:
    """Register a pool of ``nodes`` like nodes with ``devices_per_node`` devices each."""
    pool = Pool(name=name, backend=backend, backend_settings=backend_settings or None,
                accelerator=accelerator,
                devices_per_node=devices_per_node, interconnect=interconnect,
                price_per_device_hour=price_per_device_hour, peak_flops=peak_flops)
    session.add(pool)
    session.flush()
    names = list(node_names or [f"{name}-{index}" for index in range(nodes)])
    for node_name in names:
        session.add(Node(pool_id=pool.id, name=node_name, devices=devices_per_node, state="ready"))
    session.flush()
    return pool


def list_pools(session: Session) -> list[Pool]:
    return list(session.scalars(select(Pool).order_by(Pool.name)))


def load_pool_views(session: Session) -> tuple[PoolView, ...]:
    """Every pool with its nodes and, per node, the device indexes no live job holds."""
    taken: dict[int, set[int]] = {}
    for node_id, device in session.execute(
        select(Allocation.node_id, Allocation.device_index).where(Allocation.released_at.is_(None))
    ):
        taken.setdefault(node_id, set()).add(device)
    views = []
    for pool in list_pools(session):
        nodes = tuple(
            NodeView(
                node_id=node.id,
                name=node.name,
                devices=node.devices,
                free_devices=tuple(
                    i for i in range(node.devices) if i not in taken.get(node.id, ())
                ),
                schedulable=node.state == "ready",
            )
            for node in pool.nodes
        )
        views.append(PoolView(pool_id=pool.id, name=pool.name, backend=pool.backend,
                              accelerator=pool.accelerator,
                              devices_per_node=pool.devices_per_node,
                              price_per_device_hour=pool.price_per_device_hour, nodes=nodes,
                              peak_flops=pool.peak_flops))
    return tuple(views)


# --- jobs and their lifecycle --------------------------------------------------------------


def create_job(session: Session, spec: JobSpec, reason: str = "submitted") -> Job:
    """Store a validated spec as a PENDING job and its first event."""
    tenant = get_or_create_tenant(session, spec.tenant)
    job = Job(
        tenant_id=tenant.id,
        name=spec.name,
        kind=spec.kind.value,
        spec=spec.model_dump(mode="json"),
        state=JobState.PENDING.value,
        priority=spec.resources.priority,
        max_attempts=spec.resources.max_attempts,
        total_steps=spec.total_steps(),
    )
    session.add(job)
    session.flush()
    session.add(JobEvent(job_id=job.id, from_state=None, to_state=JobState.PENDING.value,
                         reason=reason))
    return job


def get_job(session: Session, job_id: int, lock: bool = False,
            tenant: str | None = None) -> Job:
    """Job ``job_id``; with ``tenant``, only if it is that tenant's: another tenant's job is
    reported exactly like a missing one, so its existence leaks nothing."""
    query = select(Job).where(Job.id == job_id)
    if tenant is not None:
        query = query.join(Tenant, Tenant.id == Job.tenant_id).where(Tenant.name == tenant)
    if lock:
        query = query.with_for_update(of=Job)
    job = session.scalar(query)
    if job is None:
        raise NotFoundError(f"no job with id {job_id}; `corral queue --all` lists jobs")
    return job


def list_jobs(session: Session, states: Iterable[JobState] | None = None,
              limit: int = 200, tenant: str | None = None, name: str | None = None,
              before_id: int | None = None) -> list[Job]:
    """Newest first; ``before_id`` pages on (jobs with smaller ids)."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if states is not None:
        query = query.where(Job.state.in_([s.value for s in states]))
    if tenant is not None:
        query = query.join(Tenant, Tenant.id == Job.tenant_id).where(Tenant.name == tenant)
    if name is not None:
        query = query.where(Job.name == name)
    if before_id is not None:
        query = query.where(Job.id < before_id)
    return list(session.scalars(query))


def latest_succeeded_job(session: Session, tenant: str, name: str) -> Job | None:
    """The newest SUCCEEDED job called ``name`` of ``tenant``, or None."""
    return latest_job_named(session, tenant, name, (JobState.SUCCEEDED,))


def latest_job_named(session: Session, tenant: str, name: str,
                     states: Iterable[JobState] | None = None) -> Job | None:
    """The newest job called ``name`` of ``tenant`` (in one of ``states``), or None."""
    query = (select(Job).join(Tenant, Job.tenant_id == Tenant.id)
             .where(Tenant.name == tenant, Job.name == name))
    if states is not None:
        query = query.where(Job.state.in_([state.value for state in states]))
    return session.scalar(query.order_by(Job.id.desc()).limit(1))


def transition(session: Session, job: Job, target: JobState, reason: str,
               detail: dict[str, Any] | None = None) -> JobEvent:
    """Move ``job`` to ``target`` (checked against the table) and record why, atomically."""
    current = JobState(job.state)
    check_transition(current, target)
    now = utcnow()
    job.state = target.value
    if target is JobState.RUNNING:
        job.started_at = now
    if target in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        job.finished_at = now
    if target is JobState.PENDING:
        job.finished_at = None
        # Each attempt owns its gang: a requeued job must not be polled through the handle
        # of the gang that ended, or its next attempt would "end" before it starts.
        job.backend_handle = None
    event = JobEvent(job_id=job.id, time=now, from_state=current.value, to_state=target.value,
                     reason=reason, detail=detail)
    session.add(event)
    session.flush()
    return event


def note(session: Session, job: Job, reason: str, detail: dict[str, Any] | None = None) -> None:
    """Record a fact about a job that is not a state move (progress milestones, decisions)."""
    session.add(JobEvent(job_id=job.id, from_state=None, to_state=None, reason=reason,
                         detail=detail))


def events(session: Session, job_id: int) -> list[JobEvent]:
    return list(session.scalars(
        select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    ))


def attempt_starts(session: Session, job_id: int) -> list[JobEvent]:
    """The job's moves to RUNNING, oldest first: one per attempt that started."""
    return list(session.scalars(
        select(JobEvent).where(JobEvent.job_id == job_id,
                               JobEvent.to_state == JobState.RUNNING.value)
        .order_by(JobEvent.id)))


def failure_count(session: Session, job_id: int) -> int:
    return session.scalar(
        select(func.count()).select_from(JobEvent).where(
            JobEvent.job_id == job_id, JobEvent.to_state == JobState.FAILED.value
        )
    ) or 0


def calibration_table(session: Session) -> dict[tuple[str, str, str], float]:
    """Measured η by (accelerator, strategy, job kind)."""
    return {(row.accelerator, row.strategy, row.kind): row.efficiency
            for row in session.scalars(select(Calibration))}


# --- allocations ---------------------------------------------------------------------------


def allocate(session: Session, job: Job, devices: Sequence[tuple[int, int]],
             lease_epoch: int | None = None) -> None:
    """Give ``job`` these (node id, device index) pairs; the unique index refuses a taken one.

    ``lease_epoch``: the fencing epoch of the scheduler lease the allocating replica holds
    (None in embedded mode)."""
    job.epoch += 1
    for node_id, device_index in devices:
        session.add(Allocation(job_id=job.id, node_id=node_id, device_index=device_index,
                               epoch=job.epoch, lease_epoch=lease_epoch))
    session.flush()


def release(session: Session, job: Job, when: datetime | None = None) -> int:
    """Free every device ``job`` holds; return how many."""
    result = session.execute(
        update(Allocation)
        .where(Allocation.job_id == job.id, Allocation.released_at.is_(None))
        .values(released_at=when or utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def live_devices(session: Session, job_id: int) -> dict[str, list[int]]:
    """Node name -> device indexes the job holds now."""
    rows = session.execute(
        select(Node.name, Allocation.device_index)
        .join(Node, Node.id == Allocation.node_id)
        .where(Allocation.job_id == job_id, Allocation.released_at.is_(None))
        .order_by(Node.name, Allocation.device_index)
    )
    held: dict[str, list[int]] = {}
    for node_name, device in rows:
        held.setdefault(node_name, []).append(device)
    return held


# --- checkpoints ---------------------------------------------------------------------------


def add_checkpoint(session: Session, job: Job, step: int, path: str,
                   metrics: dict[str, Any] | None = None) -> None:
    """Record a complete checkpoint once (re-reading the same progress line is harmless)."""
    exists = session.scalar(
        select(Checkpoint.id).where(Checkpoint.job_id == job.id, Checkpoint.step == step)
    )
    if exists is None:
        session.add(Checkpoint(job_id=job.id, step=step, path=path, metrics=metrics))
        session.flush()


def latest_checkpoint(session: Session, job_id: int) -> Checkpoint | None:
    return session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.step.desc()).limit(1)
    )


def checkpoints(session: Session, job_id: int) -> list[Checkpoint]:
    return list(session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
    ))
