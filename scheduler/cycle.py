"""One scheduling cycle, as numbered steps, pure over a snapshot of the cluster.

Input: a :class:`Snapshot` (pools with free devices, pending and running jobs) and the
:class:`PolicyConfig`. Output: a :class:`CycleResult` — which jobs to admit where with which plan
and exact devices, which running jobs to preempt for whom, and for every job left pending the
reason in words. The service commits the result and dispatches; the simulator drives this same
function.

1. Order pending jobs by the configured policy (fair share, priority, FIFO or LAS).
2. For each job, find the pools that match its request; where several do, those that can
   start it now go first, best first for its objective
   (:func:`scheduler.shaping.best_pool_first`).
3. Quota: the tenant's nominal quota, borrowing in its cohort; an owner whose quota peers
   borrow may reclaim it by preemption.
4. Shape: the gang size (its count, ``auto``, or for a moldable job the size with the earliest
   predicted completion, waiting included), placed whole on the devices free in this cycle
   (:mod:`scheduler.shaping`).
5. Choose the plan the trainer will obey: for a training job whose model the cost model
   knows, the best plan that fits the devices (strategy, micro-batch, recomputation) for the
   job's objective, among the strategies its trainer runs; otherwise data parallel over the
   gang (a forward-only compress job, a model the cost model does not know).
6. A pool reserved for a blocked higher-ordered job admits this one only as EASY backfill:
   predicted to end before the reserved start, or on devices the reserved job will not need.
7. Admit: take the devices out of this cycle's free view and count them against quota.
8. A job that cannot be placed may preempt lower-priority jobs (the fewest, least work lost);
   either way it *reserves* the pools it wanted, so it is never starved by smaller jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from scheduler.cost.planner import (
    Calibrated,
    Candidate,
)
from scheduler.domain.plan import Plan
from scheduler.domain.resources import (
    NodeView,
    PendingJobView,
    PoolView,
    RunningJobView,
    Snapshot,
)
from scheduler.policies.backfill import Reservation, may_backfill, reserve
from scheduler.policies.config import PolicyConfig, order_pending
from scheduler.policies.placement import (
    DeviceList,
    FreeView,
    matching_pools,
    nodes_spanned,
    place_gang,
)
from scheduler.policies.preemption import Preemptor, select_victims
from scheduler.policies.quota import TenantUsage, admissible, borrowing_flags, reclaimable, usage_of
from scheduler.shaping import ShapesOf, best_pool_first

DEFAULT_POLICY = PolicyConfig()


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
    warning: str = ""
    """What the user should know about this admission (a deadline that can no longer be met)."""
    note: str = ""
    """How the cycle got here: borrowed quota, backfill, the shapes a moldable job weighed."""


@dataclass(frozen=True, slots=True)
class PreemptionOrder:
    """Tell running job ``job_id`` to checkpoint and stop so that ``for_job_id`` can run."""

    job_id: int
    for_job_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class CycleResult:
    admissions: tuple[Admission, ...]
    pending_reasons: dict[int, str]
    step_seconds: dict[str, float] = field(default_factory=dict)
    preemptions: tuple[PreemptionOrder, ...] = ()


def _without(pool: PoolView, taken: DeviceList) -> PoolView:
    """What-if view of ``pool`` after ``taken`` devices are allocated (only the nodes the gang
    touched are copied: a cycle admits many gangs on pools of many nodes)."""
    gone: dict[int, set[int]] = {}
    for node_id, device in taken:
        gone.setdefault(node_id, set()).add(device)
    nodes = tuple(
        replace(node, free_devices=tuple(d for d in node.free_devices
                                         if d not in gone[node.node_id]))
        if node.node_id in gone else node
        for node in pool.nodes
    )
    return replace(pool, nodes=nodes)


def run_cycle(snapshot: Snapshot, timer: Callable[[], float] = time.perf_counter,
              config: PolicyConfig = DEFAULT_POLICY) -> CycleResult:
    """Decide admissions and preemptions for one cycle; the module docstring has the steps."""
    seconds: dict[str, float] = {}
    started = timer()

    # 1. Order; with quotas, jobs that fit their tenant's nominal quota go before jobs that
    #    would borrow (Kueue's rule), so a reclaimed borrower cannot re-borrow at once.
    ordered = order_pending(snapshot, config)
    if config.quotas.tenants:
        ordered = _nominal_first(ordered, snapshot, config)
    seconds["1_order"] = timer() - started

    pools: dict[int, PoolView] = {pool.pool_id: pool for pool in snapshot.pools}
    free: dict[int, FreeView] = {}
    running = list(borrowing_flags(snapshot.running, config.quotas))
    usage: dict[tuple[str, str], int] = {}
    for row in usage_of(snapshot.running):
        usage[(row.tenant, row.accelerator)] = usage.get((row.tenant, row.accelerator), 0) + \
            row.devices
    calibrated: dict[str, Calibrated] = {}
    reservations: dict[int, Reservation] = {}
    admissions: list[Admission] = []
    preemptions: list[PreemptionOrder] = []
    reasons: dict[int, str] = {}
    placing_started = timer()
    for job in ordered:
        if job.kind not in calibrated:
            calibrated[job.kind] = snapshot.calibrated_for(job.kind)
        # 2. Match pools.
        candidates = matching_pools(tuple(pools.values()), job.pool, job.accelerator)
        if not candidates:
            reasons[job.job_id] = (
                f"no pool matches pool={job.pool!r} accelerator={job.accelerator!r}"
            )
            continue
        waits: list[str] = []
        blocked_on: list[tuple[PoolView, int]] = []
        admitted = False
        shapes_on = ShapesOf(job, free, running, calibrated[job.kind], config)
        if len(candidates) > 1:
            candidates = best_pool_first(job, candidates, shapes_on)
        for pool in candidates:
            reservation = reservations.get(pool.pool_id)
            if reservation is not None and not _may_pass(job, reservation, config):
                waits.append(f"pool {pool.name}: reserved for {reservation.describe()}")
                continue
            # 4. Shapes (3. quota is judged on the best one below).
            shapes, refused = shapes_on(pool)
            waits += refused
            if not shapes:
                if not refused:
                    waits.append(f"pool {pool.name}: no gang size the job allows fits it")
                continue
            best = shapes[0]
            # 3. Quota.
            held = [TenantUsage(tenant, accelerator, devices)
                    for (tenant, accelerator), devices in usage.items()] \
                if config.quotas.tenants else []
            decision = admissible(best.devices, job.tenant, pool.accelerator, held,
                                  config.quotas)
            if not decision.ok:
                waits.append(decision.reason)
                if config.preemption and reservation is None:
                    waits += _reclaim(job, pool, best.devices, held, running, config,
                                      preemptions)
                continue
            if best.placement is None:
                waits.append(f"waiting for {best.devices} devices in pool {pool.name} "
                             f"({free[pool.pool_id].summary})")
                blocked_on.append((pool, best.devices))
                continue
            # 6. Backfill past a reservation.
            note = decision.reason if decision.borrowed_devices else ""
            if reservation is not None:
                run_s = best.prediction.run_time_s if best.prediction is not None else None
                allowed, after, why = may_backfill(reservation, best.devices, run_s)
                if not allowed:
                    waits.append(f"pool {pool.name}: {why}")
                    continue
                reservations[pool.pool_id] = after
                note = "; ".join(filter(None, [note, f"backfilled: {why}"]))
            if len(shapes) > 1:
                note = "; ".join(filter(None, [note, "shapes weighed: " + ", ".join(
                    shape.describe() for shape in shapes)]))
            # 7. Admit on this cycle's view.
            devices = best.placement
            assert best.plan is not None  # a placed shape is planned
            plan = replace(best.plan, nodes=nodes_spanned(devices))
            admissions.append(Admission(job.job_id, pool.pool_id, pool.name, pool.backend,
                                        plan, devices, best.prediction, best.warning, note))
            pools[pool.pool_id] = _without(pool, devices)
            free[pool.pool_id] = FreeView.of(pools[pool.pool_id])
            key = (job.tenant, pool.accelerator)
            usage[key] = usage.get(key, 0) + best.devices
            admitted = True
            break
        if admitted:
            continue
        # 8. Preempt for the blocked job (only where it is the first blocked job, so the
        #    devices it frees cannot go to a job ordered ahead of it, and in one pool only),
        #    and reserve what it wanted.
        preempted = False
        for pool, devices in blocked_on:
            if config.preemption and not preempted and pool.pool_id not in reservations \
                    and any(other.pool_id == pool.pool_id
                            and (other.preempting or other.priority < job.priority)
                            for other in running):
                found = _preempt(job, pool, devices, running, preemptions)
                waits += found
                preempted = bool(found)
            if pool.pool_id not in reservations:
                reservations[pool.pool_id] = reserve(job.job_id, job.name, pool, devices,
                                                     running)
        reasons[job.job_id] = "; ".join(dict.fromkeys(waits))
    seconds["2_8_match_quota_shape_plan_admit"] = timer() - placing_started
    seconds["total"] = timer() - started
    return CycleResult(tuple(admissions), reasons, seconds, tuple(preemptions))


def _nominal_first(ordered: list[PendingJobView], snapshot: Snapshot,
                   config: PolicyConfig) -> list[PendingJobView]:
    """``ordered`` with the jobs that would borrow quota moved behind the others (stable)."""
    held = {(row.tenant, row.accelerator.lower()): row.devices
            for row in usage_of(snapshot.running)}
    accelerators = {pool.accelerator for pool in snapshot.pools}

    def borrows(job: PendingJobView) -> bool:
        wanted = job.device_range[0] if job.device_range else (job.devices or 1)
        kinds = [job.accelerator] if job.accelerator else sorted(accelerators)
        for kind in kinds:
            quota = config.quotas.for_tenant(job.tenant, kind)
            if quota is None or held.get((job.tenant, kind.lower()), 0) + wanted \
                    <= quota.nominal_devices:
                return False
        return True

    flags = [borrows(job) for job in ordered]
    return [job for job, late in zip(ordered, flags, strict=True) if not late] + \
        [job for job, late in zip(ordered, flags, strict=True) if late]


def _may_pass(job: PendingJobView, reservation: Reservation, config: PolicyConfig) -> bool:
    """Whether a job could possibly backfill past ``reservation`` (a cheap test before it is
    shaped and planned): backfill is on, and it either uses spare devices or can be
    predicted to end before the reserved start."""
    if not config.backfill:
        return False
    smallest = job.device_range[0] if job.device_range else (job.devices or 1)
    predictable = job.model_profile is not None and reservation.start_s > 0
    return predictable or smallest <= reservation.extra_devices


def _what_if_stopped(pool: PoolView, running: Sequence[RunningJobView]) -> PoolView:
    """``pool`` as it will be once the jobs already told to stop have stopped."""
    freed: dict[int, list[int]] = {}
    for job in running:
        if job.preempting and job.pool_id == pool.pool_id:
            for node_id, device in job.device_ids:
                freed.setdefault(node_id, []).append(device)
    if not freed:
        return pool
    return replace(pool, nodes=tuple(
        replace(node, free_devices=tuple(sorted({*node.free_devices,
                                                 *freed.get(node.node_id, ())})))
        for node in pool.nodes))


def _preempt(job: PendingJobView, pool: PoolView, devices: int,
             running: list[RunningJobView], orders: list[PreemptionOrder]) -> list[str]:
    """Choose victims for a job that does not fit (lower priority only); returns reasons."""
    soon = _what_if_stopped(pool, running)
    if place_gang(soon, devices) is not None:
        stopping = [f"#{other.job_id}" for other in running
                    if other.preempting and other.pool_id == pool.pool_id]
        return [f"waiting for preempted {', '.join(stopping)} to checkpoint and stop"]
    live = [other for other in running if not other.preempting]
    choice = select_victims(Preemptor(job.job_id, job.tenant, job.priority, devices), soon,
                            live)
    if not choice.ok or not choice.victims:
        return []
    return [_order(job, choice.victims, "higher priority", running, orders)]


def _reclaim(job: PendingJobView, pool: PoolView, devices: int, usage: list[TenantUsage],
             running: list[RunningJobView], config: PolicyConfig,
             orders: list[PreemptionOrder]) -> list[str]:
    """Preempt peers on borrowed quota for an owner's job within its nominal quota."""
    if any(other.preempting and other.borrowed for other in running):
        return ["waiting for preempted borrowers to checkpoint and stop"]
    reclaim = reclaimable(devices, job.tenant, pool.accelerator, usage, config.quotas, running)
    if not reclaim.job_ids:
        return []
    live = [other for other in running if not other.preempting]
    choice = select_victims(Preemptor(job.job_id, job.tenant, job.priority, devices),
                            _what_if_stopped(pool, running), live, reclaim)
    if not choice.ok or not choice.victims:
        return []
    return [_order(job, choice.victims, "reclaiming quota", running, orders)]


def _order(job: PendingJobView, victims: Sequence[RunningJobView], why: str,
           running: list[RunningJobView], orders: list[PreemptionOrder]) -> str:
    """Record the preemption orders and mark the victims as stopping in this cycle's view."""
    names = ", ".join(f"#{victim.job_id}" for victim in victims)
    for victim in victims:
        orders.append(PreemptionOrder(victim.job_id, job.job_id,
                                      f"preempted for job #{job.job_id} ({job.name}): {why}"))
    chosen = {victim.job_id for victim in victims}
    running[:] = [replace(other, preempting=True) if other.job_id in chosen else other
                  for other in running]
    return f"preempting {names} ({why}); starts once they checkpoint and stop"


__all__ = ["Admission", "CycleResult", "NodeView", "PreemptionOrder", "run_cycle"]
