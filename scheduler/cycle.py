"""One scheduling cycle, as numbered steps, pure over a snapshot of the cluster.

Input: a :class:`Snapshot` (pools with free devices, pending and running jobs) and the
:class:`PolicyConfig`. Output: a :class:`CycleResult` — which jobs to admit where with which plan
and exact devices, which running jobs to preempt for whom, and for every job left pending the
reason in words. The service commits the result and dispatches; the simulator drives this same
function.

1. Order pending jobs by the configured policy (fair share, priority, FIFO or LAS).
2. For each job, find the pools that match its request; where several do, those that can
   start it now go first, best first for its objective (:func:`_best_pool_first`).
3. Quota: the tenant's nominal quota, borrowing in its cohort; an owner whose quota peers
   borrow may reclaim it by preemption.
4. Shape: the gang size (its count, ``auto``, or for a moldable job the size with the earliest
   predicted completion, waiting included), placed whole on the devices free in this cycle.
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

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from scheduler.cost.hardware import lookup
from scheduler.cost.planner import (
    Calibrated,
    Candidate,
    PlanRequest,
    PoolOption,
    plan_job,
    rank_key,
)
from scheduler.cost.profile import ModelProfile
from scheduler.domain.errors import PlanError
from scheduler.domain.plan import Plan
from scheduler.domain.resources import (
    NodeView,
    PendingJobView,
    PoolView,
    RunningJobView,
    Snapshot,
)
from scheduler.policies.backfill import Reservation, available_at, may_backfill, reserve
from scheduler.policies.config import PolicyConfig, order_pending
from scheduler.policies.placement import (
    DeviceList,
    FreeView,
    gang_shapes,
    matching_pools,
    max_gang,
    nodes_spanned,
    place_gang,
)
from scheduler.policies.preemption import Preemptor, select_victims
from scheduler.policies.quota import TenantUsage, admissible, borrowing_flags, reclaimable, usage_of

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


def pool_option(pool: PoolView, wait_s: float = 0.0) -> PoolOption:
    """The planner's view of a pool; the pool's own price and peak win over the catalog's."""
    overrides: dict[str, float] = {}
    if pool.price_per_device_hour > 0:
        overrides["price_per_device_hour"] = pool.price_per_device_hour
    if pool.peak_flops:
        overrides["peak_bf16_flops"] = pool.peak_flops
    return PoolOption(pool.name, lookup(pool.accelerator, overrides or None),
                      pool.devices_per_node, max_gang(pool), wait_s, pool.accelerator)


def job_request(job: PendingJobView, devices: int | None) -> PlanRequest:
    """The planner's request for a pending job on ``devices`` devices (None: any count)."""
    assert job.model_profile is not None
    fields = dict(job.model_profile)
    if fields.get("strategies") is not None:
        fields["strategies"] = tuple(fields["strategies"])  # a list once stored as JSON
    objective = "deadline" if job.deadline_s is not None else (
        "budget" if job.budget_usd is not None else "completion")
    return PlanRequest(
        profile=ModelProfile(**fields), seq_len=job.seq_len,
        global_batch=job.global_batch, total_steps=job.total_steps, precision=job.precision,
        micro_batch=job.micro_batch, devices=devices, objective=objective,
        deadline_s=job.deadline_s, budget_usd=job.budget_usd)


def _plan_for(job: PendingJobView, pool: PoolView, world_size: int, calibrated: Calibrated,
              placement: DeviceList | None = None) -> tuple[Plan, Candidate | None, str]:
    """The cost model's best fitting plan for a gang of ``world_size``, or data parallel.

    Tensor-parallel groups stay inside a node: on a placement that splits the gang over nodes,
    the tensor-parallel degree must divide the devices the gang has on every node.

    A deadline that no plan meets any more does not hold the job back: it gets the plan that
    finishes first, with a warning. A budget is a hard limit.
    Raises PlanError when the cost model predicts that no plan fits these devices."""
    if job.model_profile is not None and job.model_profile.get("trains", True):
        try:
            option = pool_option(pool)
        except KeyError:
            option = None  # an accelerator the catalog lacks: no prediction
        if option is not None:
            if placement is not None:
                per_node = Counter(node for node, _ in placement).values()
                option = replace(option, devices_per_node=math.gcd(*per_node))
            request = job_request(job, world_size)
            report = plan_job(request, [option], calibrated)
            warning = ""
            if report.best is None and request.deadline_s is not None:
                late = plan_job(replace(request, deadline_s=None, objective="completion"),
                                [option], calibrated)
                if late.best is not None:
                    report = late
                    warning = (f"the deadline can no longer be met: the fastest plan here "
                               f"finishes in {late.best.completion_s / 3600:.2f} h, the "
                               f"deadline is in {request.deadline_s / 3600:.2f} h")
            if report.best is None:
                raise PlanError(report.smallest_fix() or "no plan fits these devices")
            return report.best.plan, report.best, warning
    return Plan.data_parallel(world_size, job.global_batch, job.micro_batch, job.precision), \
        None, ""


