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

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scheduler.calibrate import recalibrate
from scheduler.cycle import Admission, CycleResult, run_cycle
from scheduler.db import lease, repo
from scheduler.db.lease import Fence
from scheduler.db.models import Allocation, Job, as_utc, utcnow
from scheduler.db.session import Database
from scheduler.db.snapshot import policy_config, snapshot
from scheduler.domain.errors import (
    BackendError,
    StaleLeaderError,
)
from scheduler.domain.spec import (
    JobSpec,
    env_of,
)
from scheduler.domain.state import LIVE_STATES, JobState
from scheduler.policies.config import Ordering
from scheduler.progress import apply_progress
from workers.backends.base import Backend, GangPhase, GangStatus
from workers.protocol import JobFile, LaunchRequest, read_progress

log = logging.getLogger("corral.tick")

UNLAUNCHED_TIMEOUT_S = 120.0
"""Seconds an ADMITTED job may wait for its launch before another scheduler takes it back
(``SchedulerService(unlaunched_timeout_s=...)``, ``CORRAL_UNLAUNCHED_TIMEOUT_S``)."""

DEFAULT_GRACE_S = 30.0
"""Seconds a gang gets between SIGTERM and SIGKILL to write its checkpoint."""



class _NotWanted(Exception):
    """A launched gang whose job moved on meanwhile (cancelled, or taken back)."""


@dataclass
class TickReport:
    admitted: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    ended: dict[int, str] = field(default_factory=dict)
    pending: dict[int, str] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)

