"""Quota, preemption, backfill, moldable shapes and ordering inside the real cycle."""

from __future__ import annotations

import math

from scheduler.cycle import run_cycle
from scheduler.policies.config import PolicyConfig
from scheduler.policies.quota import Quotas, TenantQuota
from tests.builders import make_cluster, make_job

LLAMA_SMALL = {"model_type": "llama", "vocab_size": 4096, "hidden_size": 256,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
               "intermediate_size": 688, "tie_word_embeddings": False}


def _quotas(*rows: TenantQuota) -> PolicyConfig:
    return PolicyConfig(quotas=Quotas(rows))


# --- quota ---------------------------------------------------------------------------------


def test_quota_caps_a_tenant_and_says_so() -> None:
    config = _quotas(TenantQuota("a", "cpu", 2))
    cluster = make_cluster().pool("cpu", per_node=4)
    result = run_cycle(cluster.snapshot(make_job(1).devices(2).tenant("a"),
                                        make_job(2).devices(2).tenant("a"),
                                        make_job(3).devices(2).tenant("b")), config=config)
    assert [a.job_id for a in result.admissions] == [1, 3]
    assert "quota: a has 2/2 cpu, asks 2; no cohort to borrow from" in result.pending_reasons[2]


def test_a_tenant_borrows_idle_quota_of_its_cohort_and_the_owner_reclaims_it() -> None:
    config = _quotas(TenantQuota("a", "cpu", 2, cohort="lab"),
                     TenantQuota("b", "cpu", 2, cohort="lab"))
    cluster = make_cluster().pool("cpu", per_node=4)
    borrowed = run_cycle(cluster.snapshot(make_job(1).devices(4).tenant("a")), config=config)
    (admission,) = borrowed.admissions
    assert "borrows 2 from cohort lab" in admission.note
    # a now runs on b's idle quota; b's job within its nominal quota reclaims it
    busy = make_cluster().pool("cpu", per_node=4).run(1, "cpu", 4, tenant="a")
    reclaim = run_cycle(busy.snapshot(make_job(2).devices(2).tenant("b")), config=config)
    assert [(order.job_id, order.for_job_id) for order in reclaim.preemptions] == [(1, 2)]
    assert "reclaiming quota" in reclaim.pending_reasons[2]


def test_a_job_that_would_itself_borrow_never_preempts_for_quota() -> None:
    config = _quotas(TenantQuota("a", "cpu", 2, cohort="lab"),
                     TenantQuota("b", "cpu", 2, cohort="lab"))
    busy = make_cluster().pool("cpu", per_node=4).run(1, "cpu", 4, tenant="a")
    result = run_cycle(busy.snapshot(make_job(2).devices(3).tenant("b")), config=config)
    assert result.preemptions == ()


# --- preemption ----------------------------------------------------------------------------


def test_a_higher_priority_job_preempts_the_least_work_lost() -> None:
    cluster = (make_cluster().pool("cpu", per_node=4)
               .run(1, "cpu", 2, priority=0, since_checkpoint_s=600)
               .run(2, "cpu", 2, priority=0, since_checkpoint_s=30))
    result = run_cycle(cluster.snapshot(make_job(3).devices(2).priority(5)))
    assert [order.job_id for order in result.preemptions] == [2]
    assert result.admissions == ()
    assert "preempting #2 (higher priority)" in result.pending_reasons[3]


def test_equal_priority_never_preempts_and_a_victim_is_told_only_once() -> None:
    cluster = make_cluster().pool("cpu", per_node=2).run(1, "cpu", 2, priority=5)
    assert run_cycle(cluster.snapshot(make_job(2).devices(2).priority(5))).preemptions == ()
    stopping = make_cluster().pool("cpu", per_node=2).run(1, "cpu", 2, preempting=True)
    again = run_cycle(stopping.snapshot(make_job(2).devices(2).priority(9)))
    assert again.preemptions == ()
    assert "waiting for preempted #1 to checkpoint and stop" in again.pending_reasons[2]


def test_preemption_can_be_switched_off() -> None:
    cluster = make_cluster().pool("cpu", per_node=2).run(1, "cpu", 2)
    result = run_cycle(cluster.snapshot(make_job(2).devices(2).priority(9)),
                       config=PolicyConfig(preemption=False))
    assert result.preemptions == () and "waiting for 2 devices" in result.pending_reasons[2]


