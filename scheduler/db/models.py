"""SQLAlchemy 2 typed models: the data model of DESIGN.md.

Constraint names follow one naming convention so alembic migrations stay stable across SQLite
and PostgreSQL. The rule that no device serves two live jobs is a partial unique index on
``allocation(node_id, device_index) WHERE released_at IS NULL``: the database, not the
scheduler's good intentions, makes double allocation impossible.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BigInteger ids on PostgreSQL, INTEGER PRIMARY KEY (the rowid alias) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored time made timezone-aware: SQLite returns naive datetimes, stored as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Tenant(Base):
    __tablename__ = "tenant"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    cohort: Mapped[str | None] = mapped_column(String(128), default=None)
    """The cohort whose members lend each other idle quota (scheduler.policies.quota)."""
    max_pending_jobs: Mapped[int | None] = mapped_column(Integer, default=None)
    """Most jobs the tenant may have waiting (PENDING) at once; None: the server's default."""
    submissions_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    """Most submissions the tenant may make in any 60 s; None: the server's default."""
    max_priority: Mapped[int | None] = mapped_column(Integer, default=None)
    """Highest ``resources.priority`` a member of the tenant may ask for; None: the server's
    default. Admins may set any priority."""
    job_user: Mapped[str | None] = mapped_column(String(64), default=None)
    """The identity the tenant's ranks run as in server mode (a user name, ``UID`` or
    ``UID:GID``); None: the server's ``job_user``."""
    data_roots: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    """Folders the tenant's ``data.path`` may lie in (server mode); None: the server's."""
    model_roots: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    """Folders the tenant's ``model.path`` and ``tokenizer.path`` may lie in; None: the
    server's."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    """SHA-256 of the token (hex). Tokens are 256 random bits, so a fast hash is enough: there
    is nothing to brute-force the way there is with a chosen password."""
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128), default="")
    """What the token is for ("ci", "alice's laptop"), shown in listings."""
    prefix: Mapped[str] = mapped_column(String(16), default="")
    """The token's first characters, shown in listings so a user can tell tokens apart."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (CheckConstraint("role IN ('admin', 'member')", name="role"),)


class Queue(Base):
    __tablename__ = "queue"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    priority_class: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_queue_tenant_name"),)


class Quota(Base):
    __tablename__ = "quota"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    cohort: Mapped[str | None] = mapped_column(String(128))
    accelerator: Mapped[str] = mapped_column(String(64))
    nominal: Mapped[int] = mapped_column(Integer)
    borrowing_limit: Mapped[int | None] = mapped_column(Integer)
    lending_limit: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint("nominal >= 0", name="nominal_non_negative"),
        CheckConstraint("(tenant_id IS NULL) <> (cohort IS NULL)", name="tenant_or_cohort"),
    )


