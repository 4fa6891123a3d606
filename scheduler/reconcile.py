"""The scheduler's view of the gangs it launched: signal, poll, ingest progress, settle.

:class:`Reconciler` is the first step of every tick (:class:`scheduler.tick.Ticker` holds
one): it sends each gang told to stop (a cancel requested through the API, a preemption not
signalled yet) its one SIGTERM and kills one that overstays its grace period; polls every gang
that holds devices and folds its new progress events into the job; and settles gangs that
ended — succeeded, failed (retried while attempts remain, from the newest checkpoint on disk),
preempted (requeued), cancelled. An ADMITTED job whose launch never got recorded gives its
devices back (docs/replicas.md). Every write goes through :func:`fenced_write`, which
checks the scheduler lease first when a :class:`~scheduler.db.lease.Fence` is given.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.calibrate import recalibrate
from scheduler.db import lease, repo
from scheduler.db.lease import Fence
from scheduler.db.models import Allocation, Job, Pool, as_utc, utcnow
from scheduler.db.session import Database
from scheduler.domain.errors import BackendError
from scheduler.domain.state import LIVE_STATES, JobState
from scheduler.gangs.artifacts import ArtifactStore
from scheduler.gangs.backend import Backend, GangPhase, GangStatus
from scheduler.gangs.registry import BackendRegistry
from scheduler.progress import apply_progress

log = logging.getLogger("corral.tick")

UNLAUNCHED_TIMEOUT_S = 120.0
"""Seconds an ADMITTED job may wait for its launch before another scheduler takes it back
(``SchedulerService(unlaunched_timeout_s=...)``, ``CORRAL_UNLAUNCHED_TIMEOUT_S``)."""

DEFAULT_GRACE_S = 30.0
"""Seconds a gang gets between SIGTERM and SIGKILL to write its checkpoint."""


class Reconciler:
    """Keeps the database in step with the gangs on the backends (module docstring)."""

    def __init__(self, db: Database, backends: BackendRegistry,
                 grace_s: float = DEFAULT_GRACE_S,
                 unlaunched_timeout_s: float = UNLAUNCHED_TIMEOUT_S) -> None:
        self.db = db
        self.backends = backends
        """Each pool's backend; the service's own registry, shared with the dispatcher."""
        self.grace_s = grace_s
        self.unlaunched_timeout_s = unlaunched_timeout_s
        self.unreachable: dict[int, str] = {}
        """Jobs whose gang could not be polled on the last pass, and why (logged as well;
        nothing shows it to users yet)."""

    def signal_preemptions(self, fence: Fence | None = None) -> None:
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
            backend_of = backends_of_pools(session)
        for job_id, handle, pool_id, signalled_at, cancelling in told:
            backend = self.backends.get(*backend_of.get(pool_id or -1, ("", None)))
            if handle is None or backend is None:
                continue
            why = "cancellation" if cancelling else "preemption"
            try:
                self._stop(job_id, backend, handle, signalled_at, why, fence)
            except BackendError as err:
                log.warning("job %s: cannot signal its gang for %s: %s", job_id, why, err)

    def _stop(self, job_id: int, backend: Backend, handle: str, signalled_at: Any, why: str,
              fence: Fence | None) -> None:
        """The one SIGTERM of a gang told to stop, or its kill once it overstayed its grace."""
        if signalled_at is None:
            backend.preempt(handle)
            with fenced_write(self.db, fence) as session:
                job = repo.get_job(session, job_id, lock=True)
                job.preempt_signalled_at = utcnow()
                repo.note(session, job, f"SIGTERM sent: checkpoint and stop for {why}")
        elif (utcnow() - as_utc(signalled_at)).total_seconds() > self.grace_s:
            log.warning("job %s ignored its %s for %.0f s; killing it", job_id, why,
                        self.grace_s)
            backend.cancel(handle, 0.0)


    # --- reconcile --------------------------------------------------------------------------

    def reconcile(self, fence: Fence | None = None) -> dict[int, str]:
        """Poll every gang that holds devices; ingest its progress; settle the ones that ended.
        Returns the states those jobs ended in, by job id."""
        ended: dict[int, str] = {}
        with self.db.read() as session:
            live = [(job.id, job.backend_handle, job.pool_id, job.progress_offset)
                    for job in repo.list_jobs(session, states=LIVE_STATES, limit=100_000)]
            backend_of = backends_of_pools(session)
        for job_id, handle, pool_id, progress_offset in live:
            if handle is None:
                self._expire_unlaunched(job_id, fence)
                continue
            backend = self.backends.get(*backend_of.get(pool_id or -1, ("", None)))
            if backend is None:
                continue
            try:
                status = backend.poll(handle)  # first: once it ended, its events are complete
                self.ingest_progress(job_id, backend, handle, progress_offset, fence)
            except BackendError as err:
                # Its machines cannot be reached now (or answered with an error): the job
                # stays as recorded until they can, never failed for the backend's outage, and
                # no other job waits for it.
                log.warning("job %s: cannot poll its gang: %s", job_id, err)
                self.unreachable[job_id] = str(err)
                continue
            self.unreachable.pop(job_id, None)
            if status.phase is not GangPhase.RUNNING:
                outcome = self.settle(job_id, status, fence, handle)
                if outcome:
                    ended[job_id] = outcome
        return ended

    def _expire_unlaunched(self, job_id: int, fence: Fence | None = None) -> None:
        """An ADMITTED job whose dispatcher died before launching gives its devices back.

        A job admitted under an older lease epoch is taken back at once: the replica that
        admitted it no longer leads, so its RUNNING commit would fail the fence (and it kills
        any gang it launched). It is requeued without counting as a failure."""
        with fenced_write(self.db, fence) as session:
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
            maybe_retry(session, job)

    def ingest_progress(self, job_id: int, backend: Backend, handle: str, cursor: int,
                         fence: Fence | None = None) -> None:
        """Fold the gang's new progress events (through its backend, from ``cursor``) into the
        job; no write transaction when there is nothing new."""
        events, after = backend.events(handle, cursor)
        if not events and after == cursor:
            return
        with fenced_write(self.db, fence) as session:
            job = repo.get_job(session, job_id, lock=True)
            if job.backend_handle != handle or job.progress_offset != cursor:
                return  # the job moved on, or another writer read these events already
            job.progress_offset = after
            for event in events:
                apply_progress(session, job, event)

    def settle(self, job_id: int, status: GangStatus, fence: Fence | None = None,
                handle: str | None = None) -> str | None:
        """Record how a gang ended; with ``handle``, only if it is still the job's gang."""
        with fenced_write(self.db, fence) as session:
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
                maybe_retry(session, job, status.retryable)
            return job.state


