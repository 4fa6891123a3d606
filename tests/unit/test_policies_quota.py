"""Quota with cohorts, borrowing and lending limits: tables of named cases, then properties."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policies.preemption import RunningJobView
from scheduler.policies.quota import (
    CohortQuota,
    Quotas,
    TenantQuota,
    TenantUsage,
    admissible,
    borrowing_flags,
    reclaimable,
    usage_of,
)

GPU = "H100-SXM"


def quota(
    tenant: str,
    nominal: int,
    *,
    cohort: str | None = "ml",
    borrow: int | None = None,
    lend: int | None = None,
    accelerator: str = GPU,
) -> TenantQuota:
    return TenantQuota(tenant, accelerator, nominal, borrow, lend, cohort)


def held(by_tenant: dict[str, int], accelerator: str = GPU) -> tuple[TenantUsage, ...]:
    return tuple(TenantUsage(tenant, accelerator, devices) for tenant, devices in by_tenant.items())


def running(
    job_id: int, tenant: str, devices: int, *, accelerator: str = GPU, priority: int = 0
) -> RunningJobView:
    return RunningJobView(
        job_id=job_id,
        tenant=tenant,
        priority=priority,
        pool_id=1,
        accelerator=accelerator,
        devices_by_node=((1, devices),),
        seconds_since_checkpoint=0.0,
    )


@dataclass(frozen=True)
class Case:
    name: str
    quotas: Quotas
    usage: tuple[TenantUsage, ...]
    tenant: str
    devices: int
    ok: bool
    borrowed: int
    reason: str
    accelerator: str = GPU


CASES = [
    Case(
        "a tenant without a quota row is unlimited",
        Quotas((quota("team-a", 8),)),
        held({"team-a": 8, "team-x": 512}),
        "team-x",
        64,
        True,
        0,
        "quota: team-x has no H100-SXM quota (unlimited)",
    ),
    Case(
        "within nominal, no cohort",
        Quotas((quota("team-a", 32, cohort=None),)),
        held({"team-a": 24}),
        "team-a",
        8,
        True,
        0,
        "quota: team-a 32/32 H100-SXM after admission",
    ),
    Case(
        "over nominal without a cohort",
        Quotas((quota("team-a", 32, cohort=None),)),
        held({"team-a": 32}),
        "team-a",
        8,
        False,
        0,
        "quota: team-a has 32/32 H100-SXM, asks 8; no cohort to borrow from",
    ),
    Case(
        "cohort peers use all they own: nothing to lend",
        Quotas((quota("team-a", 32), quota("team-b", 16))),
        held({"team-a": 32, "team-b": 16}),
        "team-a",
        8,
        False,
        0,
        "quota: team-a has 32/32 H100-SXM, asks 8; cohort ml lends 0 (needs 8)",
    ),
    Case(
        "borrows an idle peer's nominal quota",
        Quotas((quota("team-a", 32), quota("team-b", 16))),
        held({"team-a": 32}),
        "team-a",
        8,
        True,
        8,
        "quota: team-a 40/32 H100-SXM after admission, borrows 8 from cohort ml",
    ),
    Case(
        "only the part above nominal is borrowed",
        Quotas((quota("team-a", 32), quota("team-b", 16))),
        held({"team-a": 28}),
        "team-a",
        8,
        True,
        4,
        "borrows 4 from cohort ml",
    ),
    Case(
        "the borrowing limit caps what it may hold",
        Quotas((quota("team-a", 32, borrow=4), quota("team-b", 16))),
        held({"team-a": 32}),
        "team-a",
        8,
        False,
        0,
        "over its borrowing limit of 4 (at most 36)",
    ),
    Case(
        "the borrowing limit admits up to nominal + limit",
        Quotas((quota("team-a", 32, borrow=4), quota("team-b", 16))),
        held({"team-a": 32}),
        "team-a",
        4,
        True,
        4,
        "36/32",
    ),
    Case(
        "a peer lends at most its lending limit",
        Quotas((quota("team-a", 32), quota("team-b", 16, lend=4))),
        held({"team-a": 32}),
        "team-a",
        8,
        False,
        0,
        "cohort ml lends 4 (needs 8)",
    ),
    Case(
        "a peer's lendable part it uses itself is not idle",
        Quotas((quota("team-a", 0), quota("team-b", 8, lend=4))),
        held({"team-b": 6}),
        "team-a",
        4,
        False,
        0,
        "cohort ml lends 2 (needs 4)",
    ),
    Case(
        "an owner blocked by borrowers learns it may reclaim",
        Quotas((quota("team-a", 32), quota("team-b", 16))),
        held({"team-a": 24, "team-b": 24}),
        "team-a",
        8,
        False,
        0,
        "cohort ml lends 0 (needs 8): team-b borrows 8, reclaimable by preemption",
    ),
    Case(
        "a cohort's own quota is lent to its members",
        Quotas((quota("team-a", 8),), (CohortQuota("ml", GPU, 16),)),
        held({"team-a": 8}),
        "team-a",
        16,
        True,
        16,
        "24/8",
    ),
    Case(
        "accelerator names compare case-insensitively",
        Quotas((quota("team-a", 8, cohort=None),)),
        held({"team-a": 8}),
        "team-a",
        1,
        False,
        0,
        "has 8/8 h100-sxm",
        accelerator="h100-sxm",
    ),
    Case(
        "usage of another accelerator does not count",
        Quotas((quota("team-a", 8, cohort=None),)),
        held({"team-a": 64}, accelerator="A100"),
        "team-a",
        8,
        True,
        0,
        "8/8",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_admissible(case: Case) -> None:
    decision = admissible(case.devices, case.tenant, case.accelerator, case.usage, case.quotas)
    assert (decision.ok, decision.borrowed_devices) == (case.ok, case.borrowed)
    assert case.reason in decision.reason


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (lambda: TenantQuota("a", GPU, -1), "nominal_devices -1 must be >= 0"),
        (lambda: TenantQuota("a", GPU, 8, borrowing_limit_devices=-2), "must be >= 0"),
        (lambda: TenantQuota("a", GPU, 8, lending_limit_devices=9), "between 0 and nominal"),
        (lambda: CohortQuota("ml", GPU, -1), "must be >= 0"),
        (lambda: Quotas((quota("a", 1), quota("a", 2, accelerator="h100-sxm"))), "two quota"),
        (lambda: Quotas((), (CohortQuota("ml", GPU, 1), CohortQuota("ml", GPU, 2))), "two quota"),
    ],
    ids=[
        "negative nominal",
        "negative borrowing limit",
        "lending more than nominal",
        "negative cohort quota",
        "duplicate tenant row",
        "duplicate cohort row",
    ],
)
def test_invalid_quotas_say_which_rule_failed(rows: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rows()  # type: ignore[operator]


RECLAIM_QUOTAS = Quotas((quota("team-a", 32), quota("team-b", 16), quota("team-c", 16)))
RECLAIM_RUNNING = (
    running(1, "team-b", 16),
    running(2, "team-b", 8),
    running(3, "team-c", 16),
    running(4, "team-b", 8, accelerator="A100"),
    running(5, "team-a", 16),
)


@dataclass(frozen=True)
class ReclaimCase:
    name: str
    tenant: str
    devices: int
    job_ids: frozenset[int]
    borrowed: dict[str, int]
    shortfall: int
    reason: str


RECLAIM_CASES = [
    ReclaimCase(
        "an owner within nominal may take back what a peer borrows",
        "team-a",
        16,
        frozenset({1, 2}),
        {"team-b": 8},
        8,
        "team-a reclaims within nominal 32 H100-SXM: team-b borrows 8",
    ),
    ReclaimCase(
        "no shortfall when quota admits, yet borrowers stay reclaimable",
        "team-a",
        8,
        frozenset({1, 2}),
        {"team-b": 8},
        0,
        "team-b borrows 8",
    ),
    ReclaimCase(
        "a job that would borrow never reclaims",
        "team-a",
        24,
        frozenset(),
        {},
        0,
        "a job that borrows never preempts for quota",
    ),
    ReclaimCase(
        "a tenant within nominal is no one's borrower",
        "team-b",
        0,
        frozenset(),
        {},
        0,
        "would hold 24 > nominal 16",
    ),
]


@pytest.mark.parametrize("case", RECLAIM_CASES, ids=[case.name for case in RECLAIM_CASES])
def test_reclaimable(case: ReclaimCase) -> None:
    usage = usage_of(RECLAIM_RUNNING)
    reclaim = reclaimable(case.devices, case.tenant, GPU, usage, RECLAIM_QUOTAS, RECLAIM_RUNNING)
    assert reclaim.job_ids == case.job_ids
    assert dict(reclaim.borrowed_by_tenant) == case.borrowed
    assert reclaim.shortfall_devices == case.shortfall
    assert case.reason in reclaim.reason


def test_no_cohort_means_nothing_to_reclaim() -> None:
    quotas = Quotas((quota("team-a", 8, cohort=None),))
    reclaim = reclaimable(8, "team-a", GPU, (), quotas, (running(1, "team-b", 8),))
    assert reclaim.job_ids == frozenset()
    assert "in no cohort" in reclaim.reason


def test_usage_of_sums_by_tenant_and_accelerator() -> None:
    assert usage_of(RECLAIM_RUNNING) == (
        TenantUsage("team-a", GPU, 16),
        TenantUsage("team-b", "A100", 8),
        TenantUsage("team-b", GPU, 24),
        TenantUsage("team-c", GPU, 16),
    )


def test_borrowing_flags_mark_tenants_above_nominal() -> None:
    flagged = {job.job_id: job.borrowed for job in borrowing_flags(RECLAIM_RUNNING, RECLAIM_QUOTAS)}
    assert flagged == {1: True, 2: True, 3: False, 4: False, 5: False}


# Properties over random cohorts and random request sequences.

TENANTS = ("a", "b", "c")


@st.composite
def cohorts(draw: st.DrawFn) -> Quotas:
    rows = []
    for tenant in TENANTS:
        nominal = draw(st.integers(0, 16))
        borrow = draw(st.none() | st.integers(0, 16))
        lend = draw(st.none() | st.integers(0, nominal))
        rows.append(quota(tenant, nominal, borrow=borrow, lend=lend))
    own = draw(st.integers(0, 8))
    return Quotas(tuple(rows), (CohortQuota("ml", GPU, own),) if own else ())


requests = st.lists(st.tuples(st.sampled_from(TENANTS), st.integers(1, 12)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(quotas=cohorts(), asks=requests)
def test_never_admits_above_nominal_plus_borrowable(
    quotas: Quotas, asks: list[tuple[str, int]]
) -> None:
    """After every admission, no tenant holds more than its nominal quota plus what it may
    borrow, the cohort holds no more than it owns, and no pool is overdrawn."""
    holding = dict.fromkeys(TENANTS, 0)
    rows = {row.tenant: row for row in quotas.tenants}
    owned = quotas.cohort_devices("ml", GPU)
    for tenant, devices in asks:
        decision = admissible(devices, tenant, GPU, held(holding), quotas)
        if not decision.ok:
            continue
        before = holding[tenant]
        holding[tenant] += devices
        row = rows[tenant]
        assert decision.borrowed_devices == max(0, holding[tenant] - row.nominal_devices) - max(
            0, before - row.nominal_devices
        )
        lendable_by_peers = owned + sum(r.lendable_devices for r in rows.values() if r is not row)
        borrowable = lendable_by_peers
        if row.borrowing_limit_devices is not None:
            borrowable = min(borrowable, row.borrowing_limit_devices)
        for name, other in rows.items():
            peers = owned + sum(r.lendable_devices for r in rows.values() if r is not other)
            limit = other.borrowing_limit_devices
            cap = peers if limit is None else min(peers, limit)
            assert holding[name] <= other.nominal_devices + cap
        assert holding[tenant] <= row.nominal_devices + borrowable
        assert sum(holding.values()) <= owned + sum(r.nominal_devices for r in rows.values())
        drawn = sum(max(0, holding[r.tenant] - r.guaranteed_devices) for r in rows.values())
        assert drawn <= owned + sum(r.lendable_devices for r in rows.values())


@settings(max_examples=200, deadline=None)
@given(quotas=cohorts(), asks=requests, tenant=st.sampled_from(TENANTS), devices=st.integers(1, 8))
def test_an_owner_gets_its_nominal_quota_while_no_peer_borrows(
    quotas: Quotas, asks: list[tuple[str, int]], tenant: str, devices: int
) -> None:
    """Kueue's guarantee: lending never stops an owner from using its nominal quota, unless a
    peer borrows it (then reclaim is the way)."""
    holding = dict.fromkeys(TENANTS, 0)
    for who, count in asks:
        if admissible(count, who, GPU, held(holding), quotas).ok:
            holding[who] += count
    rows = {row.tenant: row for row in quotas.tenants}
    borrowing = any(holding[name] > row.nominal_devices for name, row in rows.items())
    fits = holding[tenant] + devices <= rows[tenant].nominal_devices
    if fits and not borrowing:
        assert admissible(devices, tenant, GPU, held(holding), quotas).ok
    if fits and not admissible(devices, tenant, GPU, held(holding), quotas).ok:
        reclaim = reclaimable(devices, tenant, GPU, held(holding), quotas, ())
        assert 0 < reclaim.shortfall_devices <= sum(reclaim.borrowed_by_tenant.values())
