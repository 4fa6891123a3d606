"""Fair share: decayed usage, weighted dominant shares and the aging order."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.domain.resources import NodeView, PendingJobView, PoolView
from scheduler.policies.fairshare import (
    FairShareConfig,
    UsageRecord,
    capacity_by_accelerator,
    decay,
    dominant_shares,
    effective_priority,
    order_by_fair_share,
    usage_at,
)
from tests.builders import make_job

DAY_S = 24 * 3600.0
HOUR_S = 3600.0


def record(
    tenant: str, devices: int, start_s: float, end_s: float, kind: str = "H100"
) -> UsageRecord:
    return UsageRecord(tenant, kind, devices, start_s, end_s)


def job(job_id: int, tenant: str, priority: int = 0) -> PendingJobView:
    return replace(make_job(job_id).priority(priority).build(), tenant=tenant)


def test_a_device_second_halves_every_half_life() -> None:
    assert decay(0.0, DAY_S) == 1.0
    assert decay(DAY_S, DAY_S) == pytest.approx(0.5)
    assert decay(3 * DAY_S, DAY_S) == pytest.approx(0.125)


@dataclass(frozen=True)
class UsageCase:
    name: str
    records: tuple[UsageRecord, ...]
    now_s: float
    expected: dict[str, dict[str, float]]


W = DAY_S / math.log(2)  # h / ln 2: the decayed length of an infinitely long record
USAGE_CASES = [
    UsageCase(
        "a short record that ends now weighs its device-seconds",
        (record("a", 8, 99.0, 100.0),),
        100.0,
        {"a": {"H100": 8 * W * (1 - decay(1, DAY_S))}},
    ),
    UsageCase(
        "a record one half-life old weighs half",
        (record("a", 1, 0.0, 1.0),),
        1.0 + DAY_S,
        {"a": {"H100": 0.5 * W * (1 - decay(1, DAY_S))}},
    ),
    UsageCase(
        "a record held forever tends to devices × h / ln 2",
        (record("a", 4, -1e9, 0.0),),
        0.0,
        {"a": {"H100": 4 * W}},
    ),
    UsageCase(
        "time after now does not count",
        (record("a", 2, 0.0, 2 * DAY_S),),
        DAY_S,
        {"a": {"H100": 2 * W * 0.5}},
    ),
    UsageCase(
        "a record that has not started weighs nothing", (record("a", 2, 10.0, 20.0),), 5.0, {}
    ),
    UsageCase(
        "records add up per tenant and type",
        (record("a", 1, -1e9, 0.0), record("a", 1, -1e9, 0.0, "A100"), record("b", 3, -1e9, 0.0)),
        0.0,
        {"a": {"H100": W, "A100": W}, "b": {"H100": 3 * W}},
    ),
]


@pytest.mark.parametrize("case", USAGE_CASES, ids=[case.name for case in USAGE_CASES])
def test_usage_at(case: UsageCase) -> None:
    usage = usage_at(case.records, case.now_s, DAY_S)
    assert usage.keys() == case.expected.keys()
    for tenant, by_type in case.expected.items():
        assert usage[tenant] == pytest.approx(by_type)


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(0, 1e6),
    length=st.floats(1, 1e6),
    cut=st.floats(0.01, 0.99),
    now_after=st.floats(0, 1e6),
)
def test_decayed_usage_is_additive_over_time(
    start: float, length: float, cut: float, now_after: float
) -> None:
    """Splitting a record in two changes nothing: the closed form is an integral."""
    end = start + length
    middle = start + cut * length
    now = end + now_after
    whole = usage_at([record("a", 4, start, end)], now, DAY_S)["a"]["H100"]
    parts = usage_at([record("a", 4, start, middle), record("a", 4, middle, end)], now, DAY_S)
    assert parts["a"]["H100"] == pytest.approx(whole, rel=1e-9)


def test_decayed_usage_matches_a_riemann_sum() -> None:
    steps, start, end, now = 10_000, 0.0, 2 * DAY_S, 3 * DAY_S
    width = (end - start) / steps
    numeric = sum(8 * width * decay(now - (start + (i + 0.5) * width), DAY_S) for i in range(steps))
    closed = usage_at([record("a", 8, start, end)], now, DAY_S)["a"]["H100"]
    assert closed == pytest.approx(numeric, rel=1e-6)


@dataclass(frozen=True)
class ShareCase:
    name: str
    usage: dict[str, dict[str, float]]
    weights: dict[str, float]
    expected: dict[str, float]


CAPACITY = {"H100": 16, "A100": 64}
SHARE_CASES = [
    ShareCase("all of one type forever is a share of one", {"a": {"H100": 16 * W}}, {}, {"a": 1.0}),
    ShareCase("the dominant type decides", {"a": {"H100": 4 * W, "A100": 32 * W}}, {}, {"a": 0.5}),
    ShareCase(
        "weight divides the share",
        {"a": {"H100": 8 * W}, "b": {"H100": 8 * W}},
        {"b": 2.0},
        {"a": 0.5, "b": 0.25},
    ),
    ShareCase(
        "accelerator names compare case-insensitively", {"a": {"h100": 8 * W}}, {}, {"a": 0.5}
    ),
    ShareCase("a type with no capacity is ignored", {"a": {"TPU": 100 * W}}, {}, {"a": 0.0}),
]


@pytest.mark.parametrize("case", SHARE_CASES, ids=[case.name for case in SHARE_CASES])
def test_dominant_shares(case: ShareCase) -> None:
    shares = dominant_shares(case.usage, CAPACITY, DAY_S, case.weights)
    assert shares == pytest.approx(case.expected)


def test_capacity_counts_every_node_of_every_pool() -> None:
    nodes = tuple(NodeView(i, f"n{i}", 8, ()) for i in range(2))
    pools = [
        PoolView(1, "p", "ray", "H100", 8, nodes=nodes),
        PoolView(2, "q", "ray", "h100", 8, nodes=nodes[:1]),
    ]
    assert capacity_by_accelerator(pools) == {"h100": 24}


@dataclass(frozen=True)
class OrderCase:
    name: str
    jobs: tuple[PendingJobView, ...]
    shares: dict[str, float]
    waited_s: dict[int, float]
    order: tuple[int, ...]


ORDER_CASES = [
    OrderCase(
        "priority first", (job(1, "light"), job(2, "heavy", priority=1)), {"heavy": 0.9}, {}, (2, 1)
    ),
    OrderCase(
        "then the smaller dominant share",
        (job(1, "heavy"), job(2, "light")),
        {"heavy": 0.9, "light": 0.1},
        {},
        (2, 1),
    ),
    OrderCase(
        "then the job submitted first", (job(2, "a"), job(1, "b")), {"a": 0.5, "b": 0.5}, {}, (1, 2)
    ),
    OrderCase(
        "a tenant without usage has share 0",
        (job(1, "heavy"), job(2, "new")),
        {"heavy": 0.01},
        {},
        (2, 1),
    ),
    OrderCase(
        "an hour of waiting is one priority level",
        (job(1, "heavy"), job(2, "light")),
        {"heavy": 0.9},
        {1: HOUR_S},
        (1, 2),
    ),
    OrderCase(
        "waiting less than a step changes nothing",
        (job(1, "heavy"), job(2, "light")),
        {"heavy": 0.9},
        {1: HOUR_S - 1},
        (2, 1),
    ),
    OrderCase(
        "three hours of waiting beat a job two levels up",
        (job(1, "heavy"), job(2, "light", priority=2)),
        {"heavy": 0.9},
        {1: 3 * HOUR_S},
        (1, 2),
    ),
]


@pytest.mark.parametrize("case", ORDER_CASES, ids=[case.name for case in ORDER_CASES])
def test_order_by_fair_share(case: OrderCase) -> None:
    ordered = order_by_fair_share(case.jobs, case.shares, case.waited_s)
    assert tuple(j.job_id for j in ordered) == case.order


@settings(max_examples=200, deadline=None)
@given(
    gap=st.integers(0, 5),
    share=st.floats(0, 1),
    others=st.lists(st.tuples(st.integers(0, 5), st.floats(0, 1)), max_size=10),
)
def test_a_job_waiting_long_enough_goes_first(
    gap: int, share: float, others: list[tuple[int, float]]
) -> None:
    """No starvation: a job that waited (Δp + 1) steps is ordered before every job that just
    arrived with a priority at most Δp above it, whatever the shares."""
    config = FairShareConfig(age_step_s=60.0)
    old = job(1, "heavy")
    newcomers = [job(i + 2, f"t{i}", priority=min(p, gap)) for i, (p, _) in enumerate(others)]
    shares = {"heavy": 1.0 + share, **{f"t{i}": s for i, (_, s) in enumerate(others)}}
    ordered = order_by_fair_share([*newcomers, old], shares, {1: (gap + 1) * 60.0}, config)
    assert ordered[0].job_id == 1


def test_effective_priority_never_falls_with_negative_waits() -> None:
    assert effective_priority(3, -100.0, 60.0) == 3


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: FairShareConfig(half_life_s=0), "half_life_s must be > 0"),
        (lambda: FairShareConfig(age_step_s=-1), "age_step_s must be > 0"),
        (lambda: usage_at([], 0.0, 0.0), "half_life_s must be > 0"),
        (
            lambda: dominant_shares({"a": {"H100": 1.0}}, {"H100": 8}, DAY_S, {"a": 0}),
            "weight must be > 0",
        ),
    ],
    ids=["zero half-life", "negative age step", "usage without half-life", "zero weight"],
)
def test_invalid_knobs_say_which_rule_failed(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]