class Ticker:
    """The write side of the scheduler: one :meth:`tick` at a time over one database and the
    backends that run its pools (module docstring)."""

    def __init__(self, db: Database, backends: Mapping[str, Backend], runs_dir: Path,
                 grace_s: float = DEFAULT_GRACE_S,
                 timer: Callable[[], float] = time.perf_counter,
                 ordering: Ordering = "fair_share", preemption: bool = True,
                 backfill: bool = True, moldable: bool = True,
                 unlaunched_timeout_s: float = UNLAUNCHED_TIMEOUT_S) -> None:
        self.db = db
        self.backends = dict(backends)
        self.runs_dir = runs_dir
        self.grace_s = grace_s
        self.unlaunched_timeout_s = unlaunched_timeout_s
        self.timer = timer
        self.ordering: Ordering = ordering
        self.switches = {"preemption": preemption, "backfill": backfill, "moldable": moldable}
        self._spec_cache: dict[int, JobSpec] = {}
        """Parsed specs of pending jobs, kept between ticks (a spec never changes)."""


    def tick(self, fence: Fence | None = None) -> TickReport:
        """One pass of reconcile → snapshot → cycle → commit → dispatch (module docstring).

        With ``fence`` every write transaction of the tick first runs
        :func:`scheduler.db.lease.check`: once the lease has moved on (a higher epoch, or it
        expired) the write is rolled back and :class:`StaleLeaderError` propagates at once."""
        report = TickReport()
        started = self.timer()
        self._signal_preemptions(fence)
        self._reconcile(report, fence)
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

    @contextmanager
    def _write(self, fence: Fence | None) -> Iterator[Session]:
        """A write transaction of the tick; with ``fence``, only while the lease is still ours."""
        with self.db.write() as session:
            if fence is not None:
                lease.check(session, fence, utcnow())
            yield session

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

    def _signal_preemptions(self, fence: Fence | None = None) -> None:
        """Send each gang told to stop (preempted by the cycle, or cancelled through
        :meth:`request_cancel`) its one SIGTERM; kill one that overstays its grace.

        ``preempt_signalled_at`` records the SIGTERM for both. The signal goes out before the
        mark that it went out is committed: a scheduler that dies in between signals again on
        restart (a second SIGTERM only repeats the request), never not at all."""
        with self.db.read() as session:
            told = [(job.id, job.backend_handle, job.pool_id, job.preempt_signalled_at,
                     job.cancel_requested)
                    for job in session.scalars(select(Job).where(
                        Job.preempt_requested.is_(True) | Job.cancel_requested.is_(True),
                        Job.state.in_([state.value for state in LIVE_STATES])))]
            backend_of = {pool.id: pool.backend for pool in repo.list_pools(session)}
        for job_id, handle, pool_id, signalled_at, cancelling in told:
            backend = self.backends.get(backend_of.get(pool_id or -1, ""))
            if handle is None or backend is None:
                continue
            why = "cancellation" if cancelling else "preemption"
            if signalled_at is None:
                backend.preempt(handle)
                with self._write(fence) as session:
                    job = repo.get_job(session, job_id, lock=True)
                    job.preempt_signalled_at = utcnow()
                    repo.note(session, job, f"SIGTERM sent: checkpoint and stop for {why}")
            elif (utcnow() - as_utc(signalled_at)).total_seconds() > self.grace_s:
                log.warning("job %s ignored its %s for %.0f s; killing it", job_id, why,
                            self.grace_s)
                backend.cancel(handle, 0.0)

    def _dispatch(self, admission: Admission, fence: Fence | None = None) -> bool:
        """Launch an admitted job's gang and record it RUNNING; False if it did not start.

        A gang whose RUNNING commit is refused, because this replica lost the lease meanwhile
        or the job was cancelled while it launched, is killed at once: no gang runs that the
        database does not know."""
        backend = self.backends.get(admission.backend)
        with self._write(fence) as session:
            job = repo.get_job(session, admission.job_id, lock=True)
            if job.state != JobState.ADMITTED.value:
                return False
            job.attempts += 1
            run_dir = Path(job.run_dir or self.runs_dir / f"job-{job.id}")
            checkpoint = self._resume_point(session, job)
            job_file = JobFile(job_id=job.id, attempt=job.attempts, spec=job.spec,
                               plan=admission.plan.to_dict(), run_dir=str(run_dir),
                               resume_from=checkpoint)
            held = repo.live_devices(session, job.id)
            attempt = job.attempts
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "logs").mkdir(exist_ok=True)
        job_path = run_dir / f"attempt-{attempt}.json"
        job_file.write(job_path)
        request = LaunchRequest(job_id=admission.job_id, attempt=attempt,
                                world_size=admission.plan.world_size, job_file=str(job_path),
                                log_path=str(run_dir / "logs" / f"attempt-{attempt}.log"),
                                nodes=admission.plan.nodes, devices=held,
                                env=env_of(job.spec))
        try:
            if backend is None:
                raise BackendError(f"no backend {admission.backend!r} is configured here")
            handle = backend.launch(request)
        except BackendError as err:
            with self._write(fence) as session:
                job = repo.get_job(session, admission.job_id, lock=True)
                if job.state != JobState.ADMITTED.value or job.attempts != attempt:
                    return False  # cancelled meanwhile: nothing is left to fail
                repo.release(session, job)
                repo.transition(session, job, JobState.FAILED, f"launch failed: {err}")
                self._maybe_retry(session, job)
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

    @staticmethod
    def _resume_point(session: Any, job: Job) -> str | None:
        for checkpoint in reversed(repo.checkpoints(session, job.id)):
            if Path(checkpoint.path).is_dir():
                return checkpoint.path
        return None

    # --- reconcile --------------------------------------------------------------------------

    def _reconcile(self, report: TickReport, fence: Fence | None = None) -> None:
        with self.db.read() as session:
            live = [(job.id, job.backend_handle, job.pool_id, job.run_dir, job.progress_offset)
                    for job in repo.list_jobs(session, states=LIVE_STATES, limit=100_000)]
            backend_of = {pool.id: pool.backend for pool in repo.list_pools(session)}
        for job_id, handle, pool_id, run_dir, progress_offset in live:
            if handle is None:
                self._expire_unlaunched(job_id, fence)
                continue
            backend = self.backends.get(backend_of.get(pool_id or -1, ""))
            if backend is None:
                continue
            status = backend.poll(handle)
            if _progress_grew(run_dir, progress_offset):  # else no write transaction at all
                self._ingest_progress(job_id, fence)
            if status.phase is not GangPhase.RUNNING:
                outcome = self._settle(job_id, status, fence, handle)
                if outcome:
                    report.ended[job_id] = outcome

    def _expire_unlaunched(self, job_id: int, fence: Fence | None = None) -> None:
        """An ADMITTED job whose dispatcher died before launching gives its devices back.

        A job admitted under an older lease epoch is taken back at once: the replica that
        admitted it no longer leads, so its RUNNING commit would fail the fence (and it kills
        any gang it launched). It is requeued without counting as a failure."""
        with self._write(fence) as session:
            job = repo.get_job(session, job_id, lock=True)
            if job.state != JobState.ADMITTED.value or job.backend_handle is not None:
                return
            admitted_under = session.scalar(select(func.max(Allocation.lease_epoch)).where(
                Allocation.job_id == job.id, Allocation.released_at.is_(None)))
            if fence is not None and admitted_under is not None \
                    and admitted_under < fence.epoch:
                repo.release(session, job)
                repo.transition(session, job, JobState.PREEMPTED,
                                f"admitted under lease epoch {admitted_under}, whose leader "
                                f"stopped leading before it recorded a launch")
                repo.transition(session, job, JobState.PENDING,
                                f"requeued by the leader at epoch {fence.epoch}")
                return
            admitted_at = as_utc(repo.events(session, job_id)[-1].time)
            if (utcnow() - admitted_at).total_seconds() < self.unlaunched_timeout_s:
                return  # its dispatcher is most likely launching it right now
            repo.release(session, job)
            repo.transition(session, job, JobState.FAILED,
                            f"admitted but not launched within {self.unlaunched_timeout_s:.0f} s "
                            f"(the scheduler that admitted it stopped)")
            self._maybe_retry(session, job)

    def _ingest_progress(self, job_id: int, fence: Fence | None = None) -> None:
        with self._write(fence) as session:
            job = repo.get_job(session, job_id, lock=True)
            if job.run_dir is None:
                return
            events, offset = read_progress(Path(job.run_dir) / "progress.jsonl",
                                           job.progress_offset)
            job.progress_offset = offset
            for event in events:
                apply_progress(session, job, event)

    def _settle(self, job_id: int, status: GangStatus, fence: Fence | None = None,
                handle: str | None = None) -> str | None:
        """Record how a gang ended; with ``handle``, only if it is still the job's gang."""
        with self._write(fence) as session:
            job = repo.get_job(session, job_id, lock=True)
            if JobState(job.state) not in LIVE_STATES:
                return None
            if handle is not None and job.backend_handle != handle:
                return None  # an older gang's fate, polled before the job moved on
            repo.release(session, job)
            recalibrate(session, job)
            detail = {"exit_code": status.exit_code, "attempt": job.attempts}
            if job.preempt_requested and not job.cancel_requested \
                    and status.phase is not GangPhase.SUCCEEDED:
                job.preempt_requested = False
                job.preempt_signalled_at = None
                repo.transition(session, job, JobState.PREEMPTED,
                                "preempted: the gang checkpointed and stopped", detail)
                repo.transition(session, job, JobState.PENDING,
                                "requeued after preemption; resumes from its checkpoint")
            elif job.cancel_requested or status.phase is GangPhase.CANCELLED:
                repo.transition(session, job, JobState.CANCELLED,
                                "cancelled by request", detail)
            elif status.phase is GangPhase.SUCCEEDED:
                repo.transition(session, job, JobState.SUCCEEDED, "all ranks exited 0", detail)
            elif status.phase is GangPhase.PREEMPTED:
                repo.transition(session, job, JobState.PREEMPTED,
                                "ranks checkpointed and stopped on SIGTERM", detail)
                repo.transition(session, job, JobState.PENDING,
                                "requeued after preemption; resumes from its checkpoint")
            else:
                repo.transition(session, job, JobState.FAILED,
                                status.reason or f"gang failed (exit {status.exit_code})", detail)
                self._maybe_retry(session, job)
            return job.state

    def _maybe_retry(self, session: Any, job: Job) -> None:
        failures = repo.failure_count(session, job.id)
        if failures < job.max_attempts:
            checkpoint = self._resume_point(session, job)
            where = f"from checkpoint {checkpoint}" if checkpoint else "from the start"
            repo.transition(session, job, JobState.PENDING,
                            f"retry after failure {failures} of {job.max_attempts} allowed; "
                            f"resumes {where}")
        else:
            repo.note(session, job, f"gave up after {failures} failures "
                                    f"(resources.max_attempts = {job.max_attempts})")


def _progress_grew(run_dir: str | None, offset: int) -> bool:
    """Whether the job's progress file has bytes beyond ``offset`` that are not read yet."""
    if run_dir is None:
        return False
    try:
        return (Path(run_dir) / "progress.jsonl").stat().st_size > offset
    except FileNotFoundError:
        return False


