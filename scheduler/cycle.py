"""One scheduling cycle, as numbered steps, pure over a snapshot of the cluster.

Input: a :class:`Snapshot` (pools with free devices, pending jobs). Output: a
:class:`CycleResult` — which jobs to admit where with which plan and exact devices, and for every
job left pending the reason in words. The service commits the result and dispatches; the
simulator drives this same function.

1. Order pending jobs (priority, then age).
2. For each job, find the pools that match its request.
3. Size the gang on each pool and try to place it whole on the devices still free in this cycle.
4. Choose the plan the trainer will obey: for a pretraining job whose model the cost model
   knows, the best plan that fits the devices (strategy, micro-batch, recomputation) by
   predicted completion; otherwise data parallel over the gang.
5. Admit: take the devices out of this cycle's free view, so later jobs cannot reuse them.
6. A job that cannot be placed *reserves* the pools it wanted: lower-ordered jobs may not take
   devices there this cycle, so a large gang at the head is never starved by small ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from scheduler.cost.hardware import lookup
from scheduler.cost.planner import Candidate, ModelProfile, PlanRequest, PoolOption, plan_job
from scheduler.domain.errors import PlanError
from scheduler.domain.plan import Plan
from scheduler.domain.resources import NodeView, PendingJobView, PoolView, Snapshot
from scheduler.policies.ordering import priority_then_age
from scheduler.policies.placement import (
    DeviceList,
    devices_for,
    free_summary,
    matching_pools,
    max_gang,
    nodes_spanned,
    place_gang,
)

PLANNED_KINDS = frozenset({"pretrain"})
"""Job kinds whose trainer runs every strategy the planner may choose; the others get data
parallel plans until their trainers do (LoRA under FSDP, compression on one device)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """Admit ``job_id`` on ``pool`` with ``plan`` on exactly these devices."""

    job_id: int
    pool_id: int
    pool_name: str
    backend: str
    plan: Plan
    devices: DeviceList
    prediction: Candidate | None = None
    """The cost model's prediction for ``plan``, when it made one."""


@dataclass(frozen=True, slots=True)
class CycleResult:
    admissions: tuple[Admission, ...]
    pending_reasons: dict[int, str]
    step_seconds: dict[str, float] = field(default_factory=dict)


def _without(pool: PoolView, taken: DeviceList) -> PoolView:
    """What-if view of ``pool`` after ``taken`` devices are allocated."""
    gone = set(taken)
    nodes = tuple(
        replace(node, free_devices=tuple(d for d in node.free_devices
                                         if (node.node_id, d) not in gone))
        for node in pool.nodes
    )
    return replace(pool, nodes=nodes)


def pool_option(pool: PoolView) -> PoolOption:
    """The planner's view of a pool; the pool's own price wins over the catalog's."""
    overrides = {"price_per_device_hour": pool.price_per_device_hour} \
        if pool.price_per_device_hour > 0 else None
    return PoolOption(pool.name, lookup(pool.accelerator, overrides), pool.devices_per_node,
                      max_gang(pool))


def _plan_for(job: PendingJobView, pool: PoolView, world_size: int,
              devices: DeviceList) -> tuple[Plan, Candidate | None]:
    """The cost model's best fitting plan for this gang, or data parallel without one.

    Raises PlanError when the cost model predicts that no plan fits these devices."""
    nodes = nodes_spanned(devices)
    if job.model_profile is not None and job.kind in PLANNED_KINDS:
        try:
            option = pool_option(pool)
        except KeyError:
            option = None  # an accelerator the catalog lacks: no prediction
        if option is not None:
            request = PlanRequest(
                profile=ModelProfile(**job.model_profile), seq_len=job.seq_len,
                global_batch=job.global_batch, total_steps=job.total_steps,
                precision=job.precision, micro_batch=job.micro_batch, devices=world_size)
            report = plan_job(request, [option])
            if report.best is None:
                raise PlanError(report.smallest_fix() or "no plan fits these devices")
            return replace(report.best.plan, nodes=nodes), report.best
    plan = Plan.data_parallel(world_size, job.global_batch, job.micro_batch, job.precision)
    return replace(plan, nodes=nodes), None


def run_cycle(snapshot: Snapshot,
              timer: Callable[[], float] = time.perf_counter) -> CycleResult:
    """Decide admissions for one cycle; see the module docstring for the steps."""
    seconds: dict[str, float] = {}
    started = timer()

    # 1. Order.
    ordered = priority_then_age(snapshot.pending)
    seconds["1_order"] = timer() - started

    pools: dict[int, PoolView] = {pool.pool_id: pool for pool in snapshot.pools}
    reserved_by: dict[int, PendingJobView] = {}
    admissions: list[Admission] = []
    reasons: dict[int, str] = {}
    placing_started = timer()
    for job in ordered:
        # 2. Match pools.
        candidates = matching_pools(tuple(pools.values()), job.pool, job.accelerator)
        if not candidates:
            reasons[job.job_id] = (
                f"no pool matches pool={job.pool!r} accelerator={job.accelerator!r}"
            )
            continue
        waits: list[str] = []
        admitted = False
        for pool in candidates:
            blocker = reserved_by.get(pool.pool_id)
            if blocker is not None:
                waits.append(f"pool {pool.name} is reserved for higher-ordered job "
                             f"#{blocker.job_id} ({blocker.name})")
                continue
            # 3. Size and place the gang.
            count = devices_for(job, pool)
            devices = place_gang(pool, count)
            if devices is None:
                waits.append(f"waiting for {count} devices in pool {pool.name} "
                             f"({free_summary(pool.nodes)})")
                continue
            # 4. Plan.
            try:
                plan, prediction = _plan_for(job, pool, count, devices)
            except PlanError as err:
                waits.append(f"pool {pool.name}: {err}")
                continue
            # 5. Admit on this cycle's view.
            admissions.append(Admission(job.job_id, pool.pool_id, pool.name, pool.backend,
                                        plan, devices, prediction))
            pools[pool.pool_id] = _without(pool, devices)
            admitted = True
            break
        if not admitted:
            reasons[job.job_id] = "; ".join(waits)
            # 6. Reserve what the blocked job wanted.
            for pool in candidates:
                reserved_by.setdefault(pool.pool_id, job)
    seconds["2_5_match_place_plan_admit"] = timer() - placing_started
    seconds["total"] = timer() - started
    return CycleResult(tuple(admissions), reasons, seconds)


__all__ = ["Admission", "CycleResult", "NodeView", "run_cycle"]
