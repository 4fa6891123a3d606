"""Probes and metrics: ``/healthz`` (the process answers), ``/readyz`` (the database answers
at the expected schema), ``/metrics`` (Prometheus, behind a token; a member's shows only its
own tenant)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import PrincipalDep, ServiceDep, tenant_scope
from api.errors import Unavailable
from api.metrics import ApiMetrics
from api.routes import errors
from api.schemas import Health, Ready
from scheduler.db.health import readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def healthz() -> dict[str, Any]:
    """Liveness: the process serves requests (no database access)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, responses=errors())
def readyz(request: Request, service: ServiceDep) -> dict[str, Any]:
    """Readiness: the database answers, its schema is the one this server expects, and this
    replica's scheduler loop is not failing tick after tick."""
    ready = readiness(service.db)
    if not ready.ready:
        raise Unavailable(ready.problem)
    replica = getattr(request.app.state, "replica", None)
    failing = replica.failing if replica is not None else None
    if failing:
        raise Unavailable(failing)  # a balancer sends no more work to a replica that fails
    leader = bool(replica.is_leader) if replica is not None else None
    return {"status": "ready", "database": "ok", "schema": ready.revision, "leader": leader}


@router.get("/metrics", response_class=Response, responses={
    200: {"description": "Prometheus text exposition format",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
    **errors(401, 429)})
def metrics(request: Request, principal: PrincipalDep) -> Response:
    """Cluster gauges read from the database now (a member's: its own tenant's jobs only), and
    this replica's cycle timings."""
    registry: ApiMetrics = request.app.state.metrics
    return Response(registry.render(tenant_scope(principal)), media_type=CONTENT_TYPE_LATEST)
