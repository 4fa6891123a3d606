"""The scheduler's tick: reconcile, snapshot, cycle, commit, dispatch.

One :meth:`Ticker.tick` is:

0. Inventory, every 30 s: the nodes of pools whose backend discovers them (a Ray cluster's)
   follow what it reports (:func:`scheduler.inventory.refresh`).
1. Reconcile: SIGTERM gangs told to stop (a cancel requested through the API, a preemption not
   signalled yet; SIGKILL after the grace period), poll every gang that holds devices, ingest
   its progress, settle gangs that ended (succeeded, failed → retry while attempts remain,
   preempted → requeue, cancelled).
2. Snapshot the cluster in a read transaction.
3. Run the pure cycle (:func:`scheduler.cycle.run_cycle`).
4. Commit admissions in one write transaction: allocation rows, plan, ADMITTED + event. The
   database's unique index on live devices refuses a device that another writer took. Signal
   the gangs the cycle preempts.
5. Dispatch (:class:`scheduler.dispatch.Dispatcher`): hand each admitted job to its backend
   and launch its gang; RUNNING + event.

In server mode the tick runs under a :class:`~scheduler.db.lease.Fence`: every write
transaction first checks the scheduler lease, so a replica that no longer leads writes nothing
and its tick ends with :class:`StaleLeaderError` (docs/replicas.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.exc import IntegrityError

from scheduler import inventory
from scheduler.cycle import Admission, CycleResult, run_cycle
from scheduler.db import repo
from scheduler.db.lease import Fence
from scheduler.db.models import Job, Pool
from scheduler.db.session import Database
from scheduler.db.snapshot import policy_config, snapshot
from scheduler.dispatch import Dispatcher
from scheduler.domain.errors import BackendError
from scheduler.domain.spec import JobSpec
from scheduler.domain.state import LIVE_STATES, JobState
from scheduler.gangs.backend import DiscoversNodes, NodeReport
from scheduler.inventory import INVENTORY_EVERY_S
from scheduler.policies.config import Ordering
from scheduler.reconcile import Reconciler, backends_of_pools, fenced_write

log = logging.getLogger("corral.tick")

@dataclass
class TickReport:
    admitted: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    ended: dict[int, str] = field(default_factory=dict)
    pending: dict[int, str] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)

class Ticker:
    """The write side of the scheduler: one :meth:`tick` at a time over one database (module
    docstring), composed of a :class:`~scheduler.reconcile.Reconciler` (step 1) and a
    :class:`~scheduler.dispatch.Dispatcher` (step 5)."""

    def __init__(self, db: Database, reconciler: Reconciler, dispatcher: Dispatcher,
                 timer: Callable[[], float] = time.perf_counter,
                 ordering: Ordering = "fair_share", preemption: bool = True,
                 backfill: bool = True, moldable: bool = True) -> None:
        self.db = db
        self.reconciler = reconciler
        self.dispatcher = dispatcher
        self.timer = timer
        self.ordering: Ordering = ordering
        self.switches = {"preemption": preemption, "backfill": backfill, "moldable": moldable}
        self._next_inventory = float("-inf")
        self._spec_cache: dict[int, JobSpec] = {}
        """Parsed specs of pending jobs, kept between ticks (a spec never changes)."""

    def tick(self, fence: Fence | None = None) -> TickReport:
        """One pass of reconcile → snapshot → cycle → commit → dispatch (module docstring).

        With ``fence`` every write transaction of the tick first runs
        :func:`scheduler.db.lease.check`: once the lease has moved on (a higher epoch, or it
        expired) the write is rolled back and :class:`StaleLeaderError` propagates at once."""
        report = TickReport()
        mark = self.timer()
        self._refresh_inventory(fence)
        report.step_seconds["0_inventory"] = self.timer() - mark
        started = self.timer()
        self.reconciler.signal_preemptions(fence)
        report.ended = self.reconciler.reconcile(fence)
        report.step_seconds["1_reconcile"] = self.timer() - started

        mark = self.timer()
        with self.db.read() as session:
            config = policy_config(session, self.ordering, **self.switches)
            snap = snapshot(session, config, spec_cache=self._spec_cache)
        report.step_seconds["2_snapshot"] = self.timer() - mark

        mark = self.timer()
        result = run_cycle(snap, timer=self.timer, config=config)
        report.step_seconds["3_cycle"] = self.timer() - mark

        mark = self.timer()
        result = self.dispatcher.without_held(result)
        admitted = self._commit(result, fence)
        report.admitted = [a.job_id for a in admitted]
        report.pending = result.pending_reasons
        self.reconciler.signal_preemptions(fence)
        report.step_seconds["4_commit_preempt"] = self.timer() - mark

        mark = self.timer()
        for admission in admitted:
            if self.dispatcher.dispatch(admission, fence):
                report.started.append(admission.job_id)
        report.step_seconds["5_dispatch"] = self.timer() - mark
        log.debug("tick %s", report.step_seconds)
        return report

    def _refresh_inventory(self, fence: Fence | None = None) -> None:
        """Every :data:`~scheduler.inventory.INVENTORY_EVERY_S`, let the nodes of pools whose
        backend discovers them follow it: a Ray node that joined is added, one that left or
        died goes ``down`` (no new gangs), one back is ``ready``."""
        now = self.timer()
        if now < self._next_inventory:
            return
        self._next_inventory = now + INVENTORY_EVERY_S
        with self.db.read() as session:
            backend_of = backends_of_pools(session)
        reports: dict[int, list[NodeReport]] = {}
        # id() of each backend asked -> what it reported (None: it could not tell): one call
        # per cluster, however many pools it makes.
        listed: dict[int, list[NodeReport] | None] = {}
        for pool_id, (name, settings) in backend_of.items():
            backend = self.reconciler.backends.get(name, settings)
            if not isinstance(backend, DiscoversNodes):
                continue
            if id(backend) not in listed:
                try:
                    listed[id(backend)] = backend.nodes()
                except BackendError as err:
                    log.warning("pool %s: cannot list its nodes: %s", pool_id, err)
                    listed[id(backend)] = None
            found = listed[id(backend)]
            if found is not None:
                reports[pool_id] = found
        if not reports:
            return
        with fenced_write(self.db, fence) as session:
            for pool_id, found in reports.items():
                pool = session.get(Pool, pool_id)
                if pool is not None:
                    for row in inventory.refresh(session, pool, found):
                        log.info("pool %s: node %s %s", pool.name, row["node"], row["change"])

    def _commit(self, result: CycleResult, fence: Fence | None = None) -> list[Admission]:
        admitted: list[Admission] = []
        with fenced_write(self.db, fence) as session:
            for order in result.preemptions:
                victim = repo.get_job(session, order.job_id, lock=True)
                if (JobState(victim.state) in LIVE_STATES and not victim.preempt_requested
                        and not victim.cancel_requested):
                    victim.preempt_requested = True
                    repo.note(session, victim, order.reason, {"for_job": order.for_job_id})
            if result.pending_reasons:  # one batched statement, not one per waiting job
                session.execute(
                    update(cast(Table, Job.__table__))
                    .where(Job.id == bindparam("job_id"), Job.state == JobState.PENDING.value,
                           Job.pending_reason.is_distinct_from(bindparam("reason")))
                    .values(pending_reason=bindparam("reason")),
                    [{"job_id": job_id, "reason": reason}
                     for job_id, reason in result.pending_reasons.items()])
            for admission in result.admissions:
                job = repo.get_job(session, admission.job_id, lock=True)
                if job.state != JobState.PENDING.value:
                    continue  # cancelled since the snapshot
                try:
                    with session.begin_nested():
                        repo.allocate(session, job, admission.devices,
                                      lease_epoch=fence.epoch if fence else None)
                except IntegrityError:
                    log.warning("job %s: devices taken by another writer; retry next tick",
                                job.id)
                    continue
                job.plan = admission.plan.to_dict()
                job.pool_id = admission.pool_id
                job.pending_reason = None
                detail: dict[str, Any] = {
                    "pool": admission.pool_name, "plan": admission.plan.to_dict(),
                    "devices": [list(d) for d in admission.devices]}
                predicted = f"; {admission.warning}" if admission.warning else ""
                if admission.prediction is not None:
                    guess = admission.prediction
                    job.predicted_step_time_s = guess.step_time_s
                    job.predicted_run_time_s = guess.run_time_s
                    job.prediction = guess.calibration_inputs()
                    detail["prediction"] = {
                        "memory_bytes": guess.memory_bytes, "step_time_s": guess.step_time_s,
                        "run_time_s": guess.run_time_s, "price_usd": guess.price_usd,
                        "memory": guess.memory_explain, "step_time": guess.time_explain}
                    predicted = (f"; predicted {guess.memory_bytes / 2**30:.2f} GiB/device, "
                                 f"{guess.step_time_s * 1e3:.3g} ms/step{predicted}")
                note = f"; {admission.note}" if admission.note else ""
                repo.transition(session, job, JobState.ADMITTED,
                                f"admitted on pool {admission.pool_name}: "
                                f"{admission.plan.describe()}{predicted}{note}", detail)
                admitted.append(admission)
        return admitted
