"""Read-side views of one job that the REST API serves besides ``SchedulerService.describe``:
its events, why it waits, and what reading its log needs (attempts, state, secrets to mask).

Each view is one read transaction. With ``tenant`` another tenant's job is not found, exactly
like a missing one (:func:`scheduler.db.repo.get_job`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler.db import repo
from scheduler.db.models import JobEvent
from scheduler.db.session import Database
from scheduler.domain.spec import secret_values
from scheduler.domain.state import JobState

FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
"""States no job leaves: a failed job with attempts left moves on to PENDING in the same
transaction, so a job seen FAILED has none left."""


def event_row(event: JobEvent) -> dict[str, Any]:
    return {"time": event.time.isoformat(), "from": event.from_state, "to": event.to_state,
            "reason": event.reason, "detail": event.detail}


def job_events(db: Database, job_id: int, tenant: str | None = None) -> list[dict[str, Any]]:
    """The job's history, oldest first."""
    with db.read() as session:
        repo.get_job(session, job_id, tenant=tenant)
        return [event_row(event) for event in repo.events(session, job_id)]


def explain(db: Database, job_id: int, tenant: str | None = None) -> dict[str, Any]:
    """The job's state, why it is pending, and the newest event: the scheduler's last word."""
    with db.read() as session:
        job = repo.get_job(session, job_id, tenant=tenant)
        history = repo.events(session, job_id)
        return {"id": job.id, "state": job.state, "pending_reason": job.pending_reason,
                "last_decision": event_row(history[-1]) if history else None}


@dataclass(frozen=True, slots=True)
class LogContext:
    """What serving a job's log needs from its row."""

    attempts: int
    finished: bool
    secrets: tuple[str, ...]


def log_context(db: Database, job_id: int, tenant: str | None = None) -> LogContext:
    with db.read() as session:
        job = repo.get_job(session, job_id, tenant=tenant)
        return LogContext(attempts=job.attempts, finished=JobState(job.state) in FINAL_STATES,
                          secrets=tuple(secret_values(job.spec)))
