"""Pure value types of Corral: job specs, plans, states, resources, errors. No I/O."""

from scheduler.domain.errors import (
    BackendError,
    CorralError,
    NotFoundError,
    PlanError,
    SpecError,
    TransitionError,
    UnschedulableError,
)
from scheduler.domain.plan import Plan, Strategy
from scheduler.domain.resources import NodeView, PendingJobView, PoolView, Snapshot
from scheduler.domain.spec import JobKind, JobSpec, load_spec, load_spec_file, parse_spec
from scheduler.domain.state import TRANSITIONS, JobState, check_transition

__all__ = [
    "TRANSITIONS", "BackendError", "CorralError", "JobKind", "JobSpec", "JobState", "NodeView",
    "NotFoundError", "PendingJobView", "Plan", "PlanError", "PoolView", "Snapshot", "SpecError",
    "Strategy", "TransitionError", "UnschedulableError", "check_transition", "load_spec",
    "load_spec_file", "parse_spec",
]
