"""The discrete-event simulator: a trace replayed through the real scheduling cycle.

Time is the trace's own clock, in seconds; nothing here reads the wall clock (a timer may be
injected, only to measure how long each cycle takes). Each step handles one timestamp:

1. Pop every event at the earliest time: *arrivals* (the job becomes pending, or is rejected
   as the service rejects it at submit — ``check_schedulable``: no pool could ever run it),
   *attempt ends* (devices freed; a failed attempt is retried from the start while
   ``failures < max_attempts``, as the service does) and *stops* (a preempted attempt stops
   ``stop_delay_s`` after it was told to; it keeps the work up to its last checkpoint and is
   pending again with the rest).
2. If a job is pending and the cycle could act — a device is free, or it may preempt (a pending
   job outranks a running one, or quotas may be reclaimed) — build the :class:`Snapshot` the
   service builds (``db/snapshot.py``): every pool with the free device indexes of each node,
   one :class:`PendingJobView` per pending job with its history, one :class:`RunningJobView`
   per running attempt (``views.py``) and, for the fair-share ordering, each tenant's dominant
   share of decayed usage (``usage.py``). Let the policy shape the views (``policy.py``) and
   call ``scheduler.cycle.run_cycle``, the very function the service runs, with the policy's
   :class:`PolicyConfig`. Cycles are coalesced per timestamp.
3. Carry out its result: preemption orders (the victim is marked stopping and its stop is
   scheduled), then admissions (devices taken; :class:`GroundTruth` says how long the attempt
   really runs on that pool and gang size, and whether it fails).
4. With ``validate``, check the invariants (:meth:`Simulator.check_invariants`); record a
   timeline sample.

What the cycle cannot express about a trace job (``views.py`` has the mapping):

- ``accelerator``: a view holds one type, so a job allowing several is narrowed, every cycle, to
  the type the policy chooses (default: the feasible allowed type with the most free devices).
- predictions: trace jobs have no model profile, so the cycle predicts no run time for a pending
  trace job: EASY backfill can use only its rule 2 (devices the reserved job will not need),
  and a moldable job takes the largest size that starts now (else the smallest). Running jobs
  do carry a predicted end (the noiseless run time), so reservations have a shadow time.
- gangs that must stay on one node (the pods of the Alibaba trace): the pools get backend
  ``local``, the one way the cycle knows single-node gangs.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from scheduler.cycle import CycleResult, PreemptionOrder, run_cycle
from scheduler.domain.capabilities import CAPABILITIES
from scheduler.domain.errors import UnschedulableError
from scheduler.domain.resources import PendingJobView, RunningJobView, Snapshot
from scheduler.policies.fairshare import (
    UsageRecord,
    capacity_by_accelerator,
    dominant_shares,
)
from scheduler.policies.placement import DeviceList, check_schedulable
from scheduler.sim.checks import check_quota, check_told_once
from scheduler.sim.cluster_state import ClusterState, InvariantError
from scheduler.sim.config import SimConfig, policy_config
from scheduler.sim.metrics import JobRecord, UtilizationSample, summarize
from scheduler.sim.policy import encode_order, policy_named
from scheduler.sim.result import SimResult, TimelineSample
from scheduler.sim.usage import UsageLedger
from scheduler.sim.views import (
    Attempt,
    checkpointed_s,
    pending_view,
    running_view,
    started_view,
)
from scheduler.sim.workload import ClusterSpec, TraceJob

Timer = Callable[[], float]
Cycle = Callable[..., CycleResult]
"""``run_cycle``'s signature: ``(snapshot, timer=..., config=...) -> CycleResult``."""

SIM_BACKEND = "sim"
"""Backend name of simulated pools whose gangs may span nodes."""
SINGLE_NODE_BACKEND = next(name for name, can in CAPABILITIES.items() if not can.multi_node)
"""A backend whose gangs the cycle keeps on one node (``local``)."""
_END, _ARRIVAL, _STOP = 0, 1, 2


def _no_clock() -> float:
    return 0.0


