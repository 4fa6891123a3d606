"""How a pending job could run on one pool: its gang shapes, each planned by the cost model.

The cycle (:mod:`scheduler.cycle`) asks, for every pool that matches a job, which gang sizes
it could take (:func:`shapes_of`: placed now or after a predicted wait, each with the cost
model's best plan and prediction, best first), and, where several pools match, which pool to
try first (:func:`best_pool_first`). :func:`pool_option` and :func:`job_request` are the
planner's views of a pool and a job; ``corral plan`` uses them too. Pure: no database.
"""

from __future__ import annotations

import math
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
from scheduler.domain.resources import PendingJobView, PoolView, RunningJobView
from scheduler.policies.backfill import available_at
from scheduler.policies.config import PolicyConfig
from scheduler.policies.placement import (
    DeviceList,
    FreeView,
    gang_shapes,
    max_gang,
    place_gang,
    predicted,
)


def pool_option(pool: PoolView, wait_s: float = 0.0) -> PoolOption:
    """The planner's view of a pool; the pool's own price and peak win over the catalog's."""
    overrides: dict[str, float] = {}
    if pool.price_per_device_hour > 0:
        overrides["price_per_device_hour"] = pool.price_per_device_hour
    if pool.peak_flops:
        overrides["peak_bf16_flops"] = pool.peak_flops
    return PoolOption(pool.name, lookup(pool.accelerator, overrides or None),
                      pool.devices_per_node, max_gang(pool), wait_s, pool.accelerator)


def job_objective(job: PendingJobView) -> str:
    """What the planner ranks this job's plans by: its deadline, its budget, else completion."""
    if job.deadline_s is not None:
        return "deadline"
    return "budget" if job.budget_usd is not None else "completion"


def job_request(job: PendingJobView, devices: int | None) -> PlanRequest:
    """The planner's request for a pending job on ``devices`` devices (None: any count)."""
    assert job.model_profile is not None
    fields = dict(job.model_profile)
    if fields.get("strategies") is not None:
        fields["strategies"] = tuple(fields["strategies"])  # a list once stored as JSON
    return PlanRequest(
        profile=ModelProfile(**fields), seq_len=job.seq_len,
        global_batch=job.global_batch, total_steps=job.total_steps, precision=job.precision,
        micro_batch=job.micro_batch, devices=devices, objective=job_objective(job),
        deadline_s=job.deadline_s, budget_usd=job.budget_usd, pins=job.pins)


def plan_for(job: PendingJobView, pool: PoolView, world_size: int, calibrated: Calibrated,
              placement: DeviceList | None = None) -> tuple[Plan, Candidate | None, str]:
    """The cost model's best fitting plan for a gang of ``world_size``, or data parallel.

    Tensor-parallel groups stay inside a node: on a placement that splits the gang over nodes,
    the tensor-parallel degree must divide the devices the gang has on every node.

    A deadline that no plan meets any more does not hold the job back: it gets the plan that
    finishes first, with a warning. A budget is a hard limit.
    Raises PlanError when the cost model predicts that no plan fits these devices."""
    if predicted(job):
        try:
            option = pool_option(pool)
        except KeyError:
            option = None  # an accelerator the catalog lacks: no prediction
        if option is not None:
            if placement is not None:
                per_node = Counter(node for node, _ in placement).values()
                option = replace(option, devices_per_node=math.gcd(*per_node))
            request = job_request(job, world_size)
            # Every tick plans every pending shape: no search beyond these devices for a fix.
            report = plan_job(request, [option], calibrated, suggest_larger_gang=False)
            warning = ""
            if report.best is None and request.deadline_s is not None:
                late = plan_job(replace(request, deadline_s=None, objective="completion"),
                                [option], calibrated, suggest_larger_gang=False)
                if late.best is not None:
                    report = late
                    warning = (f"the deadline can no longer be met: the fastest plan here "
                               f"finishes in {late.best.completion_s / 3600:.2f} h, the "
                               f"deadline is in {request.deadline_s / 3600:.2f} h")
            if report.best is None:
                raise PlanError(report.smallest_fix() or "no plan fits these devices")
            return report.best.plan, report.best, warning
    if job.pins is not None:
        return pinned_plan(job, world_size), None, ""
    return Plan.data_parallel(world_size, job.global_batch, job.micro_batch, job.precision), \
        None, ""


