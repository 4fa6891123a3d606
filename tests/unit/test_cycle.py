"""The scheduling cycle, table-driven over snapshots built with builders."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from scheduler.cycle import run_cycle
from scheduler.domain.errors import UnschedulableError
from scheduler.domain.plan import Strategy
from scheduler.policies.placement import check_schedulable
from tests.builders import JobBuilder, make_cluster, make_job


@dataclass(frozen=True)
class Case:
    name: str
    cluster: object
    jobs: tuple[JobBuilder, ...]
    admitted: tuple[int, ...]
    pending_fragment: dict[int, str]


CASES = [
    Case("one job fits", make_cluster().pool("cpu", per_node=2),
         (make_job(1).devices(2),), (1,), {}),
    Case("priority beats age", make_cluster().pool("cpu", per_node=2),
         (make_job(1).devices(2), make_job(2).devices(2).priority(5)), (2,),
         {1: "waiting for 2 devices"}),
    Case("older job first among equals", make_cluster().pool("cpu", per_node=2),
         (make_job(2).devices(2), make_job(1).devices(2)), (1,), {2: "waiting"}),
    Case("gang is all or nothing", make_cluster().pool("cpu", per_node=4, busy={0: 2}),
         (make_job(1).devices(3),), (), {1: "waiting for 3 devices in pool cpu (cpu-0: 2/4"}),
    Case("blocked head reserves its pool", make_cluster().pool("cpu", per_node=4, busy={0: 2}),
         (make_job(1).devices(4).priority(1), make_job(2).devices(1)), (),
         {2: "reserved for #1 (job1)"}),
    Case("other pools stay usable while one is reserved",
         make_cluster().pool("a", per_node=2, busy={0: 2}).pool("b", accelerator="gpu",
                                                                per_node=2),
         (make_job(1).devices(2).pool("a"), make_job(2).devices(2).pool("b")), (2,),
         {1: "waiting for 2 devices in pool a"}),
    Case("accelerator filter", make_cluster().pool("a", per_node=8).pool("h", "H100", per_node=8),
         (make_job(1).devices(8).accelerator("h100"),), (1,), {}),
    Case("local gangs never span nodes",
         make_cluster().pool("l", nodes=2, per_node=2, backend="local"),
         (make_job(1).devices(3),), (), {1: "waiting for 3"}),
    Case("multi-node gang on a multi-node backend",
         make_cluster().pool("g", nodes=2, per_node=2, backend="ray"),
         (make_job(1).devices(4),), (1,), {}),
    Case("two jobs share a node", make_cluster().pool("cpu", per_node=4),
         (make_job(1).devices(2), make_job(2).devices(2)), (1, 2), {}),
    Case("third job waits", make_cluster().pool("cpu", per_node=4),
         (make_job(1).devices(2), make_job(2).devices(2), make_job(3).devices(1)), (1, 2),
         {3: "waiting for 1 devices"}),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_cycle(case: Case) -> None:
    result = run_cycle(case.cluster.snapshot(*case.jobs))  # type: ignore[attr-defined]
    assert tuple(a.job_id for a in result.admissions) == case.admitted
    for job_id, fragment in case.pending_fragment.items():
        assert fragment in result.pending_reasons[job_id]
    assert set(result.pending_reasons) | {a.job_id for a in result.admissions} == {
        j.build().job_id for j in case.jobs}


def test_no_device_is_given_twice_in_one_cycle() -> None:
    cluster = make_cluster().pool("cpu", nodes=3, per_node=4, backend="ray")
    jobs = [make_job(i).devices(size) for i, size in enumerate([3, 5, 2, 2, 1, 4], start=1)]
    result = run_cycle(cluster.snapshot(*jobs))
    devices = [d for admission in result.admissions for d in admission.devices]
    assert len(devices) == len(set(devices)) <= 12
    for admission in result.admissions:
        assert len(admission.devices) == admission.plan.world_size


def test_best_fit_picks_the_tightest_node() -> None:
    cluster = make_cluster().pool("cpu", nodes=2, per_node=4, busy={1: 2})
    (admission,) = run_cycle(cluster.snapshot(make_job(1).devices(2))).admissions
    assert {node for node, _ in admission.devices} == {2}


def test_auto_devices_fill_a_node_and_split_the_batch_evenly() -> None:
    cluster = make_cluster().pool("cpu", per_node=8)
    (admission,) = run_cycle(cluster.snapshot(make_job(1).devices(None).batch(12))).admissions
    assert admission.plan.world_size == 6  # 8 does not divide 12; 6 is the largest that does
    assert admission.plan.strategy is Strategy.DDP


def test_plan_obeys_micro_batch() -> None:
    cluster = make_cluster().pool("cpu", per_node=2)
    (admission,) = run_cycle(cluster.snapshot(make_job(1).devices(2).batch(16, 2))).admissions
    assert (admission.plan.micro_batch, admission.plan.grad_accum) == (2, 4)


SUBMIT_ERRORS = [
    ("unknown pool", make_job(1).pool("nope"), "unknown pool 'nope'; known pools: cpu, h100"),
    ("unknown accelerator", make_job(1).accelerator("TPU-v5p"), "no pool has accelerator"),
    ("more devices than any pool", make_job(1).devices(64),
     "asks for 64 devices, but the largest matching pool 'h100' can run a gang of at most 16"),
    ("uneven batch", make_job(1).devices(3).batch(8), "does not split evenly over 3"),
    ("micro batch not dividing", make_job(1).devices(2).batch(8, 3), "pick a divisor of 4"),
]


@pytest.mark.parametrize(("case", "job", "message"), SUBMIT_ERRORS,
                         ids=[c for c, _, _ in SUBMIT_ERRORS])
def test_unschedulable_jobs_are_rejected_at_submit(case: str, job: JobBuilder,
                                                   message: str) -> None:
    cluster = make_cluster().pool("cpu", per_node=2, backend="local").pool(
        "h100", "H100", nodes=2, per_node=8, backend="ray")
    with pytest.raises(UnschedulableError) as raised:
        check_schedulable(job.build(), cluster.pools)
    assert message in str(raised.value)


def test_step_times_are_reported() -> None:
    result = run_cycle(make_cluster().pool("cpu").snapshot(make_job(1)))
    assert {"1_order", "total"} <= set(result.step_seconds)


LLAMA_1B = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
            "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 8,
            "intermediate_size": 5632, "tie_word_embeddings": False}


def _h100_job() -> JobBuilder:
    return make_job(1).devices(8).batch(32).model(LLAMA_1B)


def test_the_cycle_plans_with_the_calibrated_efficiency() -> None:
    cluster = make_cluster().pool("h100", "H100-SXM", nodes=1, per_node=8)
    prior = run_cycle(cluster.snapshot(_h100_job())).admissions[0].prediction
    assert prior is not None
    measured = {("H100-SXM", strategy, "pretrain"): 0.05
                for strategy in (s.value for s in Strategy)}
    slow = run_cycle(cluster.snapshot(_h100_job(), calibration=measured)).admissions[0]
    assert slow.prediction is not None and slow.prediction.efficiency == 0.05
    assert slow.prediction.step_time_s > 5 * prior.step_time_s
    # η measured on another job kind or accelerator does not apply
    other = {("H100-SXM", "ddp", "finetune"): 0.05, ("A100-80G", "ddp", "pretrain"): 0.05}
    again = run_cycle(cluster.snapshot(_h100_job(), calibration=other)).admissions[0]
    assert again.prediction is not None and again.prediction.efficiency == prior.efficiency


def test_a_deadline_that_cannot_be_met_admits_the_fastest_plan_with_a_warning() -> None:
    cluster = make_cluster().pool("h100", "H100-SXM", nodes=1, per_node=8)
    free = run_cycle(cluster.snapshot(_h100_job())).admissions[0]
    late = run_cycle(cluster.snapshot(_h100_job().deadline(60.0))).admissions[0]
    assert late.prediction is not None and free.prediction is not None
    assert late.prediction.completion_s == free.prediction.completion_s
    assert "the deadline can no longer be met" in late.warning
    assert free.warning == ""


def test_a_budget_no_plan_fits_keeps_the_job_pending_and_says_why() -> None:
    cluster = make_cluster().pool("h100", "H100-SXM", nodes=1, per_node=8)
    result = run_cycle(cluster.snapshot(_h100_job().budget(0.01)))
    assert result.admissions == ()
    assert "raise budget_usd" in result.pending_reasons[1]


def test_a_job_several_pools_match_starts_on_the_best_one_for_its_objective() -> None:
    # L4 listed first; both pools are free. The job asks for no pool or accelerator.
    cluster = make_cluster().pool("l4", "L4", nodes=1, per_node=8) \
        .pool("h100", "H100-SXM", nodes=1, per_node=8)
    fastest = run_cycle(cluster.snapshot(_h100_job())).admissions[0]
    assert fastest.pool_name == "h100"  # earliest predicted completion
    assert fastest.prediction is not None
    # A deadline both pools meet: the cheaper pool, even though it runs longer.
    generous = fastest.prediction.completion_s * 50
    cheap = run_cycle(cluster.snapshot(_h100_job().deadline(generous))).admissions[0]
    assert cheap.prediction is not None
    assert cheap.pool_name == "l4"
    assert cheap.prediction.price_usd < fastest.prediction.price_usd
    # A pool that cannot start the job now does not hold it back: it starts where it can.
    busy = make_cluster().pool("l4", "L4", nodes=1, per_node=8) \
        .pool("h100", "H100-SXM", nodes=1, per_node=8, busy={0: 8})
    assert run_cycle(busy.snapshot(_h100_job())).admissions[0].pool_name == "l4"


LLAMA_70B = {"model_type": "llama", "vocab_size": 128256, "hidden_size": 8192,
             "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
             "intermediate_size": 28672, "tie_word_embeddings": False}
"""Llama-3-70B's shape (its config.json): no plan fits one node of 8 H100s."""


def test_auto_devices_run_the_plan_corral_plan_ranks_best() -> None:
    from scheduler.cost.planner import plan_job
    from scheduler.shaping import job_request, pool_option

    cluster = make_cluster().pool("h100", "H100-SXM", nodes=8, per_node=8, backend="ray")
    job = make_job(1).devices(None).batch(64).model(LLAMA_70B, seq_len=4096, steps=100)
    snapshot = cluster.snapshot(job)
    pool = snapshot.pools[0]
    best = plan_job(job_request(job.build(), None), [pool_option(pool)], {}).best
    assert best is not None and best.plan.world_size > 8  # corral plan: more than one node
    one_node = plan_job(job_request(job.build(), 8), [pool_option(pool)], {}).best
    assert one_node is None  # what the cycle sized `auto` as before: pending forever
    result = run_cycle(snapshot)
    (admission,) = result.admissions
    assert admission.plan == best.plan, result.pending_reasons
    # A range that allows the same sizes is admitted too, on an empty cluster.
    ranged = run_cycle(cluster.snapshot(
        make_job(2).range(8, 64).batch(64).model(LLAMA_70B, seq_len=4096, steps=100)))
    assert [a.plan.world_size > 8 for a in ranged.admissions] == [True]
