"""Plan a job spec against the pools in the database: ``corral plan`` and submit checks.

Reads the pools (a read transaction), turns each matching pool into a planner option with its
accelerator's catalog figures (the pool's own price wins when it sets one), and runs the pure
planner. The caller supplies the planner's view of the model (``workers.model_config``
builds it for every job kind) or a pretraining model's full config dict, so this module needs
no ML framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any

from scheduler.cost.planner import (
    Candidate,
    PlanReport,
    PlanRequest,
    plan_job,
)
from scheduler.cost.profile import ModelProfile, model_profile
from scheduler.db import repo
from scheduler.db.session import Database
from scheduler.domain.errors import UnschedulableError
from scheduler.domain.resources import calibrated_for
from scheduler.domain.spec import JobSpec
from scheduler.policies.placement import matching_pools
from scheduler.shaping import pool_option

ModelInput = ModelProfile | Mapping[str, Any]
"""The planner's view of a job's model, or the model's full transformers config (a pretraining
job's model as it is: :func:`scheduler.cost.profile.model_profile` makes the view)."""


def as_profile(spec: JobSpec, model: ModelInput) -> ModelProfile:
    """The planner's view of ``spec``'s model, stepped by the optimizer the spec names."""
    profile = model if isinstance(model, ModelProfile) else model_profile(model, spec.data.seq_len)
    if profile.optimizer != spec.optimizer.name:
        profile = replace(profile, optimizer=spec.optimizer.name)
    return profile


def plan_request(spec: JobSpec, model: ModelInput,
                 now: datetime | None = None) -> PlanRequest:
    """The planner's request for ``spec``; a deadline counts from ``now`` (a new job)."""
    micro_batch = spec.batch.micro_batch
    now = now or datetime.now(UTC)
    deadline = spec.deadline_at(now)
    objective = "deadline" if deadline else ("budget" if spec.budget_usd else "completion")
    return PlanRequest(
        profile=as_profile(spec, model),
        seq_len=spec.data.seq_len, global_batch=spec.batch.global_batch,
        total_steps=spec.total_steps(), precision=spec.precision,
        micro_batch=None if micro_batch == "auto" else micro_batch,
        devices=spec.planned_devices,
        checkpoint_interval_steps=spec.checkpoint.interval_steps, objective=objective,
        deadline_s=(deadline - now).total_seconds() if deadline else None,
        budget_usd=spec.budget_usd, pins=spec.pins,
    )


def plan_spec(db: Database, spec: JobSpec, model: ModelInput) -> PlanReport:
    """Every candidate plan for ``spec`` on this cluster, ranked, with the rejected ones."""
    with db.read() as session:
        pools = repo.load_pool_views(session)
        calibration = repo.calibration_table(session)
    candidates = matching_pools(pools, spec.resources.pool, spec.resources.accelerator)
    if not candidates:
        raise UnschedulableError(
            f"no pool matches pool={spec.resources.pool!r} "
            f"accelerator={spec.resources.accelerator!r}; `corral pools` lists them")
    options = []
    for pool in candidates:
        try:
            options.append(pool_option(pool))
        except KeyError as err:
            raise UnschedulableError(f"pool {pool.name}: {err.args[0]}") from None
    return plan_job(plan_request(spec, model), options,
                    calibrated_for(calibration, spec.kind.value))


def profile_fields(spec: JobSpec, model: ModelInput) -> dict[str, Any]:
    """What the job row stores for the cycle to plan with (ModelProfile's fields)."""
    return asdict(as_profile(spec, model))


def report_dict(report: PlanReport) -> dict[str, Any]:
    """A plan report as JSON: ``POST /v1/plan``'s answer and what ``corral plan`` renders."""
    best = report.best
    return {"best": candidate_dict(best, explain=True) if best else None,
            "feasible": [candidate_dict(candidate) for candidate in report.ranked],
            "rejected": [candidate_dict(candidate) for candidate in report.rejected],
            "smallest_fix": report.smallest_fix() or None}


def candidate_dict(candidate: Candidate, explain: bool = False) -> dict[str, Any]:
    """One candidate plan as JSON; the prediction in words only when asked (it costs time)."""
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