class Pool(Base):
    __tablename__ = "pool"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    backend: Mapped[str] = mapped_column(String(32))
    backend_settings: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)
    """What the backend needs to reach the pool's machines (``{"address": ...}`` of a Ray
    cluster); None for the local backend (:class:`scheduler.gangs.registry.BackendRegistry`)."""
    accelerator: Mapped[str] = mapped_column(String(64))
    devices_per_node: Mapped[int] = mapped_column(Integer)
    interconnect: Mapped[str] = mapped_column(String(64), default="")
    price_per_device_hour: Mapped[float] = mapped_column(Float, default=0.0)
    peak_flops: Mapped[float | None] = mapped_column(Float, default=None)
    """Peak FLOP/s per device overriding the catalog's: set by an admin, or measured once for a
    CPU pool (:func:`workers.backends.local.measure_cpu_device_peak`)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    nodes: Mapped[list[Node]] = relationship(back_populates="pool", order_by="Node.id")

    __table_args__ = (CheckConstraint("devices_per_node >= 1", name="devices_positive"),)


class Node(Base):
    __tablename__ = "node"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pool.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128), unique=True)
    devices: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="ready")
    last_heartbeat: Mapped[datetime | None] = mapped_column(default=None)

    pool: Mapped[Pool] = relationship(back_populates="nodes")

    __table_args__ = (
        CheckConstraint("devices >= 1", name="devices_positive"),
        CheckConstraint("state IN ('ready', 'cordoned', 'draining', 'down')", name="state"),
    )


class Job(Base):
    __tablename__ = "job"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id"))
    queue: Mapped[str] = mapped_column(String(128), default="default")
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    model_profile: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """The cost model's view of the job's model (scheduler.cost.profile.ModelProfile fields),
    resolved once at submit so the cycle can plan without an ML framework."""
    pool_id: Mapped[int | None] = mapped_column(ForeignKey("pool.id"), default=None)
    pending_reason: Mapped[str | None] = mapped_column(Text, default=None)
    predicted_step_time_s: Mapped[float | None] = mapped_column(Float, default=None)
    predicted_run_time_s: Mapped[float | None] = mapped_column(Float, default=None)
    prediction: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """The admitted plan's prediction with the parts calibration needs: accelerator, strategy,
    efficiency used, compute and step seconds (scheduler.calibrate)."""
    deadline_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    backend_handle: Mapped[str | None] = mapped_column(Text, default=None)
    run_dir: Mapped[str | None] = mapped_column(Text, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    preempt_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    """Told to checkpoint and stop for another job; set once, signalled once, cleared when the
    gang has stopped and the job is pending again."""
    preempt_signalled_at: Mapped[datetime | None] = mapped_column(default=None)
    """When the gang was sent SIGTERM to stop, for a preemption or for a cancel requested
    through the API; it is killed once this is older than the grace period."""
    progress_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    last_step: Mapped[int | None] = mapped_column(Integer, default=None)
    total_steps: Mapped[int | None] = mapped_column(Integer, default=None)
    first_loss: Mapped[float | None] = mapped_column(Float, default=None)
    last_loss: Mapped[float | None] = mapped_column(Float, default=None)
    tokens_per_s: Mapped[float | None] = mapped_column(Float, default=None)
    step_time_s: Mapped[float | None] = mapped_column(Float, default=None)
    step_times_s: Mapped[list[float] | None] = mapped_column(JSON, default=None)
    """Step times the current attempt reported after its first step (at most
    ``scheduler.calibrate.MAX_SAMPLES``): calibration uses their median."""
    eval_loss: Mapped[float | None] = mapped_column(Float, default=None)
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    events: Mapped[list[JobEvent]] = relationship(order_by="JobEvent.id", viewonly=True)

    __table_args__ = (
        CheckConstraint(
            "state IN ('PENDING', 'ADMITTED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', "
            "'PREEMPTED')",
            name="state",
        ),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts"),
        Index("ix_job_state_priority", "state", "priority", "id"),
        Index("ix_job_tenant_submitted", "tenant_id", "submitted_at"),
        Index("ix_job_tenant_state", "tenant_id", "state"),
    )


class Allocation(Base):
    __tablename__ = "allocation"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("node.id"))
    device_index: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    lease_epoch: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Fencing epoch of the scheduler lease held by the replica that made this allocation
    (scheduler.db.lease); None in embedded mode, where one process schedules."""
    allocated_at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        CheckConstraint("device_index >= 0", name="device_index_non_negative"),
        # One live allocation per device: released rows keep the history and do not count.
        Index(
            "uq_allocation_live_device",
            "node_id",
            "device_index",
            unique=True,
            sqlite_where=text("released_at IS NULL"),
            postgresql_where=text("released_at IS NULL"),
        ),
    )


class JobEvent(Base):
    """Append-only history of a job: every state move and every notable fact."""

    __tablename__ = "job_event"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    time: Mapped[datetime] = mapped_column(default=utcnow)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class Checkpoint(Base):
    __tablename__ = "checkpoint"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_checkpoint_job_step"),)


class Calibration(Base):
    __tablename__ = "calibration"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    accelerator: Mapped[str] = mapped_column(String(64))
    strategy: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    efficiency: Mapped[float] = mapped_column(Float)
    observations: Mapped[int] = mapped_column(Integer, default=0)
    """The estimate's weight: step reports folded in, capped per attempt and in all
    (scheduler.cost.calibration). Rows written before the cap counted runs, so they read light:
    the next runs move them sooner, each still within the bound."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("accelerator", "strategy", "kind", name="uq_calibration_key"),
    )


class SchedulerLease(Base):
    """Who leads the scheduling cycle among the server replicas, until when, at which epoch.

    One row per lease name. Taking the lease over increments ``epoch``; every write the leader
    makes in the cycle first re-checks, in the same transaction, that the row still carries its
    epoch and holder, so a stale leader's commit fails instead of double-booking devices.
    """

    __tablename__ = "scheduler_lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(256))
    epoch: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    renewed_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` a tenant submitted with, and the job it created.

    A repeated submission with the same key and the same body answers with that job instead of
    creating another; the same key with a different body is refused."""

    __tablename__ = "idempotency_key"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(256))
    request_sha256: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("tenant_id", "key", name="uq_idempotency_key_tenant_key"),
    )
