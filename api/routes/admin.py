"""Tenancy, for admins only: tenants and their limits, quotas, API tokens; the cost model's
calibration table."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.admin_schemas import (
    ACCELERATOR_PATTERN,
    CalibrationList,
    CalibrationReset,
    QuotaDeleted,
    QuotaList,
    QuotaPublic,
    QuotaSet,
    TenantList,
    TenantPublic,
    TenantUpdate,
    TokenCreate,
    TokenIssued,
    TokenList,
    TokenPublic,
)
from api.deps import AdminDep, ServiceDep
from api.routes import AUTHED, errors
from api.schemas import MAX_DB_ID, NAME_PATTERN
from scheduler import admin, auth, calibrate, tenants
from scheduler.domain.errors import ConflictError, CorralError
from scheduler.domain.plan import Strategy
from scheduler.domain.spec import JobKind

router = APIRouter(prefix="/v1", tags=["admin"])

ADMIN = (*AUTHED, 403)
Name = Annotated[str, Path(min_length=1, max_length=128, pattern=NAME_PATTERN)]
OptionalName = Annotated[str | None, Query(min_length=1, max_length=128, pattern=NAME_PATTERN)]


@router.get("/tenants", response_model=TenantList, responses=errors(*ADMIN))
def list_tenants(_admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Every tenant with its cohort, fair-share weight and limits (null: the server default)."""
    return {"items": tenants.list_tenants(service.db)}


@router.put("/tenants/{name}", response_model=TenantPublic, responses=errors(*ADMIN))
def set_tenant(name: Name, body: TenantUpdate, _admin: AdminDep,
               service: ServiceDep) -> dict[str, Any]:
    """Create or change a tenant: fields left out stay, ``null`` clears (back to default)."""
    changes = body.model_dump(include=body.model_fields_set)
    return tenants.update_tenant(service.db, name, changes)


@router.get("/quotas", response_model=QuotaList, responses=errors(*ADMIN))
def list_quotas(_admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Every quota: a tenant's per accelerator, or the devices a cohort owns."""
    return {"items": admin.list_quotas(service.db)}


@router.put("/quotas", response_model=QuotaPublic, responses=errors(*ADMIN))
def set_quota(body: QuotaSet, _admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Set the quota of a tenant (or the devices of a cohort) for one accelerator type."""
    return admin.set_quota(service.db, body.accelerator, body.nominal, tenant=body.tenant,
                           cohort=body.cohort, borrowing_limit=body.borrowing_limit,
                           lending_limit=body.lending_limit)


@router.delete("/quotas", response_model=QuotaDeleted, responses=errors(*ADMIN, 404))
def delete_quota(
    _admin: AdminDep, service: ServiceDep,
    accelerator: Annotated[str, Query(min_length=1, max_length=64,
                                      pattern=ACCELERATOR_PATTERN)],
    tenant: OptionalName = None, cohort: OptionalName = None,
) -> dict[str, Any]:
    """Remove the quota of a tenant (or cohort) for one accelerator type."""
    if (tenant is None) == (cohort is None):
        raise CorralError("give exactly one of the query parameters tenant or cohort")
    admin.delete_quota(service.db, accelerator, tenant=tenant, cohort=cohort)
    return {"tenant": tenant, "cohort": cohort, "accelerator": accelerator, "deleted": True}


@router.get("/tokens", response_model=TokenList, responses=errors(*ADMIN))
def list_tokens(_admin: AdminDep, service: ServiceDep,
                tenant: OptionalName = None) -> dict[str, Any]:
    """Every token (of one tenant), without the tokens themselves: only their prefixes."""
    return {"items": auth.list_tokens(service.db, tenant)}


@router.post("/tokens", status_code=201, response_model=TokenIssued, responses=errors(*ADMIN))
def issue_token(body: TokenCreate, _admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Issue a token for a tenant (created if new); the token is in this answer only."""
    token, row = auth.issue_token(service.db, body.tenant, body.role, body.name)
    return {"token": token, **row}


@router.delete("/tokens/{token_id}", response_model=TokenPublic,
               responses=errors(*ADMIN, 404, 409))
def revoke_token(token_id: Annotated[int, Path(ge=1, le=MAX_DB_ID)], principal: AdminDep,
                 service: ServiceDep) -> dict[str, Any]:
    """Revoke a token: it authenticates nothing from now on."""
    if token_id == principal.token_id:
        raise ConflictError("this request is authenticated by that token; revoke it with "
                            "another admin token, so that an admin is always left")
    return auth.revoke_token(service.db, token_id)


@router.get("/admin/calibration", response_model=CalibrationList, responses=errors(*ADMIN))
def list_calibration(_admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Every measured efficiency η, with its weight and the prior η it replaces."""
    return {"items": calibrate.list_calibration(service.db)}


@router.delete("/admin/calibration", response_model=CalibrationReset, responses=errors(*ADMIN))
def reset_calibration(
    principal: AdminDep, service: ServiceDep,
    accelerator: Annotated[str | None, Query(min_length=1, max_length=64,
                                             pattern=ACCELERATOR_PATTERN)] = None,
    strategy: Strategy | None = None, kind: JobKind | None = None,
) -> dict[str, Any]:
    """Delete the rows matching every filter given (every row without one), in one transaction:
    plans there fall back to the prior η until jobs measure it again."""
    deleted = calibrate.reset_calibration(
        service.db, accelerator, strategy.value if strategy else None,
        kind.value if kind else None,
        by=f"admin token {principal.token_id} of tenant {principal.tenant}")
    return {"accelerator": accelerator, "strategy": strategy, "kind": kind, "deleted": deleted}
