"""A dry run: every candidate plan for a job spec on this cluster, without submitting it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import PrincipalDep, ServiceDep
from api.routes import AUTHED, errors
from api.schemas import PlanPublic, PlanRequest
from api.submission import plan_model, spec_for
from scheduler.cost.planner import Candidate
from scheduler.domain.errors import SpecError
from scheduler.planning import plan_spec

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
    best = report.best
    return {"best": plan_row(best, explain=True) if best else None,
            "feasible": [plan_row(candidate) for candidate in report.ranked],
            "rejected": [plan_row(candidate) for candidate in report.rejected],
            "smallest_fix": report.smallest_fix() or None}


def plan_row(candidate: Candidate, explain: bool = False) -> dict[str, Any]:
    """One candidate as the API lists it; the prediction in words only when asked (costly)."""
    return {
        "pool": candidate.pool, "accelerator": candidate.accelerator,
        "devices": candidate.plan.world_size, "plan": candidate.plan.describe(),
        "plan_detail": candidate.plan.to_dict(), "fits": candidate.fits,
        "why_not": candidate.why_not, "memory_bytes": candidate.memory_bytes,
        "memory_limit_bytes": candidate.memory_limit_bytes,
        "step_time_s": candidate.step_time_s, "run_time_s": candidate.run_time_s,
        "completion_s": candidate.completion_s, "price_usd": candidate.price_usd,
        "memory_explain": candidate.memory_explain if explain else None,
        "step_time_explain": candidate.time_explain if explain else None,
    }
