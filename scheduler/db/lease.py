"""The scheduler lease: which server replica leads the cycle, until when, at which epoch.

One ``scheduler_lease`` row per lease name. A replica calls :func:`acquire_or_renew` in its own
write transaction every tick; it gets a :class:`Fence` while it leads. Taking the lease over
(first holder, or after the holder's lease expired or was released) increments ``epoch``, so
every leadership term has its own number. The leader opens each write transaction of its cycle
with :func:`check`: a conditional ``UPDATE`` that matches only while the row still carries the
leader's holder and epoch and has not expired. On PostgreSQL that ``UPDATE`` also locks the row
until the transaction ends, so a takeover (itself an ``UPDATE`` of the row) waits for the
leader's write to commit or roll back; the takeover then re-reads the row and succeeds only if
it is still expired. On SQLite every write transaction is ``BEGIN IMMEDIATE`` and therefore
runs alone. Either way a write that passed :func:`check` commits before any other replica
leads, and a write by a replica that no longer leads raises :class:`StaleLeaderError` and is
rolled back.

Times are compared in SQL against the caller's ``now``: replicas' clocks must agree to well
under the lease's time to live (docs/replicas.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from scheduler.db.models import SchedulerLease, as_utc
from scheduler.domain.errors import StaleLeaderError

RELEASED_AT = datetime(1970, 1, 1, tzinfo=UTC)
"""``expires_at`` of a lease nobody holds: the first row, and a released lease."""


@dataclass(frozen=True, slots=True)
class Fence:
    """Proof of leadership: the lease ``name`` held by ``holder`` at ``epoch`` until
    ``expires_at`` (unless renewed)."""

    name: str
    holder: str
    epoch: int
    expires_at: datetime
    ttl_s: float = 0.0
    """Each passed :func:`check` extends the lease to ``now + ttl_s`` (0: it does not)."""


@dataclass(frozen=True, slots=True)
class LeaseState:
    """The lease row as stored: who holds it (or last held it), at which epoch, until when."""

    name: str
    holder: str
    epoch: int
    expires_at: datetime

    def live(self, now: datetime) -> bool:
        return self.expires_at >= _utc(now)


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC; SQLite stores times without a zone, so every time must be UTC."""
    if moment.tzinfo is None:
        raise ValueError(f"lease times must be timezone-aware (UTC), got naive {moment}")
    return moment.astimezone(UTC)


def _insert_free_row(session: Session, name: str, now: datetime) -> None:
    """Create the lease row as free and expired at epoch 0, unless it exists (race-free)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(SchedulerLease)
        .values(name=name, holder="", epoch=0, acquired_at=now, renewed_at=now,
                expires_at=RELEASED_AT)
        .on_conflict_do_nothing(index_elements=["name"])
    )


def acquire_or_renew(session: Session, name: str, holder: str, ttl_s: float,
                     now: datetime) -> Fence | None:
    """Renew the lease if ``holder`` holds it live, take it over (epoch + 1) if it is free or
    expired; None while another holder's lease is live.

    One conditional ``UPDATE``: of two replicas trying at once on PostgreSQL, the second waits
    for the first's row lock, re-evaluates the ``WHERE`` on the row the first committed, finds
    it live and held by another, and matches nothing.
    """
    if not ttl_s > 0:
        raise ValueError(f"ttl_s must be > 0 seconds, got {ttl_s}")
    now = _utc(now)
    expires_at = now + timedelta(seconds=ttl_s)
    _insert_free_row(session, name, now)
    lease = SchedulerLease
    renewing = and_(lease.holder == holder, lease.expires_at >= now)
    row = session.execute(
        update(lease)
        .where(lease.name == name, (lease.holder == holder) | (lease.expires_at < now))
        .values(
            # Every SET expression reads the row as it was before this UPDATE.
            epoch=case((renewing, lease.epoch), else_=lease.epoch + 1),
            acquired_at=case((renewing, lease.acquired_at), else_=now),
            holder=holder, renewed_at=now, expires_at=expires_at,
        )
        .returning(lease.epoch)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        return None
    return Fence(name=name, holder=holder, epoch=int(row[0]), expires_at=expires_at,
                 ttl_s=ttl_s)


def check(session: Session, fence: Fence, now: datetime) -> None:
    """Raise :class:`StaleLeaderError` unless ``fence`` still holds its lease, live, at ``now``.

    Call it first in a write transaction: the matching ``UPDATE`` locks the lease row on
    PostgreSQL until the transaction ends, so no other replica can take the lease over before
    this transaction's writes are committed. A passed check also renews the lease (to
    ``now + fence.ttl_s``): a leader whose tick keeps writing — admitting and launching
    thousands of gangs into an empty cluster takes longer than a lease — keeps leading, while
    one that stops writing (frozen, hung, dead) still loses the lease after its time to live.
    """
    lease = SchedulerLease
    now = _utc(now)
    renewal = {"expires_at": now + timedelta(seconds=fence.ttl_s), "renewed_at": now} \
        if fence.ttl_s > 0 else {"epoch": lease.epoch}
    result = session.execute(
        update(lease)
        .where(lease.name == fence.name, lease.holder == fence.holder,
               lease.epoch == fence.epoch, lease.expires_at >= now)
        .values(**renewal)
        .execution_options(synchronize_session=False)
    )
    if int(getattr(result, "rowcount", 0) or 0) == 1:
        return
    state = current(session, fence.name)
    if state is None or state.epoch == fence.epoch:
        why = "its lease expired or was released"
    else:
        why = f"{state.holder or 'nobody'} holds epoch {state.epoch} now"
    raise StaleLeaderError(
        f"{fence.holder} no longer leads {fence.name!r} at epoch {fence.epoch}: {why}; "
        f"its cycle's writes were rolled back"
    )


def release(session: Session, fence: Fence) -> bool:
    """Give the lease up at once so another replica takes it over on its next try.

    Returns False when ``fence`` no longer held it or released it already."""
    lease = SchedulerLease
    result = session.execute(
        update(lease)
        .where(lease.name == fence.name, lease.holder == fence.holder,
               lease.epoch == fence.epoch, lease.expires_at > RELEASED_AT)
        .values(expires_at=RELEASED_AT)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


def current(session: Session, name: str) -> LeaseState | None:
    """The lease row ``name`` as stored, or None before anyone tried to lead."""
    row = session.scalar(select(SchedulerLease).where(SchedulerLease.name == name))
    if row is None:
        return None
    return LeaseState(name=row.name, holder=row.holder, epoch=int(row.epoch),
                      expires_at=as_utc(row.expires_at))
