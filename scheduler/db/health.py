"""Is the database there and at the schema this code expects: what ``/readyz`` asks.

Also names the errors that mean "the database cannot be reached right now" (as opposed to a
bug), so the API can answer 503 for them without importing SQLAlchemy itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from scheduler.db.migrate import current_revision, head_revision
from scheduler.db.session import Database

UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError,
                                                   PoolTimeoutError)
"""Connection refused or lost, a lock wait that timed out, an exhausted connection pool."""


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    revision: str | None
    problem: str = ""
    """What is wrong and what to do, when not ready."""


def readiness(db: Database) -> Readiness:
    """``SELECT 1`` answers, and the schema is at the newest migration."""
    try:
        with db.read() as session:
            session.execute(text("SELECT 1"))
        current = current_revision(db)
    except SQLAlchemyError as err:
        # The message may hold connection details; the type says enough for a probe.
        return Readiness(False, None, f"the database does not answer ({type(err).__name__})")
    head = head_revision()
    if current != head:
        return Readiness(False, current, f"the database schema is at {current or 'nothing'}, "
                                         f"this server expects {head}: run `corral db upgrade`")
    return Readiness(True, current)
