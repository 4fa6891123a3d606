"""Errors Corral raises on purpose, each with a message that says what to change.

Hierarchy::

    CorralError
    ├── SpecError            a job spec is malformed or asks for something impossible
    │   └── UnschedulableError   valid, but no pool in this cluster can ever run it
    ├── PlanError            a parallelism plan does not multiply to its world size
    ├── TransitionError      an illegal job-state move (a bug, never user input)
    ├── NotFoundError        a job, pool or checkpoint that does not exist
    ├── BackendError         a backend could not launch, poll or cancel a gang
    │   └── LaunchRefusedError   the launch can never succeed as asked (an argument list
    │                            the kernel refuses, a job variable no rank may get): no retry
    ├── ForbiddenError       the caller's role or tenant may not do this (a member setting
    │                        another tenant, a priority above its tenant's limit, admin routes)
    ├── ConflictError        the request contradicts stored state (an idempotency key reused
    │                        with a different body, a pool that exists already)
    ├── LimitError           a tenant limit (pending jobs, submissions per minute) is reached;
    │                        ``retry_after_s`` says when to try again
    └── StaleLeaderError     this replica lost the scheduler lease: its cycle's writes are void
"""

from __future__ import annotations


class CorralError(Exception):
    """Base of every error Corral raises deliberately."""


class SpecError(CorralError):
    """A job spec is malformed, has unknown fields, or asks for something impossible."""


class UnschedulableError(SpecError):
    """A valid spec that no pool of this cluster can run; the message names the fix."""


class PlanError(CorralError):
    """A parallelism plan that is inconsistent with its world size or its model."""


class TransitionError(CorralError):
    """A job-state move that the transitions table does not allow."""


class NotFoundError(CorralError):
    """A job, pool, node or checkpoint that does not exist."""


class BackendError(CorralError):
    """A backend failed to launch, poll or cancel a gang of ranks."""


class LaunchRefusedError(BackendError):
    """A launch that would fail the same way on every retry; the job fails without one."""


class BackendUnavailableError(BackendError):
    """The backend's machines cannot be reached or cannot take the gang now (a Ray cluster
    that is down, or short of what Ray's own accounting has free): not the job's fault. A
    launch is held and tried again later without spending an attempt; a gang that cannot be
    polled stays as it was recorded until it can."""


class ForbiddenError(CorralError):
    """The caller's role or tenant does not allow this request."""


class ConflictError(CorralError):
    """The request contradicts what is stored (a reused idempotency key, an existing name)."""


class LimitError(CorralError):
    """A per-tenant limit is reached; try again after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StaleLeaderError(CorralError):
    """The scheduler lease moved to another replica (a higher fencing epoch): the writes of
    this replica's cycle were rolled back."""
