"""Victim selection: named cases, then a brute-force comparison on small random clusters."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.domain.resources import NodeView, PoolView
from scheduler.policies.preemption import (
    Preemptor,
    Reclaim,
    RunningJobView,
    select_victims,
)


def make_pool(
    *free_per_node: int, per_node: int = 8, backend: str = "ray", pool_id: int = 1
) -> PoolView:
    """Nodes 1, 2, … of ``per_node`` devices with the given numbers free."""
    nodes = tuple(
        NodeView(index, f"n{index}", per_node, tuple(range(per_node - free, per_node)))
        for index, free in enumerate(free_per_node, start=1)
    )
    return PoolView(pool_id, "gpu", backend, "H100", per_node, nodes=nodes)


@dataclass(frozen=True)
class Job:
    """``Job(3).on({1: 4}).priority(2)`` builds a RunningJobView."""

    job_id: int
    holds: dict[int, int] = field(default_factory=lambda: {1: 8})
    tenant: str = "team-b"
    prio: int = 0
    since_checkpoint_s: float = 0.0
    is_borrowed: bool = False
    pool_id: int = 1

    def on(self, holds: dict[int, int]) -> Job:
        return Job(
            self.job_id,
            holds,
            self.tenant,
            self.prio,
            self.since_checkpoint_s,
            self.is_borrowed,
            self.pool_id,
        )

    def priority(self, value: int) -> Job:
        return Job(
            self.job_id,
            self.holds,
            self.tenant,
            value,
            self.since_checkpoint_s,
            self.is_borrowed,
            self.pool_id,
        )

    def of(self, tenant: str) -> Job:
        return Job(
            self.job_id,
            self.holds,
            tenant,
            self.prio,
            self.since_checkpoint_s,
            self.is_borrowed,
            self.pool_id,
        )

    def checkpointed(self, seconds_ago: float) -> Job:
        return Job(
            self.job_id,
            self.holds,
            self.tenant,
            self.prio,
            seconds_ago,
            self.is_borrowed,
            self.pool_id,
        )

    def borrowed(self) -> Job:
        return Job(
            self.job_id,
            self.holds,
            self.tenant,
            self.prio,
            self.since_checkpoint_s,
            True,
            self.pool_id,
        )

    def in_pool(self, pool_id: int) -> Job:
        return Job(
            self.job_id,
            self.holds,
            self.tenant,
            self.prio,
            self.since_checkpoint_s,
            self.is_borrowed,
            pool_id,
        )

    def build(self) -> RunningJobView:
        return RunningJobView(
            job_id=self.job_id,
            tenant=self.tenant,
            priority=self.prio,
            pool_id=self.pool_id,
            accelerator="H100",
            devices_by_node=tuple(sorted(self.holds.items())),
            seconds_since_checkpoint=self.since_checkpoint_s,
            borrowed=self.is_borrowed,
        )


def pending(devices: int, priority: int = 5, tenant: str = "team-a") -> Preemptor:
    return Preemptor(job_id=99, tenant=tenant, priority=priority, devices=devices)


@dataclass(frozen=True)
class Case:
    name: str
    pool: PoolView
    jobs: tuple[Job, ...]
    preemptor: Preemptor
    victims: tuple[int, ...] | None
    """Victim ids in preference order; None: preemption cannot make room."""
    reason: str
    reclaim: Reclaim | None = None


CASES = [
    Case(
        "no victims when the gang already fits",
        make_pool(8),
        (Job(1),),
        pending(8),
        (),
        "fits in pool gpu without preemption",
    ),
    Case(
        "one lower-priority job makes room",
        make_pool(0),
        (Job(1),),
        pending(8),
        (1,),
        "preempt #1 (team-b, priority 0, 8 devices, lower priority, 0 s since checkpoint) "
        "to free 8 devices in pool gpu for #99 (priority 5)",
    ),
    Case(
        "free devices count toward the gang",
        make_pool(4),
        (Job(1).on({1: 2}), Job(2).on({1: 2})),
        pending(6),
        (1,),
        "to free 2 devices",
    ),
    Case(
        "equal priority is never preempted",
        make_pool(0),
        (Job(1).priority(5),),
        pending(8),
        None,
        "jobs it may preempt (lower priority than 5) hold 0 there",
    ),
    Case(
        "higher priority is never preempted",
        make_pool(0),
        (Job(1).priority(9),),
        pending(8),
        None,
        "needs 8 more devices in pool gpu",
    ),
    Case(
        "fewest victims first, even of higher priority",
        make_pool(0, 0),
        (Job(1).on({1: 4}), Job(2).on({1: 4}), Job(3).on({2: 8}).priority(3)),
        pending(8),
        (3,),
        "preempt #3",
    ),
    Case(
        "lower priority first among equal counts",
        make_pool(0, 0),
        (Job(1).priority(2), Job(2).on({2: 8}).priority(1)),
        pending(8),
        (2,),
        "preempt #2",
    ),
    Case(
        "borrowed quota next",
        make_pool(0, 0),
        (Job(1), Job(2).on({2: 8}).borrowed()),
        pending(8),
        (2,),
        "on borrowed quota",
    ),
    Case(
        "then the least work lost since the last checkpoint",
        make_pool(0, 0),
        (Job(1).checkpointed(600), Job(2).on({2: 8}).checkpointed(60)),
        pending(8),
        (2,),
        "60 s since checkpoint",
    ),
    Case(
        "work lost weighs devices: 8 × 60 s > 2 × 200 s",
        make_pool(6),
        (Job(1).on({1: 2}).checkpointed(200), Job(2).on({2: 8}).checkpointed(60)),
        pending(8),
        (1,),
        "preempt #1",
    ),
    Case(
        "then fewer nodes touched",
        make_pool(0, 0, 0),
        (Job(1).on({1: 4, 2: 4}), Job(2).on({3: 8})),
        pending(8),
        (2,),
        "preempt #2",
    ),
    Case(
        "jobs of another pool free nothing here",
        make_pool(0),
        (Job(1).in_pool(2),),
        pending(8),
        None,
        "hold 0 there",
    ),
    Case(
        "a gang larger than the pool cannot be helped",
        make_pool(0),
        (Job(1),),
        pending(16),
        None,
        "not even pool gpu can hold 16 devices",
    ),
    Case(
        "a single-node backend frees room on one node",
        make_pool(4, 2, backend="local"),
        (Job(1).on({1: 4}), Job(2).on({2: 2}), Job(3).on({2: 4})),
        pending(8),
        (1,),
        "preempt #1",
    ),
    Case(
        "a single-node backend cannot add up two nodes",
        make_pool(0, 0, backend="local"),
        (Job(1).on({1: 4, 2: 4}),),
        pending(8),
        None,
        "on one node of pool gpu",
    ),
    Case(
        "reclaim: an equal-priority borrower is preempted",
        make_pool(0),
        (Job(1).priority(5),),
        pending(8),
        (1,),
        "priority 5, 8 devices, on borrowed quota",
        Reclaim(frozenset({1}), {"team-b": 8}, 0),
    ),
    Case(
        "reclaim: quota needs devices back even when devices are free",
        make_pool(8, 0),
        (Job(1).on({2: 8}).priority(5),),
        pending(8),
        (1,),
        "and give back 8 borrowed devices of quota",
        Reclaim(frozenset({1}), {"team-b": 8}, 8),
    ),
    Case(
        "reclaim: a borrower gives back at most what it borrows",
        make_pool(8, 0, 0),
        (Job(1).on({2: 8}).priority(5), Job(2).on({3: 2}).priority(5).of("team-c")),
        pending(8),
        (1, 2),
        "preempt #1",
        Reclaim(frozenset({1, 2}), {"team-b": 2, "team-c": 2}, 4),
    ),
    Case(
        "reclaim: borrowers elsewhere on the accelerator give quota back",
        make_pool(8),
        (Job(1).in_pool(2).priority(5),),
        pending(8),
        (1,),
        "preempt #1",
        Reclaim(frozenset({1}), {"team-b": 8}, 8),
    ),
    Case(
        "reclaim: not enough borrowed to give back",
        make_pool(8),
        (Job(1).priority(5),),
        pending(8),
        None,
        "quota needs 8 borrowed devices back",
        Reclaim(frozenset({1}), {"team-b": 4}, 8),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_select_victims(case: Case) -> None:
    result = select_victims(
        case.preemptor, case.pool, [job.build() for job in case.jobs], case.reclaim
    )
    if case.victims is None:
        assert not result.ok and result.victims == ()
    else:
        assert result.ok
        assert tuple(v.job_id for v in result.victims) == case.victims
    assert case.reason in result.reason


def test_a_single_node_gang_is_told_its_node() -> None:
    pool = make_pool(2, 6, backend="local")
    result = select_victims(pending(8), pool, [Job(1).on({2: 2}).build()])
    assert result.ok and result.node_id == 2


def test_unschedulable_nodes_free_nothing() -> None:
    pool = make_pool(8, 0)
    drained = PoolView(
        1,
        "gpu",
        "ray",
        "H100",
        8,
        nodes=(NodeView(1, "n1", 8, tuple(range(8)), schedulable=False), pool.nodes[1]),
    )
    result = select_victims(pending(8), drained, [Job(1).on({2: 8}).build()])
    assert result.ok and [v.job_id for v in result.victims] == [1]


def test_the_choice_does_not_depend_on_input_order() -> None:
    jobs = [Job(i).on({1 + i % 2: 2}).checkpointed(10 * (i % 3)).build() for i in range(1, 9)]
    pool = make_pool(0, 0)
    first = select_victims(pending(6), pool, jobs)
    again = select_victims(pending(6), pool, list(reversed(jobs)))
    assert first == again and len(first.victims) == 3


def test_a_capped_search_still_returns_a_valid_set() -> None:
    jobs = [Job(i).on({1: 1}).of(f"t{i}").priority(5).build() for i in range(1, 9)]
    reclaim = Reclaim(frozenset(range(1, 9)), {f"t{i}": 1 for i in range(1, 9)}, 3)
    result = select_victims(pending(1), make_pool(0, 8), jobs, reclaim, max_search_steps=1)
    assert result.ok and len(result.victims) == 3


# Brute force on small random clusters: the same spec, checked over every subset.


def _preference(job: RunningJobView, reclaim: Reclaim | None) -> tuple[object, ...]:
    borrowed = job.borrowed or (reclaim is not None and job.job_id in reclaim.job_ids)
    return (
        job.priority,
        not borrowed,
        job.devices * job.seconds_since_checkpoint,
        len(job.devices_by_node),
        job.job_id,
    )


def _frees_enough(
    victims: Sequence[RunningJobView], pool: PoolView, preemptor: Preemptor, reclaim: Reclaim | None
) -> bool:
    ready = [n for n in pool.nodes if n.schedulable]
    if pool.backend == "local":
        scopes = [[n] for n in ready if n.devices >= preemptor.devices]
    else:
        scopes = [ready] if sum(n.devices for n in ready) >= preemptor.devices else []
    back_by_tenant: dict[str, int] = {}
    for job in victims:
        if reclaim is not None and job.job_id in reclaim.job_ids:
            back_by_tenant[job.tenant] = back_by_tenant.get(job.tenant, 0) + job.devices
    caps = reclaim.borrowed_by_tenant if reclaim is not None else {}
    back = sum(min(d, caps.get(t, 0)) for t, d in back_by_tenant.items())
    if back < (reclaim.shortfall_devices if reclaim is not None else 0):
        return False
    for scope in scopes:
        ids = {n.node_id for n in scope}
        free = sum(len(n.free_devices) for n in scope)
        freed = sum(
            c
            for v in victims
            if v.pool_id == pool.pool_id
            for node_id, c in v.devices_by_node
            if node_id in ids
        )
        if free + freed >= preemptor.devices:
            return True
    return False


@st.composite
def clusters(draw: st.DrawFn) -> tuple[PoolView, list[RunningJobView], Preemptor, Reclaim | None]:
    node_count = draw(st.integers(1, 3))
    jobs = []
    used = dict.fromkeys(range(1, node_count + 1), 0)
    for job_id in range(1, draw(st.integers(0, 8)) + 1):
        on = draw(st.lists(st.integers(1, node_count), min_size=1, max_size=2, unique=True))
        holds = {node: draw(st.integers(1, 4)) for node in on}
        for node, count in holds.items():
            used[node] += count
        jobs.append(
            RunningJobView(
                job_id=job_id,
                tenant=draw(st.sampled_from(("b", "c"))),
                priority=draw(st.integers(0, 3)),
                pool_id=draw(st.sampled_from((1, 1, 1, 2))),
                accelerator="H100",
                devices_by_node=tuple(sorted(holds.items())),
                seconds_since_checkpoint=float(draw(st.integers(0, 3)) * 60),
                borrowed=draw(st.booleans()),
            )
        )
    per_node = max([8, *used.values()])
    backend = draw(st.sampled_from(("ray", "local")))
    nodes = tuple(
        NodeView(
            node,
            f"n{node}",
            per_node,
            tuple(range(min(per_node - used[node], draw(st.integers(0, 2))))),
        )
        for node in range(1, node_count + 1)
    )
    pool = PoolView(1, "gpu", backend, "H100", per_node, nodes=nodes)
    preemptor = Preemptor(99, "a", draw(st.integers(0, 3)), draw(st.integers(1, per_node)))
    reclaim = None
    if draw(st.booleans()):
        ids = frozenset(draw(st.sets(st.sampled_from([j.job_id for j in jobs] or [0]))))
        caps = {"b": draw(st.integers(0, 8)), "c": draw(st.integers(0, 8))}
        reclaim = Reclaim(ids, caps, draw(st.integers(0, 6)))
    return pool, jobs, preemptor, reclaim


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_victims_match_brute_force(
    cluster: tuple[PoolView, list[RunningJobView], Preemptor, Reclaim | None],
) -> None:
    """The victims free enough, are fewest in number, and are the first such set in
    preference order; when no set of preemptible jobs suffices, none is returned."""
    pool, jobs, preemptor, reclaim = cluster
    result = select_victims(preemptor, pool, jobs, reclaim)
    preemptible = sorted(
        (
            j
            for j in jobs
            if j.priority < preemptor.priority
            or (reclaim is not None and j.job_id in reclaim.job_ids)
        ),
        key=lambda j: _preference(j, reclaim),
    )
    best = None
    for size in range(len(preemptible) + 1):
        for subset in itertools.combinations(preemptible, size):
            if _frees_enough(subset, pool, preemptor, reclaim):
                best = subset
                break
        if best is not None:
            break
    if best is None:
        assert not result.ok and result.victims == ()
        return
    assert result.ok
    assert _frees_enough(result.victims, pool, preemptor, reclaim)
    assert len(result.victims) == len(best)
    assert [v.job_id for v in result.victims] == [v.job_id for v in best]
