"""A dry run: every candidate plan for a job spec on this cluster, without submitting it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import PrincipalDep, ServiceDep
from api.routes import AUTHED, errors
from api.schemas import PlanPublic, PlanRequest
from api.submission import plan_model, spec_for
from scheduler.domain.errors import SpecError
from scheduler.planning import plan_spec, report_dict

router = APIRouter(prefix="/v1", tags=["jobs"])


@router.post("/plan", response_model=PlanPublic, responses=errors(*AUTHED, 403))
def plan_job(body: PlanRequest, principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    """Predict memory, step time, total time and price of every plan on every matching pool,
    best first, and say why the others were rejected."""
    spec = spec_for(principal, body.spec)
    try:
        report = plan_spec(service.db, spec, plan_model(service, spec))
    except ArithmeticError:
        raise SpecError("the cost model overflows on this spec's numbers (model size, batch, "
                        "steps); check them") from None
    return report_dict(report)