def window(
    jobs: Sequence[TraceJob], start_s: float = 0.0, limit: int | None = None
) -> tuple[TraceJob, ...]:
    """The jobs arriving at or after ``start_s``, in arrival order, at most ``limit`` of them."""
    chosen = sorted(
        (job for job in jobs if job.arrival_s >= start_s),
        key=lambda job: (job.arrival_s, job.job_id),
    )
    return tuple(chosen if limit is None else chosen[:limit])


class _Context:
    """The read-only :class:`~scheduler.sim.policy.PolicyContext` of one cycle."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    @property
    def now_s(self) -> float:
        return self._sim.now_s

    @property
    def total_devices(self) -> int:
        return self._sim.cluster.total_devices

    def attained_device_s(self, job_id: int) -> float:
        sim = self._sim
        attained = sim._held_device_s.get(job_id, 0.0)
        running = sim._running.get(job_id)
        if running is not None:
            attained += (sim.now_s - running.start_s) * len(running.devices)
        return attained

    def tenant_devices_in_use(self) -> Mapping[str, int]:
        use: dict[str, int] = {}
        for attempt in self._sim._running.values():
            tenant = self._sim._jobs[attempt.job_id].tenant
            use[tenant] = use.get(tenant, 0) + len(attempt.devices)
        return use

    def running(self) -> Sequence[Attempt]:
        return tuple(self._sim._running.values())

    def job(self, job_id: int) -> TraceJob:
        return self._sim._jobs[job_id]

    def free_devices(self, accelerator: str) -> int:
        return self._sim.state.free_by_accelerator.get(accelerator, 0)

    def tenant_weight(self, tenant: str) -> float:
        return self._sim.config.tenant_weights.get(tenant, 1.0)


class Simulator:
    """Replays ``jobs`` on ``cluster``; :meth:`run` to the end, or :meth:`step` by timestamp."""

    def __init__(
        self,
        jobs: Sequence[TraceJob],
        cluster: ClusterSpec,
        config: SimConfig | None = None,
        *,
        timer: Timer | None = None,
        cycle: Cycle = run_cycle,
    ) -> None:
        """``timer`` measures cycle wall time only; ``cycle`` is the real ``run_cycle`` except in
        tests that prove ``validate`` catches a faulty one."""
        self.config = config or SimConfig()
        self.cluster = cluster
        self.policy = (
            policy_named(self.config.policy)
            if isinstance(self.config.policy, str)
            else self.config.policy
        )
        self._timer = timer or _no_clock
        self._measured = timer is not None
        self._cycle = cycle
        self.cycle_config = policy_config(self.policy, self.config)
        """What every cycle of this replay runs with."""
        ordering = self.cycle_config.ordering
        self._reads_wait = ordering == "fair_share" or (
            ordering == "las" and self.cycle_config.las.promote_knob is not None
        )
        self._reads_shares = ordering == "fair_share"
        self.now_s = 0.0

        ordered = window(jobs)
        self._jobs = {job.job_id: job for job in ordered}
        if len(self._jobs) != len(ordered):
            raise ValueError("job ids must be distinct")
        self._rank = {job.job_id: rank for rank, job in enumerate(ordered)}

        backend = SINGLE_NODE_BACKEND if self.config.single_node_gangs else SIM_BACKEND
        self.state = ClusterState(cluster, backend)
        """Who holds which device (mutable: tests corrupt it on purpose)."""
        self._types = tuple(cluster.devices_by_accelerator())
        self._capacity = capacity_by_accelerator(self.state.static_pools)
        self._ledger = UsageLedger(self.config.fair_share.half_life_s, self.config.validate)

        self._pending: dict[int, PendingJobView] = {}
        self._choices: dict[int, dict[str, PendingJobView]] = {}
        """Per-accelerator views of jobs that may run on several types (module docstring)."""
        self._narrowed: set[int] = set()
        self._feasible: dict[tuple[object, ...], str | None] = {}
        self._running: dict[int, Attempt] = {}
        self._started: dict[int, RunningJobView] = {}
        self._stopping: set[int] = set()
        """Running jobs told to stop (their stop is scheduled)."""
        self._told: dict[int, int] = {}
        """Preemption orders received by each running job's current attempt."""
        self._attempts: dict[int, int] = {}
        self._failures: dict[int, int] = {}
        self._remaining: dict[int, float] = {}
        """Share of each job's work still to do (1 until a preempted attempt saved some)."""
        self._queued_at: dict[int, float] = {}
        self._first_start: dict[int, float] = {}
        self._held_s: dict[int, float] = {}
        self._held_device_s: dict[int, float] = {}
        self._last_run_s: dict[int, float] = {}
        self._preempted: dict[int, int] = {}
        self._lost_device_s = 0.0
        self._records: list[JobRecord] = []
        self._rejected: dict[int, str] = {}
        self._gave_up: list[int] = []
        self._timeline: list[TimelineSample] = []
        self._cycle_seconds: list[float] = []
        self._failed_attempts = 0
        self._wall_s = 0.0

        self._sequence = len(ordered)
        self._events: list[tuple[float, int, int, int, int]] = [
            (job.arrival_s, rank, _ARRIVAL, job.job_id, 0) for rank, job in enumerate(ordered)
        ]
        heapq.heapify(self._events)

    # --- read-only state, for checks and policies ---------------------------------------------

    @property
    def pending(self) -> Mapping[int, PendingJobView]:
        """Pending jobs' views by job id (read-only, live)."""
        return MappingProxyType(self._pending)

    @property
    def running(self) -> Mapping[int, Attempt]:
        """Running attempts by job id (read-only, live)."""
        return MappingProxyType(self._running)

    @property
    def stopping(self) -> frozenset[int]:
        """Running jobs told to stop, not stopped yet."""
        return frozenset(self._stopping)

    @property
    def busy_devices(self) -> int:
        return self.state.busy_devices

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> SimResult:
        """Step until no event is left; the result of the whole replay."""
        started = self._timer()
        while self.step():
            pass
        self._wall_s += self._timer() - started
        return self.result()

    def step(self) -> bool:
        """Handle the next timestamp (steps 1-4 of the module docstring); False when done."""
        if not self._events:
            return False
        self.now_s = self._events[0][0]
        # 1. Every event at this time.
        while self._events and self._events[0][0] == self.now_s:
            _, _, kind, job_id, attempt = heapq.heappop(self._events)
            if kind == _ARRIVAL:
                self._queued_at[job_id] = self.now_s
                self._arrive(self._jobs[job_id])
            elif kind == _END:
                self._end(job_id, attempt)
            else:
                self._stop(job_id, attempt)
        # 2-3. One cycle, if it could act.
        if self._pending and (self.state.free_devices > 0 or self._could_preempt()):
            self._run_cycle()
        # 4. Check and record.
        if self.config.validate:
            self.check_invariants()
        self._timeline.append(
            TimelineSample(self.now_s, self.busy_devices, len(self._pending), len(self._running))
        )
        return True

    def _push(self, time_s: float, kind: int, job_id: int, attempt: int) -> None:
        heapq.heappush(self._events, (time_s, self._sequence, kind, job_id, attempt))
        self._sequence += 1

    def _could_preempt(self) -> bool:
        """Whether a cycle with no free device could still act: preempt a running job for a
        pending job of higher priority, or reclaim quota."""
        if not self.cycle_config.preemption or len(self._running) == len(self._stopping):
            return False
        if self.cycle_config.quotas.tenants:
            return True
        lowest = min(
            self._jobs[job_id].priority for job_id in self._running if job_id not in self._stopping
        )
        return any(view.priority > lowest for view in self._pending.values())

    def _arrive(self, job: TraceJob) -> None:
        """The job is pending (arrival or requeue), or rejected as the service would."""
        options: tuple[str | None, ...] = job.accelerators or (None,)
        if not job.accelerators and self.policy.narrows_any and len(self._types) > 1:
            options = self._types
        views: dict[str | None, PendingJobView] = {}
        reason = ""
        for accelerator in options:
            view = self.policy.prepare(
                pending_view(
                    job,
                    accelerator,
                    self._rank[job.job_id],
                    self._held_device_s.get(job.job_id, 0.0),
                    self._last_run_s.get(job.job_id, 0.0),
                ),
                job,
            )
            problem = self._unschedulable(view)
            if problem is None:
                views[accelerator] = view
            else:
                reason = reason or problem
        if not views:
            self._rejected[job.job_id] = reason
            return
        if len(views) > 1:
            self._choices[job.job_id] = {str(a): view for a, view in views.items()}
            if len(job.accelerators) > 1:
                self._narrowed.add(job.job_id)
        self._pending[job.job_id] = next(iter(views.values()))

    def _unschedulable(self, view: PendingJobView) -> str | None:
        """Why the service would refuse ``view`` at submit (no pool could ever run it), or
        None; remembered per (accelerator, devices, range)."""
        key = (view.accelerator, view.devices, view.device_range, view.global_batch)
        if key not in self._feasible:
            try:
                check_schedulable(view, self.state.static_pools)
                self._feasible[key] = None
            except UnschedulableError as error:
                self._feasible[key] = str(error)
        return self._feasible[key]

    def _finish(self, attempt: Attempt) -> float:
        """Take a running attempt off its devices and into the job's history; its length."""
        job_id = attempt.job_id
        job = self._jobs[job_id]
        del self._running[job_id]
        del self._started[job_id]
        self._stopping.discard(job_id)
        self._told.pop(job_id, None)
        self.state.release(attempt.pool_id, attempt.devices)
        held_s = self.now_s - attempt.start_s
        self._held_s[job_id] = self._held_s.get(job_id, 0.0) + held_s
        self._held_device_s[job_id] = self._held_device_s.get(job_id, 0.0) + held_s * len(
            attempt.devices
        )
        self._last_run_s[job_id] = held_s
        self._ledger.close(
            UsageRecord(job.tenant, attempt.accelerator, len(attempt.devices), attempt.start_s,
                        self.now_s)
        )  # fmt: skip
        return held_s

    def _end(self, job_id: int, attempt_number: int) -> None:
        attempt = self._running.get(job_id)
        if attempt is None or attempt.attempt != attempt_number:
            return  # stale: that attempt was stopped by a preemption
        self._finish(attempt)
        job = self._jobs[job_id]
        if attempt.failed:
            self._failed_attempts += 1
            failures = self._failures[job_id] = self._failures.get(job_id, 0) + 1
            if failures < self.config.max_attempts:
                self._remaining[job_id] = 1.0  # a failed run restarts from the beginning
                self._queued_at[job_id] = self.now_s
                self._arrive(job)  # pending again, keeping its place by age
            else:
                self._gave_up.append(job_id)
            return
        pool = self.state.spec(attempt.pool_id)
        devices = len(attempt.devices)
        self._records.append(
            JobRecord(
                job_id=job_id,
                tenant=job.tenant,
                arrival_s=job.arrival_s,
                start_s=self._first_start[job_id],
                end_s=self.now_s,
                devices=devices,
                deadline_s=job.deadline_s,
                preemptions=self._preempted.get(job_id, 0),
                ideal_run_s=self.config.truth.run_time_s(job, pool, devices),
                run_s=self._held_s[job_id],
            )
        )

    def _stop(self, job_id: int, attempt_number: int) -> None:
        """A preempted attempt stops: it keeps the work up to its last checkpoint, loses the
        rest, and the job is pending again with what is left."""
        attempt = self._running.get(job_id)
        if attempt is None or attempt.attempt != attempt_number:
            return  # it ended (or failed) before it stopped
        elapsed_s = self._finish(attempt)
        saved_s = checkpointed_s(elapsed_s, self.config.checkpoint_interval_s)
        self._lost_device_s += (elapsed_s - saved_s) * len(attempt.devices)
        left = attempt.remaining_fraction - saved_s / attempt.full_run_s
        # It stopped before its end, so work is left; keep the share positive under rounding.
        self._remaining[job_id] = max(left, attempt.remaining_fraction * 1e-9)
        self._preempted[job_id] = self._preempted.get(job_id, 0) + 1
        self._queued_at[job_id] = self.now_s
        self._arrive(self._jobs[job_id])

    # --- the cycle ----------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        """The cluster, pending and running jobs and tenant shares as the service shows them."""
        context = _Context(self)
        views = tuple(self._pending.values())
        if self._choices:
            choices = self._choices
            views = tuple(
                self._now(view, context) if view.job_id in choices else view for view in views
            )
        if self._reads_wait:
            queued = self._queued_at
            now = self.now_s
            views = tuple(replace(view, waited_s=now - queued[view.job_id]) for view in views)
        order = self.policy.order(views, context)
        if order is not None:
            views = encode_order(order)
        interval = self.config.checkpoint_interval_s
        running = tuple(
            running_view(
                self._started[job_id], attempt, self.now_s, interval, job_id in self._stopping
            )
            for job_id, attempt in self._running.items()
        )
        shares = self._shares() if self._reads_shares else {}
        return Snapshot(
            pools=self.state.pool_views(), pending=views, running=running, tenant_shares=shares
        )

    def _now(self, view: PendingJobView, context: _Context) -> PendingJobView:
        """``view`` as of this cycle: the allowed type the policy chooses, or the one with the
        most free devices now."""
        choices = self._choices[view.job_id]
        chosen = self.policy.choose(self._jobs[view.job_id], tuple(choices), context)
        if chosen is None:
            free = self.state.free_by_accelerator
            chosen = max(choices, key=lambda accelerator: free[accelerator])
        return choices[chosen]

    def _open_records(self) -> list[UsageRecord]:
        return [
            UsageRecord(
                self._jobs[a.job_id].tenant, a.accelerator, len(a.devices), a.start_s, self.now_s
            )
            for a in self._running.values()
        ]

    def _shares(self) -> dict[str, float]:
        """Each tenant's weighted dominant share of decayed usage, as ``db/snapshot.py``."""
        usage = self._ledger.usage(self.now_s, self._open_records())
        return dominant_shares(
            usage, self._capacity, self.config.fair_share.half_life_s, self.config.tenant_weights
        )

    def _run_cycle(self) -> None:
        snapshot = self._snapshot()
        started = self._timer()
        result = self._cycle(snapshot, timer=self._timer, config=self.cycle_config)
        self._cycle_seconds.append(self._timer() - started)
        for order in result.preemptions:
            self._preempt(order)
        for admission in result.admissions:
            view = self._pending.get(admission.job_id)
            if view is None:
                raise InvariantError(
                    f"the cycle admitted job #{admission.job_id}, which is not pending"
                )
            self._start(view, admission.pool_id, admission.devices, admission.plan.world_size)

    def _preempt(self, order: PreemptionOrder) -> None:
        """Tell the victim to stop: it stops ``stop_delay_s`` from now (:meth:`_stop`). An
        order for a job already stopping changes nothing; ``validate`` reports it."""
        attempt = self._running.get(order.job_id)
        if attempt is None:
            raise InvariantError(
                f"the cycle preempts job #{order.job_id} for #{order.for_job_id}, which is not "
                f"running"
            )
        self._told[order.job_id] = self._told.get(order.job_id, 0) + 1
        if order.job_id in self._stopping:
            return
        self._stopping.add(order.job_id)
        self._push(self.now_s + self.config.stop_delay_s, _STOP, order.job_id, attempt.attempt)

    def _start(self, view: PendingJobView, pool_id: int, devices: DeviceList, world: int) -> None:
        """Give ``devices`` to the job and schedule the end of this attempt."""
        job = self._jobs[view.job_id]
        gang = view.device_range or (job.max_devices, job.max_devices)
        self.state.allocate(job.job_id, gang, pool_id, devices, world)
        del self._pending[job.job_id]
        self._choices.pop(job.job_id, None)
        pool = self.state.spec(pool_id)

        number = self._attempts[job.job_id] = self._attempts.get(job.job_id, 0) + 1
        self._first_start.setdefault(job.job_id, self.now_s)
        remaining = self._remaining.get(job.job_id, 1.0)
        # The injected failure strikes until it has struck once (a preempted attempt may
        # stop before it).
        failures = self._failures.get(job.job_id, 0)
        outcome = self.config.truth.outcome(
            job, pool, len(devices), attempt=failures + 1, remaining_fraction=remaining
        )
        attempt = Attempt(
            job_id=job.job_id,
            attempt=number,
            pool_id=pool_id,
            accelerator=pool.accelerator,
            devices=devices,
            start_s=self.now_s,
            end_s=self.now_s + outcome.run_s,
            failed=outcome.failed,
            remaining_fraction=remaining,
            predicted_run_s=job.run_time_s(pool.accelerator, len(devices)) * remaining,
            full_run_s=self.config.truth.run_time_s(job, pool, len(devices)),
        )
        self._running[job.job_id] = attempt
        self._started[job.job_id] = started_view(job, attempt)
        self._push(attempt.end_s, _END, job.job_id, number)

    def check_invariants(self) -> None:
        """Raise :class:`InvariantError` on the first broken rule: the devices
        (:meth:`ClusterState.check`: none held twice, free + allocated = total per node), no job
        both pending and running, no attempt told to stop twice, usage within quota
        (``checks.py``), the folded usage equal to ``usage_at`` over every record, then
        ``config.checks``."""
        self.state.check({job_id: a.devices for job_id, a in self._running.items()})
        both = self._pending.keys() & self._running.keys()
        if both:
            raise InvariantError(f"jobs {sorted(both)} are both pending and running")
        check_told_once(self._told)
        check_quota(
            (
                (self._jobs[a.job_id].tenant, a.accelerator, len(a.devices))
                for a in self._running.values()
            ),
            self.cycle_config.quotas,
        )
        if self._reads_shares:
            self._check_usage()
        for check in self.config.checks:
            check(self)

    def _check_usage(self) -> None:
        opened = self._open_records()
        folded = self._ledger.usage(self.now_s, opened)
        exact = self._ledger.recomputed(self.now_s, opened)
        for tenant in folded.keys() | exact.keys():
            for kind in folded.get(tenant, {}).keys() | exact.get(tenant, {}).keys():
                got, want = (
                    folded.get(tenant, {}).get(kind, 0.0),
                    exact.get(tenant, {}).get(kind, 0.0),
                )
                if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-6):
                    raise InvariantError(
                        f"decayed usage of {tenant} on {kind}: folded {got}, recomputed {want}"
                    )

    # --- the result ---------------------------------------------------------------------------

    def result(self) -> SimResult:
        """What has happened so far (after :meth:`run`: the whole replay)."""
        metrics = None
        if self._records:
            timeline = [UtilizationSample(s.time_s, s.busy_devices) for s in self._timeline]
            metrics = summarize(
                self._records, timeline, self.cluster.total_devices, self.config.tenant_weights
            )
        return SimResult(
            policy=self.policy.name,
            jobs=len(self._jobs),
            total_devices=self.cluster.total_devices,
            records=tuple(self._records),
            timeline=tuple(self._timeline),
            cycle_seconds=tuple(self._cycle_seconds) if self._measured else (),
            wall_s=self._wall_s,
            rejected=dict(self._rejected),
            gave_up=tuple(self._gave_up),
            unfinished=tuple(sorted(self._pending)) if not self._events else (),
            failed_attempts=self._failed_attempts,
            narrowed=len(self._narrowed),
            metrics=metrics,
            preemptions=sum(self._preempted.values()),
            lost_device_s=self._lost_device_s,
        )


def simulate(
    jobs: Sequence[TraceJob],
    cluster: ClusterSpec,
    config: SimConfig | None = None,
    *,
    timer: Timer | None = None,
) -> SimResult:
    """Replay ``jobs`` on ``cluster`` under ``config`` to the end (see the module docstring)."""
    return Simulator(jobs, cluster, config, timer=timer).run()


__all__ = [
    "Attempt",
    "InvariantError",
    "SimConfig",
    "SimResult",
    "Simulator",
    "TimelineSample",
    "policy_config",
    "simulate",
    "window",
]
