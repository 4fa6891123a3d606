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
from typing import TypeVar

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
from scheduler.policies.quota import (
    Decision,
    TenantUsage,
    admissible,
    borrowing_flags,
    reclaimable,
    usage_of,
)
from scheduler.shaping import Shape, ShapesOf, best_pool_first

DEFAULT_POLICY = PolicyConfig()
_T = TypeVar("_T")


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
    """Decide admissions and preemptions for one cycle; the module docstring has the steps,
    each a method of :class:`_Cycle` timed into ``CycleResult.step_seconds``."""
    started = timer()
    cycle = _Cycle.of(snapshot, config, timer)
    ordered = cycle.timed("1_order", cycle.order)
    for job in ordered:
        cycle.place(job)
    cycle.seconds["total"] = timer() - started
    return CycleResult(tuple(cycle.admissions), cycle.reasons, cycle.seconds,
                       tuple(cycle.preemptions))


@dataclass
class _Cycle:
    """One cycle's what-if view of the cluster, changed by every admission and preemption
    order it makes, and the seconds each named step took (summed over the jobs)."""

    snapshot: Snapshot
    config: PolicyConfig
    timer: Callable[[], float]
    pools: dict[int, PoolView]
    running: list[RunningJobView]
    usage: dict[tuple[str, str], int]
    free: dict[int, FreeView] = field(default_factory=dict)
    calibrated: dict[str, Calibrated] = field(default_factory=dict)
    reservations: dict[int, Reservation] = field(default_factory=dict)
    admissions: list[Admission] = field(default_factory=list)
    preemptions: list[PreemptionOrder] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, snapshot: Snapshot, config: PolicyConfig,
           timer: Callable[[], float]) -> _Cycle:
        usage: dict[tuple[str, str], int] = {}
        for row in usage_of(snapshot.running):
            key = (row.tenant, row.accelerator)
            usage[key] = usage.get(key, 0) + row.devices
        return cls(snapshot, config, timer,
                   pools={pool.pool_id: pool for pool in snapshot.pools},
                   running=list(borrowing_flags(snapshot.running, config.quotas)),
                   usage=usage)

    def timed(self, step: str, action: Callable[..., _T], *args: object) -> _T:
        """``action(*args)``, its seconds added to ``step``'s."""
        mark = self.timer()
        try:
            return action(*args)
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + self.timer() - mark

    # 1. Order
    def order(self) -> list[PendingJobView]:
        """Pending jobs by the ordering policy; with quotas, jobs that fit their tenant's
        nominal quota before jobs that would borrow (Kueue's rule), so that a reclaimed
        borrower cannot re-borrow at once."""
        ordered = order_pending(self.snapshot, self.config)
        if self.config.quotas.tenants:
            ordered = _nominal_first(ordered, self.snapshot, self.config)
        return ordered

    def place(self, job: PendingJobView) -> None:
        """Steps 2–8 for one job: admit it on the first pool that takes it, else preempt for
        it or reserve what it wanted, and say why it waits."""
        if job.kind not in self.calibrated:
            self.calibrated[job.kind] = self.snapshot.calibrated_for(job.kind)
        shapes_on = ShapesOf(job, self.free, self.running, self.calibrated[job.kind],
                             self.config)
        candidates = self.timed("2_match", self.match, job, shapes_on)
        if not candidates:
            self.reasons[job.job_id] = (
                f"no pool matches pool={job.pool!r} accelerator={job.accelerator!r}")
            return
        waits: list[str] = []
        blocked_on: list[tuple[PoolView, int]] = []
        for pool in candidates:
            if self.try_pool(job, pool, shapes_on, waits, blocked_on):
                return
        self.timed("8_preempt_reserve", self.preempt_or_reserve, job, blocked_on, waits)
        self.reasons[job.job_id] = "; ".join(dict.fromkeys(waits))

    # 2. Match pools
    def match(self, job: PendingJobView, shapes_on: ShapesOf) -> tuple[PoolView, ...]:
        """The pools that match the job's request; where several do, those that can start it
        now first, best first for its objective."""
        candidates = matching_pools(tuple(self.pools.values()), job.pool, job.accelerator)
        if len(candidates) > 1:
            candidates = best_pool_first(job, candidates, shapes_on)
        return tuple(candidates)

    def try_pool(self, job: PendingJobView, pool: PoolView, shapes_on: ShapesOf,
                 waits: list[str], blocked_on: list[tuple[PoolView, int]]) -> bool:
        """Steps 3–7 on one pool: True once the job is admitted there; else what stood in
        the way goes to ``waits`` (and ``blocked_on`` when only free devices were missing)."""
        reservation = self.reservations.get(pool.pool_id)
        if reservation is not None and not _may_pass(job, reservation, self.config):
            waits.append(f"pool {pool.name}: reserved for {reservation.describe()}")
            return False
        # 4.–5. Shapes and their plans (3. quota is judged on the best one below).
        shapes, refused = self.timed("4_5_shape_plan", shapes_on, pool)
        waits += refused
        if not shapes:
            if not refused:
                waits.append(f"pool {pool.name}: no gang size the job allows fits it")
            return False
        best = shapes[0]
        decision = self.timed("3_quota", self.quota, job, pool, best.devices, reservation,
                              waits)
        if decision is None:
            return False
        if best.placement is None:
            waits.append(f"waiting for {best.devices} devices in pool {pool.name} "
                         f"({self.free[pool.pool_id].summary})")
            blocked_on.append((pool, best.devices))
            return False
        note = decision.reason if decision.borrowed_devices else ""
        if reservation is not None:
            allowed, note = self.timed("6_backfill", self.backfill, pool, best, reservation,
                                       note, waits)
            if not allowed:
                return False
        if len(shapes) > 1:
            note = "; ".join(filter(None, [note, "shapes weighed: " + ", ".join(
                shape.describe() for shape in shapes)]))
        self.timed("7_admit", self.admit, job, pool, best, note)
        return True

    # 3. Quota
    def quota(self, job: PendingJobView, pool: PoolView, devices: int,
              reservation: Reservation | None, waits: list[str]) -> Decision | None:
        """The quota decision for ``devices`` on ``pool``; None (and the reasons, and a
        reclaim by preemption where allowed) when the tenant may not have them."""
        held = [TenantUsage(tenant, accelerator, count)
                for (tenant, accelerator), count in self.usage.items()] \
            if self.config.quotas.tenants else []
        decision = admissible(devices, job.tenant, pool.accelerator, held, self.config.quotas)
        if decision.ok:
            return decision
        waits.append(decision.reason)
        if self.config.preemption and reservation is None:
            waits += _reclaim(job, pool, devices, held, self.running, self.config,
                              self.preemptions)
        return None

    # 6. Backfill past a reservation
    def backfill(self, pool: PoolView, best: Shape, reservation: Reservation, note: str,
                 waits: list[str]) -> tuple[bool, str]:
        run_s = best.prediction.run_time_s if best.prediction is not None else None
        allowed, after, why = may_backfill(reservation, best.devices, run_s)
        if not allowed:
            waits.append(f"pool {pool.name}: {why}")
            return False, note
        self.reservations[pool.pool_id] = after
        return True, "; ".join(filter(None, [note, f"backfilled: {why}"]))

    # 7. Admit on this cycle's view
    def admit(self, job: PendingJobView, pool: PoolView, best: Shape, note: str) -> None:
        devices = best.placement
        assert devices is not None and best.plan is not None  # a placed shape is planned
        plan = replace(best.plan, nodes=nodes_spanned(devices))
        self.admissions.append(Admission(job.job_id, pool.pool_id, pool.name, pool.backend,
                                         plan, devices, best.prediction, best.warning, note))
        self.pools[pool.pool_id] = _without(pool, devices)
        self.free[pool.pool_id] = FreeView.of(self.pools[pool.pool_id])
        key = (job.tenant, pool.accelerator)
        self.usage[key] = self.usage.get(key, 0) + best.devices

    # 8. Preempt for a blocked job, and reserve what it wanted
    def preempt_or_reserve(self, job: PendingJobView, blocked_on: list[tuple[PoolView, int]],
                           waits: list[str]) -> None:
        """Preempt only where the job is the first blocked one (the devices it frees cannot
        go to a job ordered ahead of it) and in one pool only; reserve every pool it
        wanted."""
        preempted = False
        for pool, devices in blocked_on:
            if self.config.preemption and not preempted \
                    and pool.pool_id not in self.reservations \
                    and any(other.pool_id == pool.pool_id
                            and (other.preempting or other.priority < job.priority)
                            for other in self.running):
                found = _preempt(job, pool, devices, self.running, self.preemptions)
                waits += found
                preempted = bool(found)
            if pool.pool_id not in self.reservations:
                self.reservations[pool.pool_id] = reserve(job.job_id, job.name, pool, devices,
                                                          self.running)


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
