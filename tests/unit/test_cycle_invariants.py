"""Invariants of one cycle over random clusters, tenants, quotas and job streams (hypothesis).

After every cycle: no device is given twice or taken from another job; every gang gets exactly
its world size on one pool; a job is either admitted or pending with a reason, never both;
quota without a cohort is never exceeded; every preemption victim is a running job not already
stopping, told once.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.cycle import run_cycle
from scheduler.policies.config import ORDERINGS, PolicyConfig
from scheduler.policies.quota import Quotas, TenantQuota
from tests.builders import ClusterBuilder, make_cluster, make_job

TENANTS = ("a", "b", "c")


@st.composite
def scenarios(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    cluster = make_cluster()
    pools = draw(st.integers(1, 3))
    for index in range(pools):
        cluster.pool(f"p{index}", "cpu", nodes=draw(st.integers(1, 3)),
                     per_node=draw(st.integers(1, 8)),
                     backend=draw(st.sampled_from(["fake", "local"])))
    job_id = 1
    for view in list(cluster.pools):
        for node_index, node in enumerate(view.nodes):
            free = len(node.free_devices)
            while free and draw(st.booleans()):
                take = draw(st.integers(1, free))
                cluster.run(job_id, view.name, take, node=node_index,
                            tenant=draw(st.sampled_from(TENANTS)),
                            priority=draw(st.integers(-1, 3)),
                            end_s=draw(st.none() | st.floats(0, 1e5)),
                            since_checkpoint_s=draw(st.floats(0, 1e4)),
                            preempting=draw(st.booleans()))
                free -= take
                job_id += 1
    pending = []
    for _ in range(draw(st.integers(0, 12))):
        job = make_job(job_id).tenant(draw(st.sampled_from(TENANTS))).priority(
            draw(st.integers(-1, 3))).batch(8)
        if draw(st.booleans()):
            job = job.range(draw(st.integers(1, 4)), draw(st.integers(4, 8)))
        else:
            job = job.devices(draw(st.sampled_from([1, 2, 4, 8])))
        if draw(st.booleans()):
            job = job.pool(f"p{draw(st.integers(0, pools - 1))}")
        pending.append(job)
        job_id += 1
    quotas = []
    for tenant in TENANTS:
        if draw(st.booleans()):
            quotas.append(TenantQuota(tenant, "cpu", draw(st.integers(0, 12)),
                                      cohort=draw(st.none() | st.just("lab"))))
    config = PolicyConfig(ordering=draw(st.sampled_from(ORDERINGS)), quotas=Quotas(tuple(quotas)),
                          preemption=draw(st.booleans()), backfill=draw(st.booleans()),
                          moldable=draw(st.booleans()))
    return cluster, pending, config


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_every_cycle_keeps_the_invariants(scenario) -> None:  # type: ignore[no-untyped-def]
    cluster, pending, config = scenario
    assert isinstance(cluster, ClusterBuilder)
    snapshot = cluster.snapshot(*pending)
    result = run_cycle(snapshot, config=config)

    free = {(node.node_id, device) for pool in snapshot.pools for node in pool.nodes
            for device in node.free_devices}
    pool_of_node = {node.node_id: pool.pool_id for pool in snapshot.pools for node in pool.nodes}
    given_out = [device for admission in result.admissions for device in admission.devices]
    # no device allocated twice, none taken from a running job
    assert len(given_out) == len(set(given_out))
    assert set(given_out) <= free
    for admission in result.admissions:
        assert len(admission.devices) == admission.plan.world_size
        assert {pool_of_node[node] for node, _ in admission.devices} == {admission.pool_id}
        if admission.backend == "local":
            assert admission.plan.nodes == 1
    # admitted or pending with a reason, never both
    admitted = {admission.job_id for admission in result.admissions}
    assert len(admitted) == len(result.admissions)
    assert not admitted & set(result.pending_reasons)
    assert admitted | set(result.pending_reasons) == {job.job_id for job in snapshot.pending}
    assert all(result.pending_reasons[job_id] for job_id in result.pending_reasons)
    # quota without a cohort never exceeded by what this cycle admits
    held = Counter()
    for job in snapshot.running:
        held[job.tenant] += job.devices
    added = Counter()
    tenant_of = {job.job_id: job.tenant for job in snapshot.pending}
    for admission in result.admissions:
        added[tenant_of[admission.job_id]] += len(admission.devices)
    for quota in config.quotas.tenants:
        if quota.cohort is None and added[quota.tenant]:
            assert held[quota.tenant] + added[quota.tenant] <= quota.nominal_devices
    # preemption: running victims, not already stopping, told once
    victims = [order.job_id for order in result.preemptions]
    assert len(victims) == len(set(victims))
    running = {job.job_id: job for job in snapshot.running}
    for victim in victims:
        assert victim in running and not running[victim].preempting
    if not config.preemption:
        assert victims == []