# --- backfill ------------------------------------------------------------------------------


def _backfill_cluster():  # type: ignore[no-untyped-def]
    """4 devices, 2 held by a job predicted to end in 1 h; the head job needs all 4."""
    return make_cluster().pool("cpu", per_node=4).run(1, "cpu", 2, end_s=3600.0)


def test_a_short_job_backfills_ahead_of_the_reserved_head() -> None:
    head = make_job(2).devices(4).priority(5)
    short = make_job(3).devices(2).model(LLAMA_SMALL, seq_len=128, steps=5, precision="fp32")
    result = run_cycle(_backfill_cluster().snapshot(head, short),
                       config=PolicyConfig(preemption=False))
    (admission,) = result.admissions
    assert admission.job_id == 3 and admission.prediction is not None
    assert admission.prediction.run_time_s < 3600
    assert "backfilled: ends before the reserved start" in admission.note


def test_a_long_job_may_not_delay_the_reserved_head() -> None:
    head = make_job(2).devices(4).priority(5)
    long = make_job(3).devices(2).model(LLAMA_SMALL, seq_len=128, steps=200_000,
                                        precision="fp32")
    result = run_cycle(_backfill_cluster().snapshot(head, long),
                       config=PolicyConfig(preemption=False))
    assert result.admissions == ()
    assert "reserved for #2 (job2), reserved start in 1.00 h" in result.pending_reasons[3]
    assert "would delay it" in result.pending_reasons[3]


def test_without_backfill_the_reserved_pool_admits_nothing_behind_the_head() -> None:
    head = make_job(2).devices(4).priority(5)
    short = make_job(3).devices(2).model(LLAMA_SMALL, seq_len=128, steps=5, precision="fp32")
    result = run_cycle(_backfill_cluster().snapshot(head, short),
                       config=PolicyConfig(preemption=False, backfill=False))
    assert result.admissions == ()


def test_devices_the_head_will_not_need_may_be_used_whatever_the_run_time() -> None:
    # 8 devices, 4 held until +1 h: the head (6) starts then with 2 to spare
    cluster = make_cluster().pool("cpu", per_node=8).run(1, "cpu", 4, end_s=3600.0)
    head = make_job(2).devices(6).batch(6).priority(5)
    unknown = make_job(3).devices(1)  # no prediction at all
    second = make_job(4).devices(1)
    third = make_job(5).devices(1)
    result = run_cycle(cluster.snapshot(head, unknown, second, third),
                       config=PolicyConfig(preemption=False))
    assert [a.job_id for a in result.admissions] == [3, 4]
    assert "reserved for #2 (job2), reserved start in 1.00 h" in result.pending_reasons[5]


# --- moldable shapes -----------------------------------------------------------------------


def test_a_moldable_job_takes_the_shape_that_finishes_first() -> None:
    # 8 devices, 4 busy for 10 h: 4 now beats 8 in 10 h
    cluster = make_cluster().pool("h", "H100-SXM", per_node=8).run(1, "h", 4, end_s=36_000.0)
    job = make_job(2).range(1, 8).batch(32).model(LLAMA_SMALL, seq_len=2048, steps=2000)
    (admission,) = run_cycle(cluster.snapshot(job), config=PolicyConfig(
        preemption=False)).admissions
    assert admission.plan.world_size == 4
    assert "shapes weighed: 4 devices now" in admission.note
    assert "8 devices after 10.00 h" in admission.note
    # with all 8 free, 8 finishes first
    free = make_cluster().pool("h", "H100-SXM", per_node=8)
    (wide,) = run_cycle(free.snapshot(job)).admissions
    assert wide.plan.world_size == 8


def test_a_moldable_job_without_predictions_takes_the_largest_size_that_fits_now() -> None:
    cluster = make_cluster().pool("cpu", per_node=8).run(1, "cpu", 5)
    (admission,) = run_cycle(cluster.snapshot(make_job(2).range(1, 8))).admissions
    assert admission.plan.world_size == 2  # 3 free, but 8 sequences split over 2, not 3


# --- ordering ------------------------------------------------------------------------------


