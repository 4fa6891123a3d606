"""The simulator engine on hand-made traces whose every start and end is known in advance."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest

from scheduler.cycle import CycleResult, PreemptionOrder, run_cycle
from scheduler.domain.resources import PendingJobView, RunningJobView, Snapshot
from scheduler.policies.config import PolicyConfig
from scheduler.policies.las import LasConfig
from scheduler.policies.quota import Quotas, TenantQuota
from scheduler.sim.engine import InvariantError, SimConfig, Simulator, simulate, window
from scheduler.sim.generator import GeneratorConfig, generate, homogeneous_cluster
from scheduler.sim.groundtruth import GroundTruth
from scheduler.sim.policy import PolicyContext, equal_quotas, ordering, policy_named
from scheduler.sim.views import pending_view
from scheduler.sim.workload import ClusterSpec, PoolSpec, TraceJob


def job(
    job_id: int, arrival_s: float, devices: int | tuple[int, int], work_s: float, **fields: object
) -> TraceJob:
    """A trace job with tenant ``a`` unless told; ``work_s`` is device-seconds at speed 1."""
    fields.setdefault("tenant", "a")
    return TraceJob.build(job_id, arrival_s, devices=devices, work_s=work_s, **fields)  # type: ignore[arg-type]


def cluster(*pools: tuple[str, str, int, int]) -> ClusterSpec:
    """``cluster(("p", "A100-80G", nodes, devices_per_node), ...)``."""
    return ClusterSpec(tuple(PoolSpec(*pool) for pool in pools))


TWO_DEVICES = cluster(("p", "A100-80G", 1, 2))
THREE_JOBS = (
    job(0, 0.0, 2, 20.0),  # 10 s on both devices
    job(1, 1.0, 1, 5.0),  # 5 s on one device
    job(2, 2.0, 2, 4.0, priority=5, tenant="b"),  # 2 s on both devices, urgent
)
MOLDABLE_BESIDE_BUSY = (job(0, 0.0, 1, 10.0), job(1, 1.0, (1, 2), 8.0))
FRAGMENTED = cluster(("p", "A100-80G", 2, 3))
FRAGMENTING = (job(0, 0.0, 2, 8.0), job(1, 0.0, 2, 16.0), job(2, 0.0, 2, 4.0))


def spans(jobs: Sequence[TraceJob], spec: ClusterSpec, **config: object) -> dict[int, tuple]:
    result = simulate(jobs, spec, SimConfig(validate=True, **config))  # type: ignore[arg-type]
    return {r.job_id: (r.start_s, r.end_s) for r in result.records}


@dataclass(frozen=True)
class Case:
    name: str
    cluster: ClusterSpec
    jobs: tuple[TraceJob, ...]
    policy: str
    expected: dict[int, tuple[float, float]]
    """job id -> (first start, end)."""
    config: tuple[tuple[str, object], ...] = ()


CASES = [
    # At t=10 FIFO takes job 1 (older) and job 2 waits for both devices, reserving the pool.
    Case("fifo follows arrival", TWO_DEVICES, THREE_JOBS, "fifo",
         {0: (0, 10), 1: (10, 15), 2: (15, 17)}),
    Case("priority lets the urgent job pass", TWO_DEVICES, THREE_JOBS, "priority",
         {0: (0, 10), 2: (10, 12), 1: (12, 17)}),
    Case("small job starts beside a running one", TWO_DEVICES,
         (job(0, 0.0, 1, 10.0), job(1, 3.0, 1, 4.0)), "fifo", {0: (0, 10), 1: (3, 7)}),
    Case("a gang may span nodes", cluster(("p", "A100-80G", 2, 2)),
         (job(0, 0.0, 3, 30.0),), "fifo", {0: (0, 10)}),
    Case("sub-linear scaling", TWO_DEVICES, (job(0, 0.0, 2, 8.0, scaling_exponent=0.5),),
         "fifo", {0: (0, 8 / 2**0.5)}),
    Case("moldable job runs at its largest gang", TWO_DEVICES, (job(0, 0.0, (1, 2), 8.0),),
         "fifo", {0: (0, 4)}),
    # One device is busy until t=10: rigid at its largest, job 1 waits for both; weighed by
    # the cycle, it starts now on one device (8 s instead of 4).
    Case("moldable job waits for its largest gang", TWO_DEVICES, MOLDABLE_BESIDE_BUSY, "fifo",
         {0: (0, 10), 1: (10, 14)}),
    Case("moldable job weighed: starts now, smaller", TWO_DEVICES, MOLDABLE_BESIDE_BUSY, "fifo",
         {0: (0, 10), 1: (1, 9)}, (("moldable", True),)),
    Case("accelerator constraint and speed",
         cluster(("a", "A100-80G", 1, 2), ("h", "H100-SXM", 1, 2)),
         (job(0, 0.0, 2, 8.0, accelerators=["H100-SXM"], speeds={"H100-SXM": 2.0}),),
         "fifo", {0: (0, 2)}),
    # Job 0 holds 3 of 4 H100s, so at t=1 the A100 pool has more free devices: job 1 runs
    # there at speed 1; job 2 then finds A100 full and takes the last H100 at speed 2.
    Case("several allowed types: the one with most free devices",
         cluster(("a", "A100-80G", 1, 2), ("h", "H100-SXM", 1, 4)),
         (job(0, 0.0, 3, 30.0, accelerators=["H100-SXM"]),
          job(1, 1.0, 2, 8.0, accelerators=["A100-80G", "H100-SXM"], speeds={"H100-SXM": 2.0}),
          job(2, 2.0, 1, 8.0, accelerators=["A100-80G", "H100-SXM"], speeds={"H100-SXM": 2.0})),
         "fifo", {0: (0, 10), 1: (1, 5), 2: (2, 6)}),
    Case("an impossible job is rejected, not left blocking", TWO_DEVICES,
         (job(0, 0.0, 4, 8.0), job(1, 1.0, 2, 8.0)), "fifo", {1: (1, 5)}),
    # Jobs 0 and 1 leave one device free on each node: job 2 spans them, unless gangs must
    # stay on one node; then it waits for job 0's node.
    Case("fragmented: the gang spans nodes", FRAGMENTED, FRAGMENTING, "fifo",
         {0: (0, 4), 1: (0, 8), 2: (0, 2)}),
    Case("fragmented: a single-node gang waits", FRAGMENTED, FRAGMENTING, "fifo",
         {0: (0, 4), 1: (0, 8), 2: (4, 6)}, (("single_node_gangs", True),)),
    Case("simultaneous arrivals share one cycle", TWO_DEVICES,
         (job(1, 0.0, 1, 4.0), job(0, 0.0, 1, 2.0)), "fifo", {0: (0, 2), 1: (0, 4)}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_exact_schedule(case: Case) -> None:
    got = spans(case.jobs, case.cluster, policy=case.policy, **dict(case.config))
    assert got == {job_id: pytest.approx(span) for job_id, span in case.expected.items()}


def test_records_metrics_and_timeline() -> None:
    result = simulate(THREE_JOBS, TWO_DEVICES, SimConfig(policy="fifo"))
    assert [r.job_id for r in result.records] == [0, 1, 2]  # completion order
    assert result.records[2].queueing_s == 13 and result.records[2].completion_s == 15
    samples = [(s.time_s, s.busy_devices, s.pending_jobs, s.running_jobs) for s in result.timeline]
    assert samples == [
        (0, 2, 0, 1), (1, 2, 1, 1), (2, 2, 2, 1), (10, 1, 1, 1), (15, 2, 0, 1), (17, 0, 0, 0)
    ]  # fmt: skip
    assert result.metrics is not None
    # Busy device-seconds 2·10 + 1·5 + 2·2 = 29 over 2 devices × 17 s.
    assert result.metrics.device_utilization == pytest.approx(29 / 34)
    assert result.metrics.makespan_s == 17
    assert result.unfinished == () and result.gave_up == () and not result.rejected


def test_rejected_job_says_why() -> None:
    result = simulate((job(0, 0.0, 4, 8.0),), TWO_DEVICES)
    assert "at most 2" in result.rejected[0]
    assert result.records == () and result.metrics is None


# --- failures and retries ---------------------------------------------------------------------


def test_failed_attempt_is_retried_from_the_start() -> None:
    failing = job(0, 0.0, 1, 10.0, fails_after_s=3.0)
    result = simulate((failing,), TWO_DEVICES, SimConfig(validate=True))
    (record,) = result.records
    assert (record.start_s, record.end_s, record.run_s) == (0, 13, 13)
    assert result.failed_attempts == 1 and result.gave_up == ()


def test_retry_keeps_its_place_by_age() -> None:
    # Job 0 fails at t=3 and is pending again with job 1 (arrived at 1, also needing both
    # devices); being older it goes first although job 1 waited in the queue longer.
    jobs = (job(0, 0.0, 2, 20.0, fails_after_s=3.0), job(1, 1.0, 2, 4.0))
    assert spans(jobs, TWO_DEVICES, policy="fifo") == {0: (0, 13), 1: (13, 15)}


def test_gives_up_after_max_attempts() -> None:
    failing = job(0, 0.0, 1, 10.0, fails_after_s=3.0)
    result = simulate((failing,), TWO_DEVICES, SimConfig(max_attempts=1))
    assert result.gave_up == (0,) and result.records == () and result.failed_attempts == 1


# --- validate ---------------------------------------------------------------------------------


def test_validate_catches_a_device_marked_free_while_held() -> None:
    sim = Simulator(THREE_JOBS, TWO_DEVICES, SimConfig(validate=True))
    assert sim.step()  # t=0: job 0 holds both devices
    sim.check_invariants()
    node = next(iter(sim.state.nodes.values()))
    node.free.add(0)  # corrupt: device 0 looks free while job 0 holds it
    with pytest.raises(InvariantError, match="both free and allocated"):
        sim.check_invariants()
    with pytest.raises(InvariantError):
        sim.step()  # the next cycle sees it too


def test_validate_catches_a_job_both_pending_and_running() -> None:
    sim = Simulator(THREE_JOBS, TWO_DEVICES, SimConfig(validate=True))
    sim.step()
    sim._pending[0] = pending_view(THREE_JOBS[0], None, 0)  # corrupt: runs and pends
    with pytest.raises(InvariantError, match=r"both pending and running"):
        sim.check_invariants()


def test_validate_catches_a_lost_allocation() -> None:
    sim = Simulator(THREE_JOBS, TWO_DEVICES, SimConfig(validate=True))
    sim.step()
    node = next(iter(sim.state.nodes.values()))
    del node.held[1]
    with pytest.raises(InvariantError, match=r"does not record as held|free 0 \+ allocated 1"):
        sim.check_invariants()


def _faulty(change: str):  # type: ignore[no-untyped-def]
    """A cycle that runs the real one, then corrupts its first admission."""

    def cycle(snapshot: Snapshot, timer=None, config=None) -> CycleResult:  # type: ignore[no-untyped-def]
        result = run_cycle(snapshot, config=config)
        if not result.admissions:
            return result
        first = result.admissions[0]
        if change == "steal":  # give it a device some running job holds
            first = replace(first, devices=((1, 0),) * len(first.devices))
        elif change == "short":  # one device fewer than its gang
            first = replace(first, devices=first.devices[:-1])
        elif change == "elsewhere":  # a node of another pool
            first = replace(first, devices=((99, 0),) + first.devices[1:])
        elif change == "preempt":  # a preemption of a job that is not running
            order = PreemptionOrder(first.job_id, first.job_id, "for a test")
            return replace(result, preemptions=(order,))
        return replace(result, admissions=(first, *result.admissions[1:]))

    return cycle


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("steal", "allocated twice|listed twice"),
        ("short", "asks for a gang of 2"),
        ("elsewhere", "not in pool"),
        ("preempt", "which is not running"),
    ],
)
def test_a_faulty_cycle_is_caught(change: str, message: str) -> None:
    sim = Simulator(THREE_JOBS, TWO_DEVICES, SimConfig(validate=True), cycle=_faulty(change))
    with pytest.raises(InvariantError, match=message):
        while sim.step():
            pass


def test_extra_checks_run_after_every_step() -> None:
    """The hook for policy invariants; here: FIFO with head-of-line reservation never leaves
    devices idle that the oldest pending job could use."""
    spec = homogeneous_cluster(16)
    jobs = generate(GeneratorConfig(80, 3, 1 / 30, spec, seed=3))
    steps = []

    def head_does_not_fit(sim: Simulator) -> None:
        steps.append(sim.now_s)
        if sim.pending:
            head = min(sim.pending.values(), key=lambda view: view.submitted_seq)
            # Rigid, or moldable run at the top of its range (SimConfig.moldable is off).
            needed = head.devices or (head.device_range or (0, 0))[1]
            assert needed > spec.total_devices - sim.busy_devices

    config = SimConfig(policy="fifo", validate=True, checks=(head_does_not_fit,))
    result = simulate(jobs, spec, config)
    assert len(result.records) == 80 and len(steps) == len(result.timeline)


# --- policies and determinism -----------------------------------------------------------------


def test_an_ordering_function_plugs_in_exactly() -> None:
    # Newest first: at t=10 job 2 runs before job 1 although both have priority 0 here.
    jobs = tuple(replace(j, priority=0) for j in THREE_JOBS)

    def newest_first(pending: Sequence[PendingJobView], ctx: PolicyContext) -> list:
        assert ctx.total_devices == 2
        return sorted(pending, key=lambda view: -view.submitted_seq)

    policy = ordering("lifo", newest_first)
    assert spans(jobs, TWO_DEVICES, policy=policy) == {0: (0, 10), 2: (10, 12), 1: (12, 17)}


def test_policy_context_reports_attained_service() -> None:
    seen: dict[float, tuple[float, dict[str, int]]] = {}

    def record(pending: Sequence[PendingJobView], ctx: PolicyContext) -> Sequence:
        seen[ctx.now_s] = (ctx.attained_device_s(0), dict(ctx.tenant_devices_in_use()))
        return pending

    simulate(THREE_JOBS, TWO_DEVICES, SimConfig(policy=ordering("probe", record)))
    # Cycles run while a job is pending and a device is free: none at t=1 or 2 (job 0 holds
    # both devices), one at t=10 after job 0 ended, one at t=15.
    assert seen[10.0] == (20.0, {})
    assert seen[15.0][0] == 20.0 and seen[15.0][1] == {}


POLICY_SWITCHES = {
    # name: (ordering, preemption, backfill, moldable)
    "fifo": ("fifo", False, False, False),
    "priority": ("priority", False, False, False),
    "las": ("las", False, False, False),
    "drf": ("fair_share", False, True, True),
    "gavel": ("priority", False, False, False),  # its order is encoded as priorities
    "corral": ("fair_share", True, True, True),
}


@pytest.mark.parametrize(("name", "switches"), POLICY_SWITCHES.items())
def test_each_policy_runs_the_cycle_with_its_own_config(name: str, switches: tuple) -> None:
    seen: list[PolicyConfig] = []

    def spy(snapshot: Snapshot, timer=None, config=None) -> CycleResult:  # type: ignore[no-untyped-def]
        seen.append(config)
        return run_cycle(snapshot, config=config)

    Simulator(THREE_JOBS, TWO_DEVICES, SimConfig(policy=name), cycle=spy).run()
    assert seen and all(
        (c.ordering, c.preemption, c.backfill, c.moldable) == switches for c in seen
    )


def test_quotas_reach_only_the_policies_that_use_them() -> None:
    quotas = Quotas((TenantQuota("a", "A100-80G", 1),))
    config = SimConfig(quotas=quotas, moldable=False)
    assert Simulator((), TWO_DEVICES, replace(config, policy="corral")).cycle_config == replace(
        PolicyConfig(), quotas=quotas, moldable=False
    )
    assert Simulator((), TWO_DEVICES, replace(config, policy="drf")).cycle_config.quotas == Quotas()


def test_unknown_policy_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: corral, drf, fifo, gavel, las, priority"):
        policy_named("sjf")


def test_deadlines_are_scored_from_the_trace() -> None:
    asked: list[tuple[float, int, float | None]] = []

    def spy(snapshot: Snapshot, timer=None, config=None) -> CycleResult:  # type: ignore[no-untyped-def]
        asked.extend((sim.now_s, view.job_id, view.deadline_s) for view in snapshot.pending)
        return run_cycle(snapshot, config=config)

    jobs = (job(0, 0.0, 2, 20.0), job(1, 4.0, 1, 2.0, deadline_s=30.0), job(2, 5.0, 1, 9.0,
            deadline_s=15.0))  # fmt: skip
    sim = Simulator(jobs, TWO_DEVICES, cycle=spy)
    result = sim.run()
    # No cycle at t=4 or 5 (no free device); the views carry no deadline (module docstring).
    assert asked == [(0.0, 0, None), (10.0, 1, None), (10.0, 2, None)]
    assert result.metrics is not None and result.metrics.deadline_hit_rate == 0.5


def test_same_seed_same_replay_and_the_seed_matters() -> None:
    spec = homogeneous_cluster(32)
    jobs = generate(GeneratorConfig(150, 4, 1 / 60, spec, seed=1))

    def replay(seed: int) -> tuple:
        truth = GroundTruth(job_sigma=0.3, shape_sigma=0.1, seed=seed)
        result = simulate(jobs, spec, SimConfig(truth=truth))
        return tuple((r.job_id, r.start_s, r.end_s) for r in result.records)

    assert replay(0) == replay(0)
    assert replay(0) != replay(1)


def test_cycle_time_is_measured_only_with_a_timer() -> None:
    ticks = itertools.count()
    timed = simulate(THREE_JOBS, TWO_DEVICES, timer=lambda: float(next(ticks)))
    assert timed.cycle_seconds and all(s > 0 for s in timed.cycle_seconds)
    assert timed.wall_s > 0 and timed.jobs_per_wall_s is not None
    untimed = simulate(THREE_JOBS, TWO_DEVICES)
    assert untimed.cycle_seconds == () and untimed.wall_s == 0 and untimed.cycle_ms(50) is None


def test_window_picks_arrivals_in_order() -> None:
    jobs = (job(2, 5.0, 1, 1.0), job(0, 1.0, 1, 1.0), job(1, 5.0, 1, 1.0), job(3, 9.0, 1, 1.0))
    assert [j.job_id for j in window(jobs, start_s=2.0, limit=2)] == [1, 2]
    assert [j.job_id for j in window(jobs)] == [0, 1, 2, 3]


def test_distinct_job_ids_required() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Simulator((job(0, 0.0, 1, 1.0), job(0, 1.0, 1, 1.0)), TWO_DEVICES)


# --- the cycle's policies in the simulator ------------------------------------------------------

ONE_DEVICE = cluster(("p", "A100-80G", 1, 1))
FOUR_DEVICES = cluster(("p", "A100-80G", 1, 4))
# Job 0 (priority 0) holds both devices for 1,000 s; job 1 (priority 5) arrives at t=100.
PREEMPTED = (job(0, 0.0, 2, 2000.0), job(1, 100.0, 2, 20.0, priority=5, tenant="b"))
CORRAL = SimConfig(policy="corral", validate=True, checkpoint_interval_s=40.0, stop_delay_s=5.0)
"""Checkpoints every 40 s; a preempted job stops 5 s after it is told to."""


def spy_on(collected: list[tuple[float, Snapshot, CycleResult]], sim_box: list[Simulator]):  # type: ignore[no-untyped-def]
    """A real cycle that records (time, snapshot, result) of every call."""

    def cycle(snapshot: Snapshot, timer=None, config=None) -> CycleResult:  # type: ignore[no-untyped-def]
        result = run_cycle(snapshot, config=config)
        collected.append((sim_box[0].now_s, snapshot, result))
        return result

    return cycle


def test_preemption_stops_the_victim_after_the_delay_and_requeues_its_remaining_work() -> None:
    # t=100: job 1 cannot fit and outranks job 0, which is told to stop; it stops at 105 with
    # 105 s run, its last checkpoint at 80 s (every 40 s): 80 of its 1,000 s are kept and
    # 25 s × 2 devices lost. Job 1 runs 105-115; job 0 resumes at 115 with 920 s to go.
    result = simulate(PREEMPTED, TWO_DEVICES, CORRAL)
    records = {r.job_id: r for r in result.records}
    assert (records[1].start_s, records[1].end_s) == (105, 115)
    assert (records[0].start_s, records[0].end_s) == (0, pytest.approx(1035))
    assert records[0].preemptions == 1 and records[0].run_s == pytest.approx(105 + 920)
    assert result.preemptions == 1 and result.lost_device_s == pytest.approx(50)
    assert result.unfinished == ()


def test_without_preemption_the_urgent_job_waits() -> None:
    result = simulate(PREEMPTED, TWO_DEVICES, replace(CORRAL, policy="drf"))
    assert {r.job_id: (r.start_s, r.end_s) for r in result.records} == {
        0: (0, 1000), 1: (1000, 1010)
    }  # fmt: skip


def test_a_stopping_job_is_shown_as_preempting_and_told_only_once() -> None:
    # Three devices: job 3 (priority 0) holds the third one all along. At t=102, while job 0
    # is stopping, job 2 arrives: the cycle sees job 0 preempting and waits for it rather
    # than choosing it again. (At 105 job 2 preempts job 3: another victim, told once too.)
    jobs = (*PREEMPTED, job(2, 102.0, 1, 1.0, priority=5, tenant="c"), job(3, 0.0, 1, 5000.0))
    seen: list[tuple[float, Snapshot, CycleResult]] = []
    box: list[Simulator] = []
    sim = Simulator(jobs, cluster(("p", "A100-80G", 1, 3)), CORRAL, cycle=spy_on(seen, box))
    box.append(sim)
    result = sim.run()
    (at_102,) = [(snapshot, cycle) for now, snapshot, cycle in seen if now == 102]
    assert {(v.job_id, v.preempting) for v in at_102[0].running} == {(0, True), (3, False)}
    assert at_102[1].preemptions == ()
    assert "waiting for preempted #0" in at_102[1].pending_reasons[1]
    victims = [order.job_id for _, _, cycle in seen for order in cycle.preemptions]
    assert victims == [0, 3] and result.preemptions == 2


def test_running_jobs_carry_predicted_not_true_ends_and_checkpoint_age() -> None:
    # The truth runs job 0 longer or shorter than 100 s (σ = 0.5); the cycle is told the
    # noiseless prediction, so backfill and moldable shapes decide under misprediction.
    jobs = (job(0, 0.0, 1, 100.0), job(1, 30.0, 1, 1.0))
    seen: list[tuple[float, Snapshot, CycleResult]] = []
    box: list[Simulator] = []
    truth = GroundTruth(job_sigma=0.5, seed=1)
    sim = Simulator(jobs, TWO_DEVICES, SimConfig(truth=truth, checkpoint_interval_s=20.0),
                    cycle=spy_on(seen, box))  # fmt: skip
    box.append(sim)
    result = sim.run()
    (view,) = next(snapshot for now, snapshot, _ in seen if now == 30).running
    assert view == RunningJobView(
        job_id=0, tenant="a", priority=0, pool_id=1, accelerator="A100-80G",
        devices_by_node=((1, 1),), seconds_since_checkpoint=10.0, name="job-0",
        predicted_end_s=70.0, device_ids=((1, 0),),
    )  # fmt: skip
    true_end = next(r.end_s for r in result.records if r.job_id == 0)
    assert true_end != pytest.approx(100.0)


def test_backfill_rule_2_in_the_simulator() -> None:
    # Job 0 holds 3 of 4 devices until t=100. Job 1 (2 devices) is blocked and reserves the
    # pool; at t=100 four devices will be free, two more than it needs. Job 2 (1 device, no
    # prediction: trace jobs have no model profile) may use one of those two now (rule 2);
    # with backfill off it waits behind job 1.
    jobs = (job(0, 0.0, 3, 300.0), job(1, 1.0, 2, 20.0), job(2, 2.0, 1, 50.0))
    notes: list[str] = []

    def cycle(snapshot: Snapshot, timer=None, config=None) -> CycleResult:  # type: ignore[no-untyped-def]
        result = run_cycle(snapshot, config=config)
        notes.extend(admission.note for admission in result.admissions)
        return result

    backfilled = Simulator(jobs, FOUR_DEVICES, SimConfig(policy="drf", validate=True),
                           cycle=cycle).run()  # fmt: skip
    got = {r.job_id: (r.start_s, r.end_s) for r in backfilled.records}
    assert got == {0: (0, 100), 1: (100, 110), 2: (2, 52)}
    assert any("backfilled: uses devices the reserved job will not need" in n for n in notes)
    assert spans(jobs, FOUR_DEVICES, policy="fifo") == {0: (0, 100), 1: (100, 110), 2: (100, 150)}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # Tenant a used the device 0-100: its share is above b's, so b's job 2 goes first.
        ("drf", {0: (0, 100), 2: (100, 110), 1: (110, 120)}),
        ("corral", {0: (0, 100), 2: (100, 110), 1: (110, 120)}),
        ("fifo", {0: (0, 100), 1: (100, 110), 2: (110, 120)}),
    ],
)
def test_fair_share_lets_the_tenant_that_used_less_go_first(policy: str, expected: dict) -> None:
    jobs = (job(0, 0.0, 1, 100.0), job(1, 10.0, 1, 10.0), job(2, 20.0, 1, 10.0, tenant="b"))
    assert spans(jobs, ONE_DEVICE, policy=policy) == expected


def test_tenant_shares_are_the_services_decayed_dominant_shares() -> None:
    seen: list[tuple[float, Snapshot, CycleResult]] = []
    box: list[Simulator] = []
    jobs = (job(0, 0.0, 1, 100.0), job(1, 10.0, 1, 10.0), job(2, 20.0, 1, 10.0, tenant="b"))
    sim = Simulator(jobs, ONE_DEVICE, SimConfig(policy="drf"), cycle=spy_on(seen, box))
    box.append(sim)
    sim.run()
    shares = next(snapshot for now, snapshot, _ in seen if now == 100).tenant_shares
    half_life = SimConfig().fair_share.half_life_s
    # 100 device-seconds ending now, decayed, over 1 device × h / ln 2.
    expected = (1 - 2 ** (-100 / half_life)) * 1.0
    assert shares == {"a": pytest.approx(expected)}


def test_quota_reclaim_preempts_the_borrower() -> None:
    # a and b own one device each in cohort c. Job 0 (a) borrows b's device; b's job 1 at t=10
    # reclaims it: job 0 stops at 15 (nothing checkpointed yet), job 1 runs 15-25, and job 0
    # may borrow again only once b's device is idle.
    quotas = Quotas((TenantQuota("a", "A100-80G", 1, cohort="c"),
                     TenantQuota("b", "A100-80G", 1, cohort="c")))  # fmt: skip
    jobs = (job(0, 0.0, 2, 200.0), job(1, 10.0, 1, 10.0, tenant="b"))
    result = simulate(jobs, TWO_DEVICES, replace(CORRAL, quotas=quotas))
    assert {r.job_id: (r.start_s, r.end_s) for r in result.records} == {
        0: (0, 125), 1: (15, 25)
    }  # fmt: skip
    assert result.preemptions == 1 and result.lost_device_s == 30


def test_gavel_prefers_the_pool_where_the_job_is_fastest() -> None:
    spec = cluster(("a", "A100-80G", 1, 2), ("h", "H100-SXM", 1, 2))
    fast_on_h100 = (job(0, 0.0, 2, 8.0, speeds={"H100-SXM": 2.0}),)
    assert spans(fast_on_h100, spec, policy="gavel") == {0: (0, 2)}
    assert spans(fast_on_h100, spec, policy="fifo") == {0: (0, 4)}  # first pool in order


def test_gavel_serves_the_tenant_with_the_least_throughput_first() -> None:
    # At t=50 tenant a runs job 0 and b runs nothing: b's job 3 goes before a's older job 2.
    jobs = (job(0, 0.0, 1, 100.0), job(1, 0.0, 1, 50.0, tenant="c"), job(2, 1.0, 1, 10.0),
            job(3, 2.0, 1, 10.0, tenant="b"))  # fmt: skip
    assert spans(jobs, TWO_DEVICES, policy="gavel") == {
        0: (0, 100), 1: (0, 50), 3: (50, 60), 2: (60, 70)
    }  # fmt: skip
    assert spans(jobs, TWO_DEVICES, policy="fifo")[2] == (50, 60)


def test_las_puts_a_job_with_attained_service_behind_fresh_ones() -> None:
    # Job 0 runs 10 s and fails: 10 device-seconds attained, past the 5 s threshold, so the
    # fresh job 1 goes first; priority order keeps job 0 first (older). Spans are (first
    # start, end).
    jobs = (job(0, 0.0, 1, 20.0, fails_after_s=10.0), job(1, 1.0, 1, 5.0))
    las = LasConfig(thresholds_device_s=(5.0,))
    assert spans(jobs, ONE_DEVICE, policy="las", las=las) == {1: (10, 15), 0: (0, 35)}
    assert spans(jobs, ONE_DEVICE, policy="priority") == {0: (0, 30), 1: (30, 35)}


# --- validate catches a faulty cycle's policy decisions ----------------------------------------


def test_validate_catches_a_victim_told_twice() -> None:
    def again(snapshot: Snapshot, timer=None, config=None) -> CycleResult:  # type: ignore[no-untyped-def]
        result = run_cycle(snapshot, config=config)
        repeat = tuple(PreemptionOrder(v.job_id, 0, "again") for v in snapshot.running
                       if v.preempting)  # fmt: skip
        return replace(result, preemptions=result.preemptions + repeat)

    jobs = (*PREEMPTED, job(2, 102.0, 1, 1.0, priority=5, tenant="c"), job(3, 0.0, 1, 5000.0))
    sim = Simulator(jobs, cluster(("p", "A100-80G", 1, 3)), CORRAL, cycle=again)
    with pytest.raises(InvariantError, match=r"job #0 was told to stop 2 times"):
        sim.run()


def test_validate_catches_a_quota_overrun() -> None:
    quotas = Quotas((TenantQuota("a", "A100-80G", 1),))
    jobs = (job(0, 0.0, 1, 10.0), job(1, 0.0, 1, 10.0))
    config = SimConfig(policy="corral", quotas=quotas, validate=True)
    assert {r.job_id: (r.start_s, r.end_s) for r in simulate(jobs, TWO_DEVICES, config).records} \
        == {0: (0, 10), 1: (10, 20)}  # fmt: skip

    def ignores_quota(snapshot: Snapshot, timer=None, config=None) -> CycleResult:  # type: ignore[no-untyped-def]
        return run_cycle(snapshot, config=replace(config, quotas=Quotas()))

    with pytest.raises(InvariantError, match=r"quota: a holds 2 A100-80G, over its nominal 1"):
        Simulator(jobs, TWO_DEVICES, config, cycle=ignores_quota).run()


@pytest.mark.parametrize("policy", sorted(POLICY_SWITCHES))
def test_every_policy_keeps_the_invariants_on_a_loaded_workload(policy: str) -> None:
    spec = cluster(("a", "A100-80G", 2, 8), ("h", "H100-SXM", 1, 8))
    jobs = generate(GeneratorConfig(120, 3, 1 / 20, spec, seed=5, deadline_fraction=0.2))
    quotas = equal_quotas(spec.devices_by_accelerator(), ["tenant-0", "tenant-1", "tenant-2"])
    config = SimConfig(policy=policy, truth=GroundTruth(job_sigma=0.3), validate=True,
                       quotas=quotas, checkpoint_interval_s=600.0)  # fmt: skip
    result = simulate(jobs, spec, config)
    finished = len(result.records) + len(result.gave_up) + len(result.rejected)
    assert finished == 120 and result.unfinished == ()


def test_a_job_blocked_on_two_pools_preempts_in_one() -> None:
    # Job 2 may run on either type; both pools are full of lower-priority jobs. Stopping one
    # of them is enough; today the cycle stops both and one stop is wasted.
    spec = cluster(("a", "A100-80G", 1, 2), ("h", "H100-SXM", 1, 2))
    jobs = (job(0, 0.0, 2, 2000.0, accelerators=["A100-80G"]),
            job(1, 0.0, 2, 2000.0, accelerators=["H100-SXM"]),
            job(2, 10.0, 2, 20.0, priority=5, tenant="b"))  # fmt: skip
    assert simulate(jobs, spec, CORRAL).preemptions == 1
