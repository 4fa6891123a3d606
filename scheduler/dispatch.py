"""Step 5 of a tick: launch each admitted job's gang and record it RUNNING.

:class:`Dispatcher` hands each admitted job to its pool's backend by value (the job file, the
launch request), with whom its ranks run as and which folders they may read (server mode,
:class:`~scheduler.trust.JobTrust`). A launch that fails fails that job only, with its
reason: retried while attempts remain, not retried when it would repeat
(:class:`~scheduler.domain.errors.LaunchRefusedError`), held without spending an attempt when
the disk under its files is full or its backend cannot take it now
(:class:`~scheduler.domain.errors.BackendUnavailableError`: a Ray cluster that is down). A
gang whose RUNNING commit is refused is killed at once.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from scheduler.cycle import Admission, CycleResult
from scheduler.db import repo
from scheduler.db.lease import Fence
from scheduler.db.models import Job, Pool, Tenant
from scheduler.db.session import Database
from scheduler.domain.errors import (
    BackendError,
    BackendUnavailableError,
    CorralError,
    LaunchRefusedError,
    StaleLeaderError,
)
from scheduler.domain.roots import AllowedRoots, within
from scheduler.domain.spec import env_of
from scheduler.domain.state import JobState
from scheduler.gangs.backend import Backend
from scheduler.gangs.protocol import JobFile, JobIdentity, LaunchRequest
from scheduler.gangs.registry import BackendRegistry
from scheduler.reconcile import fenced_write, maybe_retry, resume_point
from scheduler.trust import JobTrust

log = logging.getLogger("corral.tick")

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
HOLD_S = 30.0
"""Seconds a job whose launch met a full disk waits before it is admitted again."""


class _NotWanted(Exception):
    """A launched gang whose job moved on meanwhile (cancelled, or taken back)."""


class Dispatcher:
    """Launches admitted gangs on the backends of their pools (module docstring)."""

    def __init__(self, db: Database, backends: BackendRegistry, runs_dir: Path,
                 records_dir: Path | None = None, trust: JobTrust | None = None,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self.db = db
        self.backends = backends
        self.runs_dir = runs_dir
        self.records_dir = records_dir or runs_dir.parent / "records"
        """The service's own files per job (logs, launch and exit records), which the ranks
        cannot write: ``records/job-ID/``."""
        self.trust = trust
        """Server mode's job identities and allowed roots; None: embedded mode."""
        self.timer = timer
        self._held: dict[int, tuple[float, str]] = {}
        """Jobs whose launch met a full disk: job id -> (timer value until which the cycle's
        admissions of it are dropped, the reason shown as its pending reason)."""

    def without_held(self, result: CycleResult) -> CycleResult:
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

    def dispatch(self, admission: Admission, fence: Fence | None = None) -> bool:
        """Launch an admitted job's gang and record it RUNNING; False if it did not start.

        A gang whose RUNNING commit is refused, because this replica lost the lease meanwhile
        or the job was cancelled while it launched, is killed at once: no gang runs that the
        database does not know."""
        trust_error: CorralError | None = None
        with fenced_write(self.db, fence) as session:
            job = repo.get_job(session, admission.job_id, lock=True)
            if job.state != JobState.ADMITTED.value:
                return False
            pool = session.get(Pool, admission.pool_id)
            settings = pool.backend_settings if pool is not None else None
            accelerator = pool.accelerator if pool is not None else ""
            job.attempts += 1
            run_dir = Path(job.run_dir or self.runs_dir / f"job-{job.id}")
            checkpoint = resume_point(session, job)
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
                                env=env_of(job.spec), run_dir=str(run_dir), identity=identity,
                                accelerator=accelerator)
        backend: Backend | None = None
        try:
            if trust_error is not None:
                raise LaunchRefusedError(f"the tenant's job identity: {trust_error}")
            backend = self.backends.get(admission.backend, settings)
            if backend is None:
                raise BackendError(f"no backend {admission.backend!r} is configured here")
            handle = backend.launch(request)
        except (BackendError, OSError) as err:
            with fenced_write(self.db, fence) as session:
                job = repo.get_job(session, admission.job_id, lock=True)
                if job.state != JobState.ADMITTED.value or job.attempts != attempt:
                    return False  # cancelled meanwhile: nothing is left to fail
                repo.release(session, job)
                full = isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS
                if full or isinstance(err, BackendUnavailableError):
                    # Not the job's fault and no attempt spent: hold it until space returns,
                    # or its backend's machines can take it.
                    job.attempts -= 1
                    why = f"no space left for its files ({err})" if full else str(err)
                    reason = f"held: {why}; tried again every {HOLD_S:.0f} s"
                    repo.transition(session, job, JobState.PENDING, reason)
                    job.pending_reason = reason
                    self._held[job.id] = (self.timer() + HOLD_S, reason)
                    return False
                repo.transition(session, job, JobState.FAILED, f"launch failed: {err}")
                maybe_retry(session, job, not isinstance(err, LaunchRefusedError))
            return False
        try:
            with fenced_write(self.db, fence) as session:
                job = repo.get_job(session, admission.job_id, lock=True)
                if job.state != JobState.ADMITTED.value or job.attempts != attempt:
                    raise _NotWanted(f"job {job.id} is {job.state} at attempt {job.attempts}")
                job.backend_handle = handle
                job.progress_offset = 0  # the new gang's progress stream starts here
                resumed = f", resuming from {checkpoint}" if checkpoint else ""
                repo.transition(session, job, JobState.RUNNING,
                                f"attempt {attempt} started on {admission.backend}{resumed}",
                                {"attempt": attempt, "resume_from": checkpoint,
                                 "log": request.log_path, "backend": admission.backend,
                                 "pool": admission.pool_name,
                                 "handle": handle})
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