def test_orderings() -> None:
    cluster = make_cluster().pool("cpu", per_node=1)
    jobs = (make_job(1).devices(1).tenant("heavy"), make_job(2).devices(1).tenant("light"),
            make_job(3).devices(1).priority(5).tenant("heavy"))

    def first(ordering: str, shares: dict[str, float] | None = None) -> int:
        result = run_cycle(cluster.snapshot(*jobs, shares=shares),
                           config=PolicyConfig(ordering=ordering, preemption=False))  # type: ignore[arg-type]
        return result.admissions[0].job_id

    assert first("priority") == 3
    assert first("fifo") == 1
    # fair share: priority first, then the tenant with the smaller dominant share
    assert first("fair_share", {"heavy": 0.9, "light": 0.1}) == 3
    low = (make_job(1).devices(1).tenant("heavy"), make_job(2).devices(1).tenant("light"))
    result = run_cycle(cluster.snapshot(*low, shares={"heavy": 0.9, "light": 0.1}))
    assert result.admissions[0].job_id == 2


def test_a_reservation_with_unknown_end_times_is_infinite() -> None:
    from scheduler.policies.backfill import reserve

    cluster = make_cluster().pool("cpu", per_node=4).run(1, "cpu", 4)
    pool = cluster.pools[0]
    assert math.isinf(reserve(2, "job2", pool, 2, cluster.running).start_s)


# --- topology ------------------------------------------------------------------------------


def test_tensor_parallel_groups_stay_inside_a_node() -> None:
    llama_8b = {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "intermediate_size": 14336, "tie_word_embeddings": False}
    job = make_job(3).devices(8).batch(8).model(llama_8b, seq_len=8192, steps=100)
    # on one free node of 8 the best plan at 8k tokens is tensor parallel (with FSDP over the
    # groups) on that node
    whole = make_cluster().pool("h", "H100-SXM", nodes=2, per_node=8, backend="ray")
    (alone,) = run_cycle(whole.snapshot(job), config=PolicyConfig(preemption=False)).admissions
    assert alone.plan.tp > 1 and alone.plan.nodes == 1
    # with 4 busy on each node the gang splits 4 + 4: tensor parallel may not cross nodes
    split = (make_cluster().pool("h", "H100-SXM", nodes=2, per_node=8, backend="ray")
             .run(1, "h", 4, node=0).run(2, "h", 4, node=1))
    (admission,) = run_cycle(split.snapshot(job), config=PolicyConfig(
        preemption=False)).admissions
    assert admission.plan.nodes == 2
    assert 4 % admission.plan.tp == 0


# --- preemption without thrash -------------------------------------------------------------


def test_only_the_first_blocked_job_of_a_pool_preempts_there() -> None:
    # job 2 (aged to the front by the order) is blocked first and reserves the pool; job 3,
    # of higher raw priority but ordered behind it, may not preempt for devices job 2 would
    # then take
    cluster = make_cluster().pool("cpu", per_node=2).run(1, "cpu", 2, priority=0)
    ahead = make_job(2).devices(2).priority(0)
    urgent = make_job(3).devices(2).priority(5)
    result = run_cycle(cluster.snapshot(ahead, urgent), config=PolicyConfig(ordering="fifo"))
    assert result.preemptions == ()
    assert "reserved for #2 (job2)" in result.pending_reasons[3]


def test_a_job_blocked_on_two_pools_preempts_in_one_only() -> None:
    cluster = (make_cluster().pool("a", per_node=2).pool("b", per_node=2)
               .run(1, "a", 2).run(2, "b", 2))
    result = run_cycle(cluster.snapshot(make_job(3).devices(2).priority(5)))
    assert len(result.preemptions) == 1


def test_jobs_within_nominal_quota_go_before_jobs_that_would_borrow() -> None:
    config = PolicyConfig(ordering="fifo", preemption=False, quotas=Quotas((
        TenantQuota("a", "cpu", 2, cohort="lab"), TenantQuota("b", "cpu", 2, cohort="lab"))))
    cluster = make_cluster().pool("cpu", per_node=4).run(1, "cpu", 2, tenant="a")
    borrower = make_job(2).devices(2).tenant("a")  # a holds its 2 already: would borrow
    owner = make_job(3).devices(2).tenant("b")
    result = run_cycle(cluster.snapshot(borrower, owner), config=config)
    assert [a.job_id for a in result.admissions] == [3]
