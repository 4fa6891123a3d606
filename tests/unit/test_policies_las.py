"""Discretized 2D least-attained-service (Tiresias): queues, order and promotion."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.domain.resources import PendingJobView
from scheduler.policies.las import (
    DEFAULT_THRESHOLDS_DEVICE_S,
    AttainedService,
    LasConfig,
    order_by_las,
    queue_index,
)
from tests.builders import make_job

DEVICE_HOUR_S = 3600.0


def job(job_id: int, priority: int = 0) -> PendingJobView:
    return make_job(job_id).priority(priority).build()


def served(device_hours: float, waiting_s: float = 0.0, last_run_s: float = 0.0) -> AttainedService:
    return AttainedService(device_hours * DEVICE_HOUR_S, waiting_s, last_run_s)


@pytest.mark.parametrize(
    ("device_hours", "queue"),
    [(0, 0), (7.99, 0), (8, 1), (63, 1), (64, 2), (511, 2), (512, 3), (1e6, 3)],
    ids=[
        "never ran",
        "just below 8 h",
        "at 8 h",
        "below 64 h",
        "at 64 h",
        "below 512 h",
        "at 512 h",
        "far above",
    ],
)
def test_queue_index(device_hours: float, queue: int) -> None:
    assert queue_index(device_hours * DEVICE_HOUR_S) == queue
    assert LasConfig().queues == len(DEFAULT_THRESHOLDS_DEVICE_S) + 1 == 4


@dataclass(frozen=True)
class Case:
    name: str
    jobs: tuple[PendingJobView, ...]
    services: dict[int, AttainedService]
    order: tuple[int, ...]
    config: LasConfig = LasConfig()


CASES = [
    Case("less attained service first", (job(1), job(2)), {1: served(100), 2: served(10)}, (2, 1)),
    Case(
        "two dimensions: 8 devices × 10 h is more than 1 device × 20 h",
        (job(1), job(2)),
        {1: served(8 * 10), 2: served(1 * 20)},
        (2, 1),
    ),
    Case(
        "inside a queue, the job submitted first",
        (job(2), job(1)),
        {1: served(60), 2: served(9)},
        (1, 2),
    ),
    Case("a job that never ran is in the first queue", (job(1), job(2)), {1: served(9)}, (2, 1)),
    Case(
        "priority before service",
        (job(1), job(2, priority=1)),
        {1: served(0), 2: served(1000)},
        (2, 1),
    ),
    Case(
        "a starving job is promoted to the first queue",
        (job(2), job(1)),
        {1: served(600, waiting_s=2 * 3600, last_run_s=3600), 2: served(1)},
        (1, 2),
        LasConfig(promote_knob=2.0),
    ),
    Case(
        "promotion needs the full wait",
        (job(2), job(1)),
        {1: served(600, waiting_s=2 * 3600 - 1, last_run_s=3600), 2: served(1)},
        (2, 1),
        LasConfig(promote_knob=2.0),
    ),
    Case(
        "no promotion without the knob",
        (job(2), job(1)),
        {1: served(600, waiting_s=1e9, last_run_s=3600), 2: served(1)},
        (2, 1),
    ),
    Case(
        "custom thresholds",
        (job(1), job(2)),
        {1: served(2), 2: served(0.5)},
        (2, 1),
        LasConfig(thresholds_device_s=(3600.0,)),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_order_by_las(case: Case) -> None:
    ordered = order_by_las(case.jobs, case.services, case.config)
    assert tuple(j.job_id for j in ordered) == case.order


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.floats(0, 1e4)), max_size=20))
def test_queues_never_decrease_within_a_priority_level(
    entries: list[tuple[int, float]],
) -> None:
    jobs = [job(i, priority) for i, (priority, _) in enumerate(entries, start=1)]
    services = {i: served(hours) for i, (_, hours) in enumerate(entries, start=1)}
    ordered = order_by_las(jobs, services)
    assert sorted(j.job_id for j in ordered) == [j.job_id for j in jobs]
    keys = [(-j.priority, queue_index(services[j.job_id].attained_device_s)) for j in ordered]
    assert keys == sorted(keys)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: LasConfig(thresholds_device_s=(10.0, 5.0)), "strictly increasing"),
        (lambda: LasConfig(thresholds_device_s=(0.0,)), "positive"),
        (lambda: LasConfig(promote_knob=0.0), "promote_knob must be > 0"),
    ],
    ids=["decreasing thresholds", "zero threshold", "zero knob"],
)
def test_invalid_knobs_say_which_rule_failed(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]
