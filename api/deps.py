"""Dependencies of the routes: the scheduler service, the caller, and the admin requirement.

Plain ``def`` dependencies run in FastAPI's threadpool, so the token lookup (a database read)
never blocks the event loop. A client address that keeps sending wrong tokens is throttled
(:mod:`api.throttle`, ``app.state.auth_throttle``).
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import Unauthorized
from api.settings import Settings
from api.throttle import AuthThrottle
from scheduler.auth import Principal, authenticate
from scheduler.domain.errors import ForbiddenError, LimitError
from scheduler.service import SchedulerService

DEFAULT_TENANT = "default"
ANONYMOUS = Principal(tenant=DEFAULT_TENANT, tenant_id=0, role="admin", token_id=0)
"""Who every request is when auth is off (allowed on a loopback address only)."""

bearer = HTTPBearer(auto_error=False, description="an API token: crl_... "
                                                  "(corral admin token issue)")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_service(request: Request) -> SchedulerService:
    service: SchedulerService = request.app.state.service
    return service


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[SchedulerService, Depends(get_service)]


def get_principal(request: Request, settings: SettingsDep, service: ServiceDep,
                  credentials: Annotated[HTTPAuthorizationCredentials | None,
                                         Depends(bearer)]) -> Principal:
    """The tenant and role of the request's bearer token; 401 without a valid one, 429 while
    the client's address is throttled for failed authentications."""
    if not settings.auth:
        return ANONYMOUS
    throttle: AuthThrottle = request.app.state.auth_throttle
    client = request.client.host if request.client else "unknown"
    wait_s = throttle.retry_after_s(client)
    if wait_s is not None:
        raise LimitError(f"{client} sent {throttle.limit} unknown or revoked tokens within "
                         f"{throttle.window_s:g} s: its requests are refused for "
                         f"{math.ceil(wait_s)} s more (Retry-After); check the token "
                         f"($CORRAL_TOKEN or `corral login`)", wait_s)
    if credentials is None:
        raise Unauthorized("send an API token: Authorization: Bearer crl_...")
    principal = authenticate(service.db, credentials.credentials)
    if principal is None:
        throttle.record_failure(client)
        raise Unauthorized("the token is unknown or revoked; ask an admin for a new one")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_admin(principal: PrincipalDep) -> Principal:
    """The caller, if it is an admin; 403 for members."""
    if not principal.is_admin:
        raise ForbiddenError("this route is for admins; a member token may not use it")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


def tenant_scope(principal: Principal) -> str | None:
    """The tenant a caller's job reads and writes are confined to; None: every tenant."""
    return None if principal.is_admin else principal.tenant