@dataclass(frozen=True, slots=True)
class _Shape:
    """One gang size a job could take on one pool, with what the cost model says of it."""

    devices: int
    placement: DeviceList | None
    """Where it would run now; None if it has to wait."""
    wait_s: float
    plan: Plan | None
    """None until it can be placed (a single-size job is not planned while it waits)."""
    prediction: Candidate | None
    warning: str

    @property
    def completion_s(self) -> float:
        run_s = self.prediction.run_time_s if self.prediction is not None else math.inf
        return self.wait_s + run_s

    def describe(self) -> str:
        run = "?" if self.prediction is None else f"{self.prediction.run_time_s / 3600:.2f} h"
        wait = "now" if self.placement is not None else (
            "unknown wait" if math.isinf(self.wait_s) else f"after {self.wait_s / 3600:.2f} h")
        return f"{self.devices} devices {wait}, runs {run}"


def _shapes(job: PendingJobView, pool: PoolView, free: FreeView,
            running: Sequence[RunningJobView], calibrated: Calibrated,
            config: PolicyConfig) -> tuple[list[_Shape], list[str]]:
    """The shapes to weigh, best first, and why the others cannot be (cost-model refusals).

    A job of one size is planned only once it can be placed (most pending jobs wait, and
    planning them every cycle would cost the cycle its speed); a moldable job's sizes are all
    planned, since their predicted completions decide between them."""
    sizes = gang_shapes(job, pool)
    if job.device_range is not None and not config.moldable:
        sizes = sizes[:1]  # no weighing: the largest size the range allows
    shapes: list[_Shape] = []
    refused: list[str] = []
    for size in sizes:
        placement = place_gang(pool, size) if free.could_fit(pool, size) else None
        if len(sizes) == 1 and placement is None:
            return [_Shape(size, None, math.inf, None, None, "")], refused
        try:
            plan, prediction, warning = _plan_for(job, pool, size, calibrated, placement)
        except PlanError as err:
            refused.append(f"pool {pool.name}: {size} devices: {err}")
            continue
        wait_s = 0.0 if placement is not None else available_at(pool, size, running)
        shapes.append(_Shape(size, placement, wait_s, plan, prediction, warning))
    if len(shapes) > 1:
        if all(shape.prediction is not None for shape in shapes):
            shapes.sort(key=lambda shape: (shape.completion_s, shape.devices))
        else:  # no predictions: the largest size that starts now, else the smallest
            shapes.sort(key=lambda shape: (shape.placement is None,
                                           -shape.devices if shape.placement else shape.devices))
    return shapes, refused


@dataclass
class _ShapesOf:
    """A job's shapes on each pool (:func:`_shapes`), worked out once per pool and cycle."""

    job: PendingJobView
    free: dict[int, FreeView]
    running: Sequence[RunningJobView]
    calibrated: Calibrated
    config: PolicyConfig
    known: dict[int, tuple[list[_Shape], list[str]]] = field(default_factory=dict)

    def __call__(self, pool: PoolView) -> tuple[list[_Shape], list[str]]:
        if pool.pool_id not in self.known:
            if pool.pool_id not in self.free:
                self.free[pool.pool_id] = FreeView.of(pool)
            self.known[pool.pool_id] = _shapes(self.job, pool, self.free[pool.pool_id],
                                               self.running, self.calibrated, self.config)
        return self.known[pool.pool_id]


def _best_pool_first(job: PendingJobView, pools: Sequence[PoolView],
                     shapes_on: Callable[[PoolView], tuple[list[_Shape], list[str]]],
                     ) -> list[PoolView]:
    """The pools that can start the job now and have a prediction first, best first for its
    objective (the cost model's ranking, as ``corral plan`` shows it); the rest after, in their
    order. Where fewer than two such pools exist the order stays as it was.

    A job never waits for a better pool while another can start it: predicted waits are
    estimates, a free device is not."""
    objective = "deadline" if job.deadline_s is not None else (
        "budget" if job.budget_usd is not None else "completion")
    ranked: list[tuple[tuple[float, ...], int, PoolView]] = []
    for index, pool in enumerate(pools):
        shapes = shapes_on(pool)[0]
        if shapes and shapes[0].placement is not None and shapes[0].prediction is not None:
            ranked.append((rank_key(objective, shapes[0].prediction), index, pool))
    if len(ranked) < 2:
        return list(pools)
    first = [pool for _, _, pool in sorted(ranked, key=lambda entry: entry[:2])]
    return first + [pool for pool in pools if pool not in first]


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
        shapes_on = _ShapesOf(job, free, running, calibrated[job.kind], config)
        if len(candidates) > 1:
            candidates = _best_pool_first(job, candidates, shapes_on)
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
