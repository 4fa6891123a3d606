"""The scheduler service: the only place that joins the database, the cycle and the backends.

One :meth:`SchedulerService.tick` is:

1. Reconcile: poll every gang that holds devices, ingest its progress, settle gangs that ended
   (succeeded, failed → retry while attempts remain, preempted → requeue, cancelled).
2. Snapshot the cluster in a read transaction.
3. Run the pure cycle (:func:`scheduler.cycle.run_cycle`).
4. Commit admissions in one write transaction: allocation rows, plan, ADMITTED + event. The
   database's unique index on live devices refuses a device that another writer took.
5. Dispatch: write each admitted job's job file and launch its gang; RUNNING + event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from scheduler.calibrate import measured_step_time, recalibrate, record_step_time
from scheduler.cost.hardware import lookup
from scheduler.cycle import Admission, CycleResult, run_cycle
from scheduler.db import repo, submissions
from scheduler.db.models import Job, Pool, Tenant, as_utc, utcnow
from scheduler.db.session import Database
from scheduler.db.snapshot import policy_config, snapshot
from scheduler.db.submissions import SubmitLimits, Submitted
from scheduler.domain.errors import BackendError, CorralError, SpecError, UnschedulableError
from scheduler.domain.locations import is_job_ref, job_ref_name
from scheduler.domain.plan import Plan
from scheduler.domain.resources import PendingJobView, PoolView
from scheduler.domain.spec import (
    JobSpec,
    check_files_exist,
    env_of,
    parse_spec,
    redact_spec,
)
from scheduler.domain.state import LIVE_STATES, JobState
from scheduler.planning import ModelInput, plan_spec, profile_fields
from scheduler.policies.config import Ordering
from scheduler.policies.placement import check_schedulable
from workers.backends.base import Backend, GangPhase, GangStatus
from workers.protocol import EXPORT_DIR_NAME, JobFile, LaunchRequest, read_progress

log = logging.getLogger("corral.service")

UNLAUNCHED_TIMEOUT_S = 120.0
"""Seconds an ADMITTED job may wait for its launch before another scheduler takes it back."""

DEFAULT_GRACE_S = 30.0
"""Seconds a gang gets between SIGTERM and SIGKILL to write its checkpoint."""


@dataclass
class TickReport:
    admitted: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    ended: dict[int, str] = field(default_factory=dict)
    pending: dict[int, str] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)


class SchedulerService:
    """Submit, schedule, dispatch and reconcile jobs over one database and some backends."""

    def __init__(self, db: Database, backends: Mapping[str, Backend], runs_dir: Path,
                 grace_s: float = DEFAULT_GRACE_S,
                 timer: Callable[[], float] = time.perf_counter,
                 ordering: Ordering = "fair_share", preemption: bool = True,
                 backfill: bool = True, moldable: bool = True) -> None:
        self.db = db
        self.backends = dict(backends)
        self.runs_dir = runs_dir
        self.grace_s = grace_s
        self.timer = timer
        self.ordering: Ordering = ordering
        self.switches = {"preemption": preemption, "backfill": backfill, "moldable": moldable}

    # --- submit ---------------------------------------------------------------------------

    def validate(self, spec: JobSpec) -> None:
        """Reject a spec no pool can ever run, or whose files are missing; store nothing."""
        check_files_exist(spec)
        with self.db.read() as session:
            pools = repo.load_pool_views(session)
        view = PendingJobView.from_spec(0, spec)
        check_schedulable(view, pools)

    def resolve_job_reference(self, spec: JobSpec) -> JobSpec:
        """``spec`` with ``model.path: job:NAME`` replaced by that job's export folder.

        The newest succeeded job called NAME of the spec's tenant counts; the stored spec keeps
        the folder, so a retry of this job reads the same weights whatever runs later.
        """
        value = spec.model.path
        if value is None or not is_job_ref(value):
            return spec
        name = job_ref_name(value)
        with self.db.read() as session:
            source = repo.latest_succeeded_job(session, spec.tenant, name)
            source_id, run_dir = (source.id, source.run_dir) if source else (None, None)
        if source_id is None or run_dir is None:
            raise SpecError(
                f"model.path: {value}: tenant {spec.tenant!r} has no succeeded job named "
                f"{name!r}; run that job first (its export becomes this job's weights)"
            )
        export = Path(run_dir) / EXPORT_DIR_NAME
        if not export.is_dir():
            raise SpecError(
                f"model.path: {value}: job {source_id} ({name}) left no export folder {export}; "
                f"only jobs that finish with a transformers export can be named here"
            )
        return spec.model_copy(
            update={"model": spec.model.model_copy(update={"path": str(export)})})

    def submit(self, spec: JobSpec, model: ModelInput | None = None) -> int:
        """Validate and store ``spec`` as a PENDING job; return its id (:meth:`submit_request`
        without limits or idempotency, as embedded mode submits)."""
        return self.submit_request(spec, model).job_id

    def submit_request(self, spec: JobSpec, model: ModelInput | None = None, *,
                       idempotency_key: str | None = None, request_sha256: str = "",
                       limits: SubmitLimits | None = None,
                       is_admin: bool = True) -> Submitted:
        """Validate and store ``spec`` as a PENDING job, once per idempotency key.

        With the planner's view of the model (``workers.core.model_config.planning_profile``,
        or a pretraining model's full config) the cost model checks the job fits some pool
        within its deadline and budget, and the cycle later picks its plan by prediction.
        In the storing transaction the tenant's row is locked and its limits checked
        (:mod:`scheduler.db.submissions`); a repeated key with the same ``request_sha256``
        returns the job the first submission made, committed before this returns.
        """
        limits = limits or SubmitLimits()
        if idempotency_key is not None:
            with self.db.read() as session:
                tenant = repo.find_tenant(session, spec.tenant)
                earlier = None if tenant is None else submissions.find_by_key(
                    session, tenant.id, idempotency_key, request_sha256)
            if earlier is not None:
                return Submitted(earlier, created=False)
        spec = self.resolve_job_reference(spec)
        self.validate(spec)
        profile = None
        if model is not None:
            report = plan_spec(self.db, spec, model)
            if report.best is None:
                raise UnschedulableError(f"{spec.name} fits no pool: {report.smallest_fix()}")
            profile = profile_fields(spec, model)
        try:
            with self.db.write() as session:
                tenant_id = repo.get_or_create_tenant(session, spec.tenant).id
                tenant = submissions.lock_tenant(session, tenant_id)
                if idempotency_key is not None:
                    earlier = submissions.find_by_key(session, tenant.id, idempotency_key,
                                                      request_sha256)
                    if earlier is not None:
                        return Submitted(earlier, created=False)
                submissions.check_priority(tenant, spec.resources.priority, limits, is_admin)
                now = utcnow()
                submissions.check_limits(session, tenant, limits, now)
                job = repo.create_job(session, spec)
                job.submitted_at = now
                job.model_profile = profile
                job.deadline_at = spec.deadline_at(now)
                job.run_dir = str(self.runs_dir / f"job-{job.id}")
                if idempotency_key is not None:
                    submissions.remember_key(session, tenant.id, idempotency_key,
                                             request_sha256, job.id)
                return Submitted(job.id, created=True)
        except IntegrityError:
            if idempotency_key is None:
                raise
        # Another replica stored the same key between our check and our commit: its job wins.
        with self.db.read() as session:
            tenant = repo.find_tenant(session, spec.tenant)
            earlier = None if tenant is None else submissions.find_by_key(
                session, tenant.id, idempotency_key, request_sha256)
        if earlier is None:
            raise CorralError("the submission conflicted with another and was not stored; "
                              "submit again")
        return Submitted(earlier, created=False)

    # --- the tick ---------------------------------------------------------------------------

    def tick(self) -> TickReport:
        """One pass of reconcile → snapshot → cycle → commit → dispatch (module docstring)."""
        report = TickReport()
        started = self.timer()
        self._reconcile(report)
        report.step_seconds["1_reconcile"] = self.timer() - started

        mark = self.timer()
        with self.db.read() as session:
            config = policy_config(session, self.ordering, **self.switches)
            snap = snapshot(session, config)
        report.step_seconds["2_snapshot"] = self.timer() - mark

        mark = self.timer()
        result = run_cycle(snap, timer=self.timer, config=config)
        report.step_seconds["3_cycle"] = self.timer() - mark

        mark = self.timer()
        admitted = self._commit(result)
        report.admitted = [a.job_id for a in admitted]
        report.pending = result.pending_reasons
        self._signal_preemptions()
        report.step_seconds["4_commit_preempt"] = self.timer() - mark

        mark = self.timer()
        for admission in admitted:
            if self._dispatch(admission):
                report.started.append(admission.job_id)
        report.step_seconds["5_dispatch"] = self.timer() - mark
        log.debug("tick %s", report.step_seconds)
        return report

    def _commit(self, result: CycleResult) -> list[Admission]:
        admitted: list[Admission] = []
        with self.db.write() as session:
            for order in result.preemptions:
                victim = repo.get_job(session, order.job_id, lock=True)
                if (JobState(victim.state) in LIVE_STATES and not victim.preempt_requested
                        and not victim.cancel_requested):
                    victim.preempt_requested = True
                    repo.note(session, victim, order.reason, {"for_job": order.for_job_id})
            for job_id, reason in result.pending_reasons.items():
                job = repo.get_job(session, job_id)
                if job.state == JobState.PENDING.value and job.pending_reason != reason:
                    job.pending_reason = reason
            for admission in result.admissions:
                job = repo.get_job(session, admission.job_id, lock=True)
                if job.state != JobState.PENDING.value:
                    continue  # cancelled since the snapshot
                try:
                    with session.begin_nested():
                        repo.allocate(session, job, admission.devices)
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

    def _signal_preemptions(self) -> None:
        """Send each job told to preempt its one SIGTERM; kill one that overstays its grace.

        The signal goes out before the mark that it went out is committed: a scheduler that
        dies in between signals again on restart (a second SIGTERM only repeats the request),
        never not at all."""
        with self.db.read() as session:
            told = [(job.id, job.backend_handle, job.pool_id, job.preempt_signalled_at)
                    for job in session.scalars(select(Job).where(
                        Job.preempt_requested.is_(True),
                        Job.state.in_([state.value for state in LIVE_STATES])))]
            backend_of = {pool.id: pool.backend for pool in repo.list_pools(session)}
        for job_id, handle, pool_id, signalled_at in told:
            backend = self.backends.get(backend_of.get(pool_id or -1, ""))
            if handle is None or backend is None:
                continue
            if signalled_at is None:
                backend.preempt(handle)
                with self.db.write() as session:
                    job = repo.get_job(session, job_id, lock=True)
                    job.preempt_signalled_at = utcnow()
                    repo.note(session, job, "SIGTERM sent: checkpoint and stop for preemption")
            elif (utcnow() - as_utc(signalled_at)).total_seconds() > self.grace_s:
                log.warning("job %s ignored its preemption for %.0f s; killing it", job_id,
                            self.grace_s)
                backend.cancel(handle, 0.0)

    def _dispatch(self, admission: Admission) -> bool:
        backend = self.backends.get(admission.backend)
        with self.db.write() as session:
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
            with self.db.write() as session:
                job = repo.get_job(session, admission.job_id, lock=True)
                repo.release(session, job)
                repo.transition(session, job, JobState.FAILED, f"launch failed: {err}")
                self._maybe_retry(session, job)
            return False
        with self.db.write() as session:
            job = repo.get_job(session, admission.job_id, lock=True)
            job.backend_handle = handle
            resumed = f", resuming from {checkpoint}" if checkpoint else ""
            repo.transition(session, job, JobState.RUNNING,
                            f"attempt {attempt} started on {admission.backend}{resumed}",
                            {"attempt": attempt, "resume_from": checkpoint,
                             "log": request.log_path})
        return True

    @staticmethod
    def _resume_point(session: Any, job: Job) -> str | None:
        for checkpoint in reversed(repo.checkpoints(session, job.id)):
            if Path(checkpoint.path).is_dir():
                return checkpoint.path
        return None

    # --- reconcile --------------------------------------------------------------------------

    def _reconcile(self, report: TickReport) -> None:
        with self.db.read() as session:
            live = [(job.id, job.backend_handle, job.pool_id)
                    for job in repo.list_jobs(session, states=LIVE_STATES, limit=100_000)]
            backend_of = {pool.id: pool.backend for pool in repo.list_pools(session)}
        for job_id, handle, pool_id in live:
            if handle is None:
                self._expire_unlaunched(job_id)
                continue
            backend = self.backends.get(backend_of.get(pool_id or -1, ""))
            if backend is None:
                continue
            status = backend.poll(handle)
            self._ingest_progress(job_id)
            if status.phase is not GangPhase.RUNNING:
                outcome = self._settle(job_id, status)
                if outcome:
                    report.ended[job_id] = outcome

    def _expire_unlaunched(self, job_id: int) -> None:
        """An ADMITTED job whose dispatcher died before launching gives its devices back."""
        with self.db.write() as session:
            job = repo.get_job(session, job_id, lock=True)
            if job.state != JobState.ADMITTED.value or job.backend_handle is not None:
                return
            admitted_at = as_utc(repo.events(session, job_id)[-1].time)
            if (utcnow() - admitted_at).total_seconds() < UNLAUNCHED_TIMEOUT_S:
                return  # its dispatcher is most likely launching it right now
            repo.release(session, job)
            repo.transition(session, job, JobState.FAILED,
                            f"admitted but not launched within {UNLAUNCHED_TIMEOUT_S:.0f} s "
                            f"(the scheduler that admitted it stopped)")
            self._maybe_retry(session, job)

    def _ingest_progress(self, job_id: int) -> None:
        with self.db.write() as session:
            job = repo.get_job(session, job_id, lock=True)
            if job.run_dir is None:
                return
            events, offset = read_progress(Path(job.run_dir) / "progress.jsonl",
                                           job.progress_offset)
            job.progress_offset = offset
            for event in events:
                apply_progress(session, job, event)

    def _settle(self, job_id: int, status: GangStatus) -> str | None:
        with self.db.write() as session:
            job = repo.get_job(session, job_id, lock=True)
            if JobState(job.state) not in LIVE_STATES:
                return None
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

    # --- cancel -----------------------------------------------------------------------------

    def request_cancel(self, job_id: int, reason: str = "cancelled by user",
                       tenant: str | None = None) -> str:
        """Cancel a job without waiting for its gang (what the REST API does).

        A job holding no devices is CANCELLED at once; a running one is marked, and the leading
        scheduler's next tick sends its gang SIGTERM (SIGKILL after the grace period) and
        settles it CANCELLED. Returns the state now."""
        with self.db.write() as session:
            job = repo.get_job(session, job_id, lock=True, tenant=tenant)
            state = JobState(job.state)
            if state in (JobState.PENDING, JobState.PREEMPTED):
                repo.transition(session, job, JobState.CANCELLED, reason)
            elif state in LIVE_STATES and not job.cancel_requested:
                job.cancel_requested = True
                repo.note(session, job, f"cancel requested: {reason}")
                if job.backend_handle is None:
                    repo.release(session, job)
                    repo.transition(session, job, JobState.CANCELLED, reason)
            return job.state

    def cancel(self, job_id: int, reason: str = "cancelled by user",
               tenant: str | None = None) -> str:
        """Cancel a job: at once if it holds no devices, else SIGTERM its gang and settle it."""
        with self.db.write() as session:
            job = repo.get_job(session, job_id, lock=True, tenant=tenant)
            state = JobState(job.state)
            if state in (JobState.PENDING, JobState.PREEMPTED):
                repo.transition(session, job, JobState.CANCELLED, reason)
                return job.state
            if state not in LIVE_STATES:
                return job.state
            job.cancel_requested = True
            repo.note(session, job, f"cancel requested: {reason}")
            handle, pool_id = job.backend_handle, job.pool_id
            if handle is None:
                repo.release(session, job)
                repo.transition(session, job, JobState.CANCELLED, reason)
                return job.state
            pool = session.get(Pool, pool_id) if pool_id else None
            backend = self.backends.get(pool.backend) if pool else None
        if backend is not None:
            backend.cancel(handle, self.grace_s)
            status = backend.poll(handle)
            self._ingest_progress(job_id)
            if status.phase is not GangPhase.RUNNING:
                self._settle(job_id, GangStatus(GangPhase.CANCELLED, status.exit_code,
                                                status.reason))
        with self.db.read() as session:
            return repo.get_job(session, job_id).state

    # --- read side (JSON-able answers, the same shapes the REST API will serve) --------------

    def queue(self, include_finished: bool = False, limit: int = 200,
              tenant: str | None = None, states: list[JobState] | None = None,
              name: str | None = None, before_id: int | None = None) -> list[dict[str, Any]]:
        """Jobs newest first: live ones (or ``states``; every one with ``include_finished``),
        of ``tenant`` when given, named ``name`` when given, with ids below ``before_id``."""
        if states is None and not include_finished:
            states = [JobState.PENDING, JobState.ADMITTED, JobState.RUNNING, JobState.PREEMPTED]
        with self.db.read() as session:
            pools = {pool.id: pool.name for pool in repo.list_pools(session)}
            tenants = dict(session.execute(select(Tenant.id, Tenant.name)).tuples().all())
            return [{**job_summary(job, pools.get(job.pool_id or -1)),
                     "tenant": tenants.get(job.tenant_id)}
                    for job in repo.list_jobs(session, states=states, limit=limit,
                                              tenant=tenant, name=name, before_id=before_id)]

    def describe(self, job_id: int, tenant: str | None = None) -> dict[str, Any]:
        """Everything about one job: spec (secret env values masked), plan, progress, events,
        checkpoints, why pending. With ``tenant``, another tenant's job is not found."""
        with self.db.read() as session:
            job = repo.get_job(session, job_id, tenant=tenant)
            pool = session.get(Pool, job.pool_id) if job.pool_id else None
            info = job_summary(job, pool.name if pool else None)
            info.update(
                spec=redact_spec(job.spec), plan_detail=job.plan, run_dir=job.run_dir,
                max_attempts=job.max_attempts, pending_reason=job.pending_reason,
                eval_loss=job.eval_loss, predicted_step_time_s=job.predicted_step_time_s,
                predicted_run_time_s=job.predicted_run_time_s,
                measured_step_time_s=measured_step_time(job.step_times_s) or job.step_time_s,
                deadline_at=job.deadline_at.isoformat() if job.deadline_at else None,
                devices=repo.live_devices(session, job.id),
                events=[{"time": e.time.isoformat(), "from": e.from_state, "to": e.to_state,
                         "reason": e.reason, "detail": e.detail}
                        for e in repo.events(session, job.id)],
                checkpoints=[{"step": c.step, "path": c.path,
                              "exists": Path(c.path).is_dir()}
                             for c in repo.checkpoints(session, job.id)],
            )
            return info

    def pools(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            views = repo.load_pool_views(session)
        return [{"name": p.name, "backend": p.backend, "accelerator": p.accelerator,
                 "nodes": len(p.nodes), "devices_per_node": p.devices_per_node,
                 "devices": p.total_devices, "free": p.free_devices,
                 "price_per_device_hour": p.price_per_device_hour,
                 "peak_flops": _peak_flops(p)} for p in views]

    def log_path(self, job_id: int, attempt: int | None = None,
                 tenant: str | None = None) -> Path | None:
        """The log of ``attempt`` (default: the latest) of a job, if it has started."""
        with self.db.read() as session:
            job = repo.get_job(session, job_id, tenant=tenant)
            chosen = attempt or job.attempts
            if not job.run_dir or chosen < 1:
                return None
            return Path(job.run_dir) / "logs" / f"attempt-{chosen}.log"

    def job_state(self, job_id: int, tenant: str | None = None) -> JobState:
        with self.db.read() as session:
            return JobState(repo.get_job(session, job_id, tenant=tenant).state)


def _peak_flops(pool: PoolView) -> tuple[float | None, str]:
    """Peak FLOP/s per device the cost model uses for ``pool``, and where it comes from."""
    if pool.peak_flops:
        return pool.peak_flops, "pool"
    try:
        row = lookup(pool.accelerator)
    except KeyError:
        return None, "unknown"
    return row.peak_bf16_flops, "placeholder" if row.family == "cpu" else "catalog"


def job_summary(job: Job, pool_name: str | None) -> dict[str, Any]:
    return {
        "id": job.id, "name": job.name, "kind": job.kind, "state": job.state,
        "priority": job.priority, "pool": pool_name,
        "plan": Plan.from_dict(job.plan).describe() if job.plan else None,
        "attempts": job.attempts, "step": job.last_step, "total_steps": job.total_steps,
        "first_loss": job.first_loss, "loss": job.last_loss, "tokens_per_s": job.tokens_per_s,
        "submitted_at": job.submitted_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "pending_reason": job.pending_reason,
    }


def apply_progress(session: Any, job: Job, event: dict[str, Any]) -> None:
    """Fold one progress event from rank 0 into the job row, its events and checkpoints."""
    kind = event.get("event")
    if kind == "step":
        if job.first_loss is None:
            job.first_loss = event.get("loss")
        job.last_step = event.get("step")
        job.last_loss = event.get("loss")
        job.tokens_per_s = event.get("tokens_per_s")
        job.step_time_s = event.get("step_time_s")
        record_step_time(job, event)
    elif kind == "start":
        job.total_steps = event.get("total_steps", job.total_steps)
        job.step_times_s = []
        repo.note(session, job, f"attempt {event.get('attempt')}: ranks started at step "
                                f"{event.get('step')} of {job.total_steps}")
    elif kind in ("checkpoint", "preempted") and event.get("path"):
        repo.add_checkpoint(session, job, int(event["step"]), str(event["path"]),
                            {"loss": job.last_loss})
        if kind == "preempted":
            repo.note(session, job, f"checkpointed at step {event['step']} on SIGTERM")
    elif kind == "eval":
        job.eval_loss = event.get("eval_loss")
    elif kind == "done":
        job.eval_loss = event.get("eval_loss", job.eval_loss)
        repo.note(session, job, f"training finished{_eval_summary(event)}",
                  {k: v for k, v in event.items() if k != "event"})
    elif kind == "compress":
        repo.note(session, job, _compress_note(event),
                  {k: v for k, v in event.items() if k != "event"})


def _eval_summary(event: dict[str, Any]) -> str:
    """``": eval_loss 0.83, eval_accuracy 1"``: the eval metrics of a ``done`` event, if any."""
    metrics = [f"{name} {value:.4g}" for name, value in event.items()
               if name.startswith("eval_") and isinstance(value, float)]
    return f": {', '.join(metrics)}" if metrics else ""


def _compress_note(event: dict[str, Any]) -> str:
    """The before → after lines of a ``compress`` event, as ``corral show`` prints them."""
    before, after = event.get("before") or {}, event.get("after") or {}
    settings = ", ".join(f"{name} {value}" for name, value in (event.get("settings") or {}).items()
                         if name not in ("method", "latency_runs", "latency_threads"))

    def change(name: str, scale: float = 1.0, unit: str = "", digits: int = 4) -> str:
        old, new = before.get(name), after.get(name)
        if old is None or new is None:
            return "-"
        ratio = f" (×{new / old:.2f})" if old else ""
        return f"{old * scale:.{digits}g}{unit} → {new * scale:.{digits}g}{unit}{ratio}"

    def metric(name: str) -> str:
        old = (before.get("metrics") or {}).get(name)
        new = (after.get("metrics") or {}).get(name)
        return f"{name} {old:.4f} → {new:.4f}" if old is not None and new is not None else ""

    threads = event.get("threads")
    batch = "×".join(str(size) for size in event.get("latency_batch_shape") or [])
    metrics = "; ".join(text for text in (metric("eval_loss"), metric("perplexity"),
                                          metric("eval_accuracy")) if text)
    # Continuation lines indented, so that `corral run` shows them under their headline.
    return "\n  ".join([
        f"compress {event.get('method')} ({settings}): before → after",
        f"size on disk {change('size_bytes', 1e-6, ' MB')}",
        f"parameters {change('parameters', digits=9)}, non-zero "
        f"{change('nonzero_parameters', digits=9)}",
        f"latency per {batch} batch {change('latency_s', 1e3, ' ms', 3)} on {threads} thread(s)",
        metrics or "no quality metric",
    ])


__all__ = ["CorralError", "Plan", "SchedulerService", "TickReport", "parse_spec"]
