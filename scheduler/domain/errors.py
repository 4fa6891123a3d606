"""Errors Corral raises on purpose, each with a message that says what to change.

Hierarchy::

    CorralError
    ├── SpecError            a job spec is malformed or asks for something impossible
    │   └── UnschedulableError   valid, but no pool in this cluster can ever run it
    ├── PlanError            a parallelism plan does not multiply to its world size
    ├── TransitionError      an illegal job-state move (a bug, never user input)
    ├── NotFoundError        a job, pool or checkpoint that does not exist
    └── BackendError         a backend could not launch, poll or cancel a gang
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
