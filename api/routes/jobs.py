"""Jobs: submit, list, describe, cancel (``/v1/jobs``), and who the caller is."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response

from api.deps import PrincipalDep, ServiceDep, SettingsDep, tenant_scope
from api.routes import AUTHED, errors
from api.schemas import (
    MAX_DB_ID,
    NAME_PATTERN,
    JobCancelled,
    JobDetail,
    JobList,
    JobPublic,
    JobSubmit,
    JobSubmitted,
    WhoAmI,
    project,
)
from api.submission import request_sha256, spec_for, submit_model
from scheduler.domain.errors import ForbiddenError, SpecError
from scheduler.domain.state import JobState

router = APIRouter(prefix="/v1", tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="the job's id")]
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]([ -~]*[!-~])?$"
"""1-256 printable ASCII characters, not starting or ending with a space."""


@router.get("/whoami", response_model=WhoAmI, responses=errors(*AUTHED))
def whoami(principal: PrincipalDep) -> dict[str, Any]:
    """The tenant and role of the caller's token."""
    return {"tenant": principal.tenant, "role": principal.role}


@router.post(
    "/jobs", status_code=201, response_model=JobSubmitted,
    responses={200: {"model": JobSubmitted, "description": "a replay: the job an earlier "
                     "request with the same Idempotency-Key and spec made"},
               **errors(*AUTHED, 403, 409, 429)})
def submit_job(
    body: JobSubmit, principal: PrincipalDep, service: ServiceDep, settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(
        min_length=1, max_length=256, pattern=IDEMPOTENCY_KEY_PATTERN,
        description="makes a retried submission safe: the same key and spec answer with the "
                    "first job (200) instead of making another")] = None,
) -> dict[str, Any]:
    """Validate and queue a job; it is stored before the answer (201)."""
    spec = spec_for(principal, body.spec)
    try:
        submitted = service.submit_request(
            spec, submit_model(service, spec), idempotency_key=idempotency_key,
            request_sha256=request_sha256(body.spec), limits=settings.submit_limits(),
            is_admin=principal.is_admin)
    except ArithmeticError:
        raise SpecError("the cost model overflows on this spec's numbers (model size, batch, "
                        "steps); check them") from None
    if not submitted.created:
        response.status_code = 200
    state = service.job_state(submitted.job_id)
    return {"id": submitted.job_id, "name": spec.name, "state": state,
            "created": submitted.created}


@router.get("/jobs", response_model=JobList, responses=errors(*AUTHED, 403))
def list_jobs(
    principal: PrincipalDep, service: ServiceDep,
    state: Annotated[list[JobState] | None, Query(
        description="repeatable; default: the live states PENDING, ADMITTED, RUNNING, "
                    "PREEMPTED")] = None,
    include_all: Annotated[bool, Query(alias="all", description="every state")] = False,
    name: Annotated[str | None, Query(max_length=128, pattern=NAME_PATTERN)] = None,
    tenant: Annotated[str | None, Query(max_length=128, pattern=NAME_PATTERN,
                                        description="admins: one tenant's jobs only")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_DB_ID,
                                           description="page on: jobs older than this id")]
    = None,
) -> dict[str, Any]:
    """Jobs newest first, a page at a time; a member sees its own tenant's only."""
    if not principal.is_admin and tenant not in (None, principal.tenant):
        raise ForbiddenError(f"tenant: a member of {principal.tenant!r} lists only its own "
                             f"tenant's jobs; leave tenant out")
    scope = tenant if principal.is_admin else principal.tenant
    rows = service.queue(include_finished=include_all, limit=limit, tenant=scope,
                         states=list(dict.fromkeys(state)) if state else None, name=name,
                         before_id=before_id)
    items = [project(JobPublic, row) for row in rows]
    return {"items": items, "next_before_id": rows[-1]["id"] if len(rows) == limit else None}


@router.get("/jobs/{job_id}", response_model=JobDetail, responses=errors(*AUTHED, 404))
def get_job(job_id: JobId, principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    """Everything about one job: spec (secrets masked), plan, progress, events, checkpoints."""
    return project(JobDetail, service.describe(job_id, tenant_scope(principal)))


@router.post("/jobs/{job_id}/cancel", response_model=JobCancelled,
             responses=errors(*AUTHED, 404, 409))
def cancel_job(job_id: JobId, principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    """Cancel a job: at once if it holds no devices, else its gang is stopped by the leading
    scheduler (SIGTERM, then SIGKILL after the grace period). Returns the state now."""
    state = service.request_cancel(
        job_id, f"cancelled through the API by {principal.role} of {principal.tenant}",
        tenant_scope(principal))
    return {"id": job_id, "state": state}
