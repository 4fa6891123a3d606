"""Job states and the one table of allowed moves between them.

Every move in Corral goes through :func:`check_transition`; the database layer writes a
``JobEvent`` with the move's reason in the same transaction as the state change.
"""

from __future__ import annotations

from enum import StrEnum

from scheduler.domain.errors import TransitionError


class JobState(StrEnum):
    PENDING = "PENDING"
    ADMITTED = "ADMITTED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PREEMPTED = "PREEMPTED"


# (from, to) -> what the move means. A state absent from the left column is terminal unless a
# row names it. FAILED -> PENDING is a retry; it is only taken while attempts remain.
TRANSITIONS: dict[tuple[JobState, JobState], str] = {
    (JobState.PENDING, JobState.ADMITTED): "the cycle allocated a gang and chose a plan",
    (JobState.PENDING, JobState.CANCELLED): "cancelled before it was admitted",
    (JobState.PENDING, JobState.FAILED): "can never be scheduled",
    (JobState.ADMITTED, JobState.RUNNING): "the backend started the ranks",
    (JobState.ADMITTED, JobState.FAILED): "the backend could not launch the ranks",
    (JobState.ADMITTED, JobState.CANCELLED): "cancelled before its ranks started",
    (JobState.ADMITTED, JobState.PREEMPTED): "preempted before its ranks started",
    (JobState.ADMITTED, JobState.PENDING): "held: its launch met a condition that passes "
                                          "(no space left for its files); admitted again later",
    (JobState.RUNNING, JobState.SUCCEEDED): "all ranks exited 0",
    (JobState.RUNNING, JobState.FAILED): "a rank failed or died",
    (JobState.RUNNING, JobState.CANCELLED): "cancelled while running",
    (JobState.RUNNING, JobState.PREEMPTED): "stopped to free its devices; resumes from checkpoint",
    (JobState.PREEMPTED, JobState.PENDING): "requeued after preemption",
    (JobState.PREEMPTED, JobState.CANCELLED): "cancelled while preempted",
    (JobState.FAILED, JobState.PENDING): "retried: attempts remain",
}

TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.CANCELLED})
# FAILED is terminal once no attempts remain; the service decides, the table allows the retry.
LIVE_STATES = frozenset({JobState.ADMITTED, JobState.RUNNING})
"""States in which a job holds devices."""


def check_transition(current: JobState, target: JobState) -> str:
    """Return the meaning of the move ``current -> target`` or raise :class:`TransitionError`."""
    try:
        return TRANSITIONS[(current, target)]
    except KeyError:
        allowed = sorted(to.value for (frm, to) in TRANSITIONS if frm == current)
        raise TransitionError(
            f"illegal job state move {current.value} -> {target.value}; "
            f"from {current.value} a job may go to: {', '.join(allowed) or 'nothing (terminal)'}"
        ) from None
