"""The scheduler service: the only place that joins the database, the cycle and the backends.

:class:`SchedulerService` composes the tick (:class:`~scheduler.tick.Ticker`: reconcile →
snapshot → cycle → commit → dispatch) and adds what users ask of it: submit (validated, planned,
limited per tenant, once per idempotency key), cancel, and the read side — the JSON-able
answers ``corral`` prints and the REST API serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from scheduler import inventory
from scheduler.calibrate import measured_step_time
from scheduler.cost.hardware import lookup
from scheduler.db import repo, submissions
from scheduler.db.lease import Fence
from scheduler.db.models import Job, Pool, Tenant, as_utc, utcnow
from scheduler.db.session import Database
from scheduler.db.submissions import SubmitLimits, Submitted
from scheduler.dispatch import Dispatcher
from scheduler.domain.capabilities import check_backend_settings
from scheduler.domain.errors import (
    BackendError,
    CorralError,
    SpecError,
    UnschedulableError,
)
from scheduler.domain.locations import is_job_ref, job_ref_name
from scheduler.domain.plan import Plan
from scheduler.domain.resources import PendingJobView, PoolView
from scheduler.domain.roots import check_spec_files, within
from scheduler.domain.spec import (
    JobSpec,
    parse_spec,
    redact_spec,
)
from scheduler.domain.state import LIVE_STATES, JobState
from scheduler.gangs.artifacts import ArtifactStore
from scheduler.gangs.backend import (
    Backend,
    BackendLog,
    DiscoversNodes,
    FileLog,
    GangPhase,
    GangStatus,
    LogSource,
)
from scheduler.gangs.protocol import EXPORT_DIR_NAME
from scheduler.gangs.registry import BackendRegistry
from scheduler.planning import ModelInput, plan_spec, profile_fields
from scheduler.policies.config import Ordering
from scheduler.policies.placement import check_schedulable
from scheduler.reconcile import DEFAULT_GRACE_S, UNLAUNCHED_TIMEOUT_S, Reconciler
from scheduler.tick import Ticker, TickReport
from scheduler.trust import JobTrust

log = logging.getLogger("corral.service")


class SchedulerService:
    """Submit, schedule, dispatch and reconcile jobs over one database and some backends.

    Composed of a :class:`Reconciler`, a :class:`Dispatcher` and the :class:`Ticker` that runs
    them around each cycle; this class adds what users ask (submit, cancel, the read side)."""

    def __init__(self, db: Database, backends: Mapping[str, Backend] | BackendRegistry,
                 runs_dir: Path,
                 grace_s: float = DEFAULT_GRACE_S,
                 timer: Callable[[], float] = time.perf_counter,
                 ordering: Ordering = "fair_share", preemption: bool = True,
                 backfill: bool = True, moldable: bool = True,
                 unlaunched_timeout_s: float = UNLAUNCHED_TIMEOUT_S,
                 trust: JobTrust | None = None, records_dir: Path | None = None) -> None:
        self.db = db
        self.backends = BackendRegistry.of(backends)
        """Each pool's backend by its name and settings (:mod:`scheduler.gangs.registry`)."""
        self.runs_dir = runs_dir
        self.grace_s = grace_s
        self.trust = trust
        self.reconciler = Reconciler(db, self.backends, grace_s, unlaunched_timeout_s)
        self.dispatcher = Dispatcher(db, self.backends, runs_dir, records_dir, trust, timer)
        self.records_dir = self.dispatcher.records_dir
        self.ticker = Ticker(db, self.reconciler, self.dispatcher, timer, ordering,
                             preemption, backfill, moldable)

    def tick(self, fence: Fence | None = None) -> TickReport:
        """One pass of reconcile → snapshot → cycle → commit → dispatch (:mod:`scheduler.tick`)."""
        return self.ticker.tick(fence)

    # --- submit ---------------------------------------------------------------------------

    def check_files(self, spec: JobSpec) -> None:
        """Reject a spec whose files are missing or, in server mode, outside the folders its
        tenant may read (one message for both); ``job:`` references are left for
        :meth:`resolve_job_reference`. Run before anything reads a file the spec names."""
        roots = None
        if self.trust is not None:
            with self.db.read() as session:
                roots = self.trust.roots_for(repo.find_tenant(session, spec.tenant))
        check_spec_files(spec, roots, spec.tenant)

    def validate(self, spec: JobSpec) -> None:
        """Reject a spec no pool can ever run, or whose files are missing; store nothing."""
        self.check_files(spec)
        self.check_schedulable(spec)

    def check_schedulable(self, spec: JobSpec) -> None:
        """Reject a spec no pool of this cluster can ever run."""
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
            pool = session.get(Pool, source.pool_id) if source and source.pool_id else None
            backend = pool.backend if pool is not None else "local"
        if source_id is None or run_dir is None:
            raise SpecError(
                f"model.path: {value}: tenant {spec.tenant!r} has no succeeded job named "
                f"{name!r}; run that job first (its export becomes this job's weights)"
            )
        export = Path(run_dir) / EXPORT_DIR_NAME
        if not ArtifactStore.for_backend(backend).usable(str(export)):
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

        With the planner's view of the model (``workers.model_config.planning_profile``,
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
        self.check_files(spec)
        spec = self.resolve_job_reference(spec)
        self.check_schedulable(spec)
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
        """Cancel a job: at once if it holds no devices, else SIGTERM its gang and settle it
        (:meth:`request_cancel`, then the stop a leading tick would send, waited for here)."""
        state = self.request_cancel(job_id, reason, tenant)
        if JobState(state) not in LIVE_STATES:
            return state
        with self.db.read() as session:
            job = repo.get_job(session, job_id)
            handle, cursor = job.backend_handle, job.progress_offset
            pool = session.get(Pool, job.pool_id) if job.pool_id else None
            backend = self.backends.get(pool.backend, pool.backend_settings) if pool else None
        if backend is not None and handle is not None:
            backend.cancel(handle, self.grace_s)
            status = backend.poll(handle)
            self.reconciler.ingest_progress(job_id, backend, handle, cursor)
            if status.phase is not GangPhase.RUNNING:
                self.reconciler.settle(job_id, GangStatus(GangPhase.CANCELLED,
                                                          status.exit_code, status.reason))
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
            tenants = {row.id: row.name
                       for row in session.execute(select(Tenant.id, Tenant.name))}
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
            store = ArtifactStore.for_backend(pool.backend if pool is not None else "local")
            tenant_row = session.get(Tenant, job.tenant_id)
            info.update(
                tenant=tenant_row.name if tenant_row is not None else None,
                spec=redact_spec(job.spec), plan_detail=job.plan, run_dir=job.run_dir,
                max_attempts=job.max_attempts, pending_reason=job.pending_reason,
                eval_loss=job.eval_loss, predicted_step_time_s=job.predicted_step_time_s,
                predicted_run_time_s=job.predicted_run_time_s,
                measured_step_time_s=measured_step_time(job.step_times_s) or job.step_time_s,
                deadline_at=as_utc(job.deadline_at).isoformat() if job.deadline_at else None,
                devices=repo.live_devices(session, job.id),
                events=[{"time": as_utc(e.time).isoformat(), "from": e.from_state, "to": e.to_state,
                         "reason": e.reason, "detail": e.detail}
                        for e in repo.events(session, job.id)],
                checkpoints=[{"step": c.step, "path": c.path,
                              "exists": store.present(c.path)}
                             for c in repo.checkpoints(session, job.id)],
            )
            return info

    def add_pool(self, name: str, backend: str, accelerator: str, nodes: int,
                 devices_per_node: int, price_per_device_hour: float = 0.0,
                 peak_tflops: float | None = None,
                 backend_settings: dict[str, str] | None = None) -> None:
        """Register a pool (:func:`scheduler.inventory.add_pool`) whose backend this service
        can run gangs on; SpecError naming the backends it has otherwise, before anything is
        written (a pool no backend serves would hold its jobs forever)."""
        settings = check_backend_settings(backend, backend_settings or {})
        try:
            self.backends.check(backend, settings)
        except BackendError as err:
            raise SpecError(f"pool {name}: {err}") from None
        inventory.add_pool(self.db, name, backend, accelerator, nodes, devices_per_node,
                           price_per_device_hour, peak_tflops, settings)

    def pools(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            views = repo.load_pool_views(session)
            settings = {pool.id: pool.backend_settings for pool in repo.list_pools(session)}
        return [{"name": p.name, "backend": p.backend,
                 "backend_settings": settings.get(p.pool_id) or None,
                 "accelerator": p.accelerator,
                 "nodes": len(p.nodes), "devices_per_node": p.devices_per_node,
                 "devices": p.total_devices, "free": p.free_devices,
                 "price_per_device_hour": p.price_per_device_hour,
                 "planned_price": _planned_price(p),
                 "peak_flops": _peak_flops(p)} for p in views]

    def sync_pools(self, backend: str, settings: dict[str, str], prefix: str,
                   cpu_peak_tflops: float | None = None) -> list[dict[str, Any]]:
        """A pool per accelerator type of the nodes ``backend`` at ``settings`` reports
        (:func:`scheduler.inventory.sync_pools`); BackendError when it cannot list them."""
        check_backend_settings(backend, settings)
        found = self.backends.get(backend, settings)
        if not isinstance(found, DiscoversNodes):
            raise BackendError(f"backend {backend!r} does not list its nodes here; add its "
                               f"pools with `corral pools add`")
        reports = found.nodes()
        return inventory.sync_pools(self.db, backend, settings, reports, prefix,
                                    cpu_peak_tflops)

    def log_source(self, job_id: int, attempt: int | None = None,
                   tenant: str | None = None) -> LogSource | None:
        """The log of ``attempt`` (default: the latest) of a job, read through the backend
        that ran it; None before it started.

        Each attempt's RUNNING event names its backend and gang. A replica without that
        backend (API only), or an attempt recorded before gangs were named there, reads the
        log file the event recorded, and only inside this service's records folder: never
        a path in a run folder, whose entries the ranks control."""
        with self.db.read() as session:
            job = repo.get_job(session, job_id, tenant=tenant)
            chosen = attempt or job.attempts
            if chosen < 1:
                return None
            started = [event.detail for event in repo.attempt_starts(session, job.id)
                       if event.detail and event.detail.get("attempt") == chosen]
            if not started:
                return None
            detail = started[-1]
            pool = repo.get_pool(session, str(detail.get("pool", "")))
            settings = pool.backend_settings if pool is not None else None
        backend = self.backends.get(str(detail.get("backend")), settings)
        if backend is not None and isinstance(detail.get("handle"), str):
            return BackendLog(backend, detail["handle"])
        recorded = detail.get("log")
        if isinstance(recorded, str) and within(Path(recorded), [str(self.records_dir)]):
            return FileLog(Path(recorded))
        return None

    def job_state(self, job_id: int, tenant: str | None = None) -> JobState:
        with self.db.read() as session:
            return JobState(repo.get_job(session, job_id, tenant=tenant).state)


def _planned_price(pool: PoolView) -> tuple[float | None, str]:
    """Price per device-hour the planner charges on ``pool``, and where it comes from: the
    pool's own price when it sets one, else the catalog's list price for its accelerator."""
    if pool.price_per_device_hour > 0:
        return pool.price_per_device_hour, "pool"
    try:
        return lookup(pool.accelerator).price_per_device_hour, "catalog"
    except KeyError:
        return None, "unknown"


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
        "submitted_at": as_utc(job.submitted_at).isoformat(),
        "started_at": as_utc(job.started_at).isoformat() if job.started_at else None,
        "finished_at": as_utc(job.finished_at).isoformat() if job.finished_at else None,
        "pending_reason": job.pending_reason,
    }


__all__ = [
    "DEFAULT_GRACE_S", "UNLAUNCHED_TIMEOUT_S", "CorralError", "Plan", "SchedulerService",
    "TickReport", "parse_spec",
]
