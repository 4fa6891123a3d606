"""What a job did and why: its events, the scheduler's explanation, and its log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import PrincipalDep, ServiceDep, tenant_scope
from api.logs import read_masked
from api.routes import AUTHED, errors
from api.routes.jobs import JobId
from api.schemas import MAX_DB_ID, EventList, JobExplain, JobLogs
from scheduler import job_views
from scheduler.domain.errors import NotFoundError

router = APIRouter(prefix="/v1", tags=["jobs"])

MAX_LOG_BYTES = 1_048_576
DEFAULT_LOG_BYTES = 65_536


@router.get("/jobs/{job_id}/events", response_model=EventList, responses=errors(*AUTHED, 404))
def job_events(job_id: JobId, principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    """Every state move and note of the job, oldest first, each with its reason."""
    return {"items": job_views.job_events(service.db, job_id, tenant_scope(principal))}


@router.get("/jobs/{job_id}/explain", response_model=JobExplain,
            responses=errors(*AUTHED, 404))
def explain_job(job_id: JobId, principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    """Why the job is where it is: why it is pending, and the newest event about it."""
    return job_views.explain(service.db, job_id, tenant_scope(principal))


@router.get("/jobs/{job_id}/logs", response_model=JobLogs, responses=errors(*AUTHED, 404))
def job_logs(
    job_id: JobId, principal: PrincipalDep, service: ServiceDep,
    attempt: Annotated[int | None, Query(ge=1, le=1_000_000,
                                         description="default: the latest")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_ID,
                                 description="byte offset to read from")] = 0,
    max_bytes: Annotated[int, Query(ge=1, le=MAX_LOG_BYTES)] = DEFAULT_LOG_BYTES,
) -> dict[str, Any]:
    """The log of all ranks of one attempt, from a byte offset, with secret env values masked.

    Follow a log by asking again from the returned ``offset`` until ``finished``."""
    scope = tenant_scope(principal)
    context = job_views.log_context(service.db, job_id, scope)
    if attempt is not None and attempt > context.attempts:
        raise NotFoundError(f"job {job_id} has no attempt {attempt}; attempts so far: "
                            f"{context.attempts}")
    log = service.log_source(job_id, attempt, scope)
    # An earlier attempt's log is complete even while the job runs on.
    complete = context.finished or (attempt is not None and attempt < context.attempts)
    data, next_offset = read_masked(log, offset, max_bytes, context.secrets, complete)
    return {"attempt": attempt, "latest_attempt": context.attempts, "offset": next_offset,
            "data": data, "finished": context.finished}
