"""The scheduler's tick: reconcile, snapshot, cycle, commit, dispatch.

One :meth:`Ticker.tick` is:

1. Reconcile: SIGTERM gangs told to stop (a cancel requested through the API, a preemption not
   signalled yet; SIGKILL after the grace period), poll every gang that holds devices, ingest
   its progress, settle gangs that ended (succeeded, failed → retry while attempts remain,
   preempted → requeue, cancelled).
2. Snapshot the cluster in a read transaction.
3. Run the pure cycle (:func:`scheduler.cycle.run_cycle`).
4. Commit admissions in one write transaction: allocation rows, plan, ADMITTED + event. The
   database's unique index on live devices refuses a device that another writer took. Signal
   the gangs the cycle preempts.
5. Dispatch: write each admitted job's job file and launch its gang; RUNNING + event.

In server mode the tick runs under a :class:`~scheduler.db.lease.Fence`: every write
transaction first checks the scheduler lease, so a replica that no longer leads writes nothing
and its tick ends with :class:`StaleLeaderError` (docs/replicas.md).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.exc import IntegrityError

from scheduler.cycle import Admission, CycleResult, run_cycle
from scheduler.db import repo
from scheduler.db.lease import Fence
from scheduler.db.models import Job, Tenant
from scheduler.db.session import Database
from scheduler.db.snapshot import policy_config, snapshot
from scheduler.domain.errors import (
    BackendError,
    CorralError,
    LaunchRefusedError,
    StaleLeaderError,
)
from scheduler.domain.roots import AllowedRoots, within
from scheduler.domain.spec import (
    JobSpec,
    env_of,
)
from scheduler.domain.state import LIVE_STATES, JobState
from scheduler.gangs.backend import Backend
from scheduler.gangs.protocol import JobFile, JobIdentity, LaunchRequest
from scheduler.policies.config import Ordering
from scheduler.reconcile import DEFAULT_GRACE_S, UNLAUNCHED_TIMEOUT_S, Reconciler
from scheduler.trust import JobTrust

log = logging.getLogger("corral.tick")

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
HOLD_S = 30.0
"""Seconds a job whose launch met a full disk waits before it is admitted again."""


class _NotWanted(Exception):
    """A launched gang whose job moved on meanwhile (cancelled, or taken back)."""


@dataclass
class TickReport:
    admitted: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    ended: dict[int, str] = field(default_factory=dict)
    pending: dict[int, str] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)

class Ticker(Reconciler):
    """The write side of the scheduler: one :meth:`tick` at a time over one database and the
    backends that run its pools (module docstring); reconciling is :class:`Reconciler`'s."""

    def __init__(self, db: Database, backends: Mapping[str, Backend], runs_dir: Path,
                 grace_s: float = DEFAULT_GRACE_S,
                 timer: Callable[[], float] = time.perf_counter,
                 ordering: Ordering = "fair_share", preemption: bool = True,
                 backfill: bool = True, moldable: bool = True,
                 unlaunched_timeout_s: float = UNLAUNCHED_TIMEOUT_S,
                 trust: JobTrust | None = None, records_dir: Path | None = None) -> None:
        super().__init__(db, backends, runs_dir, grace_s, unlaunched_timeout_s, trust,
                         records_dir)
        self.timer = timer
        self.ordering: Ordering = ordering
        self.switches = {"preemption": preemption, "backfill": backfill, "moldable": moldable}
        self._spec_cache: dict[int, JobSpec] = {}
        """Parsed specs of pending jobs, kept between ticks (a spec never changes)."""
        self._held: dict[int, tuple[float, str]] = {}
        """Jobs whose launch met a full disk: job id -> (timer value until which the cycle's
        admissions of it are dropped, the reason shown as its pending reason)."""


    def tick(self, fence: Fence | None = None) -> TickReport:
        """One pass of reconcile → snapshot → cycle → commit → dispatch (module docstring).

        With ``fence`` every write transaction of the tick first runs
        :func:`scheduler.db.lease.check`: once the lease has moved on (a higher epoch, or it
        expired) the write is rolled back and :class:`StaleLeaderError` propagates at once."""
        report = TickReport()
        started = self.timer()
        self._signal_preemptions(fence)
        report.ended = self._reconcile(fence)
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
        result = self._without_held(result)
        admitted = self._commit(result, fence)
        report.admitted = [a.job_id for a in admitted]
        report.pending = result.pending_reasons
        self._signal_preemptions(fence)
        report.step_seconds["4_commit_preempt"] = self.timer() - mark

        mark = self.timer()
        for admission in admitted:
            if self._dispatch(admission, fence):
                report.started.append(admission.job_id)
        report.step_seconds["5_dispatch"] = self.timer() - mark
        log.debug("tick %s", report.step_seconds)
        return report

    def _without_held(self, result: CycleResult) -> CycleResult:
        """The cycle's result less the admissions of held jobs (their devices stay free this
        tick, which only ever leaves room), with the hold as their pending reason."""
        now = self.timer()
        self._held = {job: hold for job, hold in self._held.items() if hold[0] > now}
        if not self._held:
            return result
        held = {a.job_id for a in result.admissions if a.job_id in self._held}
        reasons = {**result.pending_reasons,
                   **{job: self._held[job][1] for job in held}}
        return replace(result, admissions=tuple(a for a in result.admissions
                                                if a.job_id not in held),
                       pending_reasons=reasons)

    def _commit(self, result: CycleResult, fence: Fence | None = None) -> list[Admission]:
        admitted: list[Admission] = []
        with self._write(fence) as session:
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

    def _dispatch(self, admission: Admission, fence: Fence | None = None) -> bool:
        """Launch an admitted job's gang and record it RUNNING; False if it did not start.

        A gang whose RUNNING commit is refused, because this replica lost the lease meanwhile
        or the job was cancelled while it launched, is killed at once: no gang runs that the
        database does not know."""
        backend = self.backends.get(admission.backend)
        trust_error: CorralError | None = None
        with self._write(fence) as session:
            job = repo.get_job(session, admission.job_id, lock=True)
            if job.state != JobState.ADMITTED.value:
                return False
            job.attempts += 1
            run_dir = Path(job.run_dir or self.runs_dir / f"job-{job.id}")
            checkpoint = self._resume_point(session, job)
            try:
                identity, roots = self._trust_for(session, job)
            except CorralError as err:
                identity, roots, trust_error = None, None, err
            job_file = JobFile(job_id=job.id, attempt=job.attempts, spec=job.spec,
                               plan=admission.plan.to_dict(), run_dir=str(run_dir),
                               resume_from=checkpoint,
                               allowed_roots=roots.to_dict() if roots is not None else None)
            held = repo.live_devices(session, job.id)
            attempt = job.attempts
        records = self.records_dir / f"job-{admission.job_id}"
        request = LaunchRequest(job_id=admission.job_id, attempt=attempt,
                                world_size=admission.plan.world_size, job=job_file,
                                log_path=str(records / f"attempt-{attempt}.log"),
                                nodes=admission.plan.nodes, devices=held,
                                env=env_of(job.spec), run_dir=str(run_dir), identity=identity)
        try:
            if trust_error is not None:
                raise LaunchRefusedError(f"the tenant's job identity: {trust_error}")
            if backend is None:
                raise BackendError(f"no backend {admission.backend!r} is configured here")
            handle = backend.launch(request)
        except (BackendError, OSError) as err:
            with self._write(fence) as session:
                job = repo.get_job(session, admission.job_id, lock=True)
                if job.state != JobState.ADMITTED.value or job.attempts != attempt:
                    return False  # cancelled meanwhile: nothing is left to fail
                repo.release(session, job)
                if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
                    # Not the job's fault and no attempt spent: hold it until space returns.
                    job.attempts -= 1
                    reason = (f"held: no space left for its files ({err}); tried again every "
                              f"{HOLD_S:.0f} s")
                    repo.transition(session, job, JobState.PENDING, reason)
                    job.pending_reason = reason
                    self._held[job.id] = (self.timer() + HOLD_S, reason)
                    return False
                repo.transition(session, job, JobState.FAILED, f"launch failed: {err}")
                self._maybe_retry(session, job, not isinstance(err, LaunchRefusedError))
            return False
        try:
            with self._write(fence) as session:
                job = repo.get_job(session, admission.job_id, lock=True)
                if job.state != JobState.ADMITTED.value or job.attempts != attempt:
                    raise _NotWanted(f"job {job.id} is {job.state} at attempt {job.attempts}")
                job.backend_handle = handle
                resumed = f", resuming from {checkpoint}" if checkpoint else ""
                repo.transition(session, job, JobState.RUNNING,
                                f"attempt {attempt} started on {admission.backend}{resumed}",
                                {"attempt": attempt, "resume_from": checkpoint,
                                 "log": request.log_path})
        except (StaleLeaderError, _NotWanted) as err:
            log.warning("job %s attempt %s: launched but not recorded (%s); killing the gang",
                        admission.job_id, attempt, err)
            backend.cancel(handle, 0.0)
            if isinstance(err, StaleLeaderError):
                raise
            return False
        return True

    def _trust_for(self, session: Any, job: Job) -> tuple[JobIdentity | None,
                                                          AllowedRoots | None]:
        """Whom the job's ranks run as and which folders they may read (server mode).

        A ``model.path`` inside the runs folder got there only by the scheduler resolving a
        ``job:`` reference of the job's own tenant at submit (no root covers the runs folder),
        so that export is added to the roots the ranks check."""
        if self.trust is None:
            return None, None
        tenant = session.get(Tenant, job.tenant_id)
        roots = self.trust.roots_for(tenant)
        model_path = (job.spec.get("model") or {}).get("path")
        if isinstance(model_path, str) and within(Path(model_path), [str(self.runs_dir)]):
            roots = roots.with_model_folder(model_path)
        return self.trust.identity_for(tenant), roots