def pinned_plan(job: PendingJobView, world_size: int) -> Plan:
    """The plan a job's ``parallelism:`` section fixes, for a model the cost model cannot
    weigh: every degree must be pinned then (PlanError otherwise)."""
    pins = job.pins
    assert pins is not None
    if pins.world_size is None or pins.strategy is None:
        raise PlanError(f"parallelism pins ({pins.describe()}) on a model the cost model does "
                        f"not know must name strategy, tp, dp_replicate and dp_shard")
    dp = (pins.dp_replicate or 1) * (pins.dp_shard or 1)
    per_rank = job.global_batch // dp
    micro = job.micro_batch or per_rank
    return Plan(pins.strategy, world_size, pins.dp_replicate or 1, pins.dp_shard or 1,
                pins.tp or 1, 1, micro, max(1, per_rank // micro),
                bool(pins.activation_checkpointing), job.precision,
                ).validate(world_size)


@dataclass(frozen=True, slots=True)
class Shape:
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


def shapes_of(job: PendingJobView, pool: PoolView, free: FreeView,
            running: Sequence[RunningJobView], calibrated: Calibrated,
            config: PolicyConfig) -> tuple[list[Shape], list[str]]:
    """The shapes to weigh, best first, and why the others cannot be (cost-model refusals).

    A job of one size is planned only once it can be placed (most pending jobs wait, and
    planning them every cycle would cost the cycle its speed); a moldable job's sizes are all
    planned, since their predicted completions decide between them."""
    sizes = gang_shapes(job, pool)
    if job.device_range is not None and not config.moldable:
        sizes = sizes[:1]  # no weighing: the largest size the range allows
    shapes: list[Shape] = []
    refused: list[str] = []
    for size in sizes:
        placement = place_gang(pool, size) if free.could_fit(pool, size) else None
        if len(sizes) == 1 and placement is None:
            return [Shape(size, None, math.inf, None, None, "")], refused
        try:
            plan, prediction, warning = plan_for(job, pool, size, calibrated, placement)
        except PlanError as err:
            refused.append(f"pool {pool.name}: {size} devices: {err}")
            continue
        wait_s = 0.0 if placement is not None else available_at(pool, size, running)
        shapes.append(Shape(size, placement, wait_s, plan, prediction, warning))
    if len(shapes) > 1:
        if all(shape.prediction is not None for shape in shapes):
            shapes.sort(key=lambda shape: (shape.completion_s, shape.devices))
        else:  # no predictions: the largest size that starts now, else the smallest
            shapes.sort(key=lambda shape: (shape.placement is None,
                                           -shape.devices if shape.placement else shape.devices))
    return shapes, refused


@dataclass
class ShapesOf:
    """A job's shapes on each pool (:func:`shapes_of`), worked out once per pool and cycle."""

    job: PendingJobView
    free: dict[int, FreeView]
    running: Sequence[RunningJobView]
    calibrated: Calibrated
    config: PolicyConfig
    known: dict[int, tuple[list[Shape], list[str]]] = field(default_factory=dict)

    def __call__(self, pool: PoolView) -> tuple[list[Shape], list[str]]:
        if pool.pool_id not in self.known:
            if pool.pool_id not in self.free:
                self.free[pool.pool_id] = FreeView.of(pool)
            self.known[pool.pool_id] = shapes_of(self.job, pool, self.free[pool.pool_id],
                                               self.running, self.calibrated, self.config)
        return self.known[pool.pool_id]


def best_pool_first(job: PendingJobView, pools: Sequence[PoolView],
                     shapes_on: Callable[[PoolView], tuple[list[Shape], list[str]]],
                     ) -> list[PoolView]:
    """The pools that can start the job now and have a prediction first, best first for its
    objective (the cost model's ranking, as ``corral plan`` shows it); the rest after, in their
    order. Where fewer than two such pools exist the order stays as it was.

    A job never waits for a better pool while another can start it: predicted waits are
    estimates, a free device is not."""
    objective = job_objective(job)
    ranked: list[tuple[tuple[float, ...], int, PoolView]] = []
    for index, pool in enumerate(pools):
        shapes = shapes_on(pool)[0]
        if shapes and shapes[0].placement is not None and shapes[0].prediction is not None:
            ranked.append((rank_key(objective, shapes[0].prediction), index, pool))
    if len(ranked) < 2:
        return list(pools)
    first = [pool for _, _, pool in sorted(ranked, key=lambda entry: entry[:2])]
    return first + [pool for pool in pools if pool not in first]
