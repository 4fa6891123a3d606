"""Replay metrics on small cases computed by hand."""

from __future__ import annotations

import pytest

from scheduler.sim.metrics import (
    JobRecord,
    UtilizationSample,
    deadline_hit_rate,
    device_utilization,
    finish_time_fairness,
    jain_index,
    makespan_s,
    percentile,
    summarize,
    tenant_service,
    tenant_slowdowns,
)


def record(
    job_id: int,
    tenant: str = "a",
    arrival: float = 0.0,
    start: float = 0.0,
    end: float = 10.0,
    devices: int = 1,
    **fields: object,
) -> JobRecord:
    return JobRecord(job_id, tenant, arrival, start, end, devices, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        (list(range(1, 101)), 99, 99),  # ⌈0.99 · 100⌉ = 99th smallest
        (list(range(1, 101)), 100, 100),
        (list(range(1, 101)), 50, 50),
        (list(range(1, 201)), 99, 198),  # ⌈0.99 · 200⌉ = 198
        ([5.0, 1.0, 3.0], 99, 5.0),  # fewer than 100 values: the largest
        ([5.0, 1.0, 3.0], 1, 1.0),
        ([7.0], 99, 7.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 99)
    with pytest.raises(ValueError, match=r"q must be in \(0, 100\]"):
        percentile([1.0], 0)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3.0, 3.0, 3.0, 3.0], 1.0),  # equal shares
        ([5.0, 0.0, 0.0, 0.0], 1 / 4),  # one takes all: 1/n
        ([1.0, 3.0], 16 / (2 * 10)),  # (1+3)² / (2 · (1+9)) = 0.8
        ([0.0, 0.0], 1.0),
        ([2.0], 1.0),
    ],
)
def test_jain_index(values: list[float], expected: float) -> None:
    assert jain_index(values) == pytest.approx(expected)


def test_completion_queueing_makespan_and_deadlines() -> None:
    records = [
        record(1, arrival=0, start=2, end=12, deadline_s=12.0),  # JCT 12, wait 2, hit (equal)
        record(2, arrival=5, start=5, end=25, deadline_s=20.0),  # JCT 20, wait 0, miss
        record(3, arrival=10, start=30, end=40, preemptions=2),  # JCT 30, wait 20
    ]
    assert [r.completion_s for r in records] == [12, 20, 30]
    assert [r.queueing_s for r in records] == [2, 0, 20]
    assert makespan_s(records) == 40
    assert deadline_hit_rate(records) == 0.5
    assert deadline_hit_rate(records[2:]) is None


def test_utilization_integrates_the_step_function() -> None:
    timeline = [UtilizationSample(0, 4), UtilizationSample(10, 2), UtilizationSample(20, 0)]
    # (4·10 + 2·10) / (4 · 20) = 0.75
    assert device_utilization(timeline, 4) == pytest.approx(0.75)
    # A window past the last sample keeps its value (0); one before the first adds idle time.
    assert device_utilization(timeline, 4, -20, 40) == pytest.approx(60 / (4 * 60))
    assert device_utilization(timeline, 4, 5, 15) == pytest.approx((4 * 5 + 2 * 5) / (4 * 10))
    with pytest.raises(ValueError, match="sorted"):
        device_utilization(list(reversed(timeline)), 4)


def test_tenant_slowdown_and_service() -> None:
    records = [
        record(1, "a", arrival=0, start=0, end=10, devices=2, ideal_run_s=10.0),  # slowdown 1
        record(2, "a", arrival=0, start=10, end=30, devices=2, ideal_run_s=10.0),  # slowdown 3
        record(
            3, "b", arrival=0, start=0, end=40, devices=1, ideal_run_s=10.0, run_s=20.0
        ),  # slowdown 4
    ]
    assert tenant_slowdowns(records) == {"a": 2.0, "b": 4.0}
    assert tenant_service(records) == {"a": 60.0, "b": 20.0}
    assert tenant_service(records, {"a": 3.0}) == {"a": 20.0, "b": 20.0}
    assert jain_index(list(tenant_service(records, {"a": 3.0}).values())) == 1.0


def test_finish_time_fairness_alone_and_on_a_one_over_n_share() -> None:
    records = [
        record(1, arrival=0, start=10, end=30, devices=8, ideal_run_s=20.0),
        record(2, arrival=0, start=0, end=20, devices=2, ideal_run_s=20.0),
    ]
    assert finish_time_fairness(records) == {1: 1.5, 2: 1.0}
    # 16 devices, 4 contending jobs: a share of 4 devices. The 8-device gang would run at half
    # speed alone on it (T_independent = 40 → ρ = 0.75); the 2-device one at full speed.
    assert finish_time_fairness(records, 16, 4) == {1: 0.75, 2: 1.0}
    with pytest.raises(ValueError, match="both"):
        finish_time_fairness(records, 16)


def test_summary_puts_it_together() -> None:
    records = [
        record(1, "a", arrival=0, start=0, end=10, devices=2, ideal_run_s=10.0),
        record(
            2,
            "b",
            arrival=0,
            start=10,
            end=20,
            devices=2,
            ideal_run_s=10.0,
            preemptions=1,
            deadline_s=15.0,
        ),
    ]
    timeline = [UtilizationSample(0, 2), UtilizationSample(20, 0)]
    metrics = summarize(records, timeline, total_devices=4)
    assert (metrics.jobs, metrics.mean_completion_s, metrics.p99_completion_s) == (2, 15, 20)
    assert (metrics.mean_queueing_s, metrics.p99_queueing_s) == (5, 10)
    assert (metrics.makespan_s, metrics.device_utilization) == (20, 0.5)
    assert metrics.jain_slowdown == pytest.approx(9 / (2 * 5))  # slowdowns 1 and 2
    assert metrics.jain_service == 1.0
    assert (metrics.max_finish_time_fairness, metrics.mean_finish_time_fairness) == (2.0, 1.5)
    assert (metrics.deadline_hit_rate, metrics.preemptions) == (0.0, 1)


def test_records_must_be_in_time_order() -> None:
    with pytest.raises(ValueError, match="arrival_s <= start_s <= end_s"):
        record(1, arrival=5, start=2, end=10)
