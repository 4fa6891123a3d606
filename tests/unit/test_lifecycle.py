"""The transitions table: allowed moves pass, every other move raises and names the options."""

from __future__ import annotations

import itertools

import pytest

from scheduler.domain.errors import TransitionError
from scheduler.domain.state import TRANSITIONS, JobState, check_transition

ALLOWED = [
    (JobState.PENDING, JobState.ADMITTED),
    (JobState.ADMITTED, JobState.RUNNING),
    (JobState.RUNNING, JobState.SUCCEEDED),
    (JobState.RUNNING, JobState.FAILED),
    (JobState.FAILED, JobState.PENDING),
    (JobState.RUNNING, JobState.PREEMPTED),
    (JobState.PREEMPTED, JobState.PENDING),
    (JobState.PENDING, JobState.CANCELLED),
    (JobState.RUNNING, JobState.CANCELLED),
]

FORBIDDEN = [
    (JobState.PENDING, JobState.RUNNING),
    (JobState.SUCCEEDED, JobState.PENDING),
    (JobState.CANCELLED, JobState.PENDING),
    (JobState.SUCCEEDED, JobState.FAILED),
    (JobState.PREEMPTED, JobState.RUNNING),
    (JobState.FAILED, JobState.RUNNING),
]


@pytest.mark.parametrize(("current", "target"), ALLOWED)
def test_allowed_moves_have_a_meaning(current: JobState, target: JobState) -> None:
    assert check_transition(current, target)


@pytest.mark.parametrize(("current", "target"), FORBIDDEN)
def test_forbidden_moves_raise(current: JobState, target: JobState) -> None:
    with pytest.raises(TransitionError, match=f"{current.value} -> {target.value}"):
        check_transition(current, target)


def test_table_is_the_only_source_of_truth() -> None:
    for current, target in itertools.product(JobState, JobState):
        if (current, target) in TRANSITIONS:
            check_transition(current, target)
        else:
            with pytest.raises(TransitionError):
                check_transition(current, target)


def test_terminal_states_have_no_way_out() -> None:
    for terminal in (JobState.SUCCEEDED, JobState.CANCELLED):
        assert not [pair for pair in TRANSITIONS if pair[0] is terminal]
    with pytest.raises(TransitionError, match="nothing \\(terminal\\)"):
        check_transition(JobState.SUCCEEDED, JobState.RUNNING)