def backends_of_pools(session: Session) -> dict[int, tuple[str, dict[str, str] | None]]:
    """Pool id -> its backend's name and settings, to look the backend up in the registry."""
    return {pool.id: (pool.backend, pool.backend_settings) for pool in repo.list_pools(session)}


@contextmanager
def fenced_write(db: Database, fence: Fence | None) -> Iterator[Session]:
    """A write transaction of the tick; with ``fence``, only while the lease is still ours."""
    with db.write() as session:
        if fence is not None:
            lease.check(session, fence, utcnow())
        yield session


def resume_point(session: Any, job: Job) -> str | None:
    """The newest checkpoint of the job that is still there (as far as the scheduler can tell
    through :class:`~scheduler.gangs.artifacts.ArtifactStore`), to resume its next attempt."""
    pool = session.get(Pool, job.pool_id) if job.pool_id else None
    store = ArtifactStore.for_backend(pool.backend if pool is not None else "local")
    for checkpoint in reversed(repo.checkpoints(session, job.id)):
        if store.usable(checkpoint.path):
            return checkpoint.path
    return None


def maybe_retry(session: Any, job: Job, retryable: bool = True) -> None:
    """Requeue a failed job while attempts remain (from its newest checkpoint), unless its
    failure would repeat; note why not otherwise."""
    if not retryable:
        repo.note(session, job, "not retried: this failure would repeat on every attempt; "
                                "fix the spec or its files and submit again")
        return
    failures = repo.failure_count(session, job.id)
    if failures < job.max_attempts:
        checkpoint = resume_point(session, job)
        where = f"from checkpoint {checkpoint}" if checkpoint else "from the start"
        repo.transition(session, job, JobState.PENDING,
                        f"retry after failure {failures} of {job.max_attempts} allowed; "
                        f"resumes {where}")
    else:
        repo.note(session, job, f"gave up after {failures} failures "
                                f"(resources.max_attempts = {job.max_attempts})")
