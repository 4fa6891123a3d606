"""Plan a job spec against the pools in the database: ``corral plan`` and submit checks.

Reads the pools (a read transaction), turns each matching pool into a planner option with its
accelerator's catalog figures (the pool's own price wins when it sets one), and runs the pure
planner. The caller supplies the model's full config dict (``workers.core.model_config``), so
this module needs no ML framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from scheduler.cost.planner import PlanReport, PlanRequest, model_profile, plan_job
from scheduler.cycle import pool_option
from scheduler.db import repo
from scheduler.db.session import Database
from scheduler.domain.errors import UnschedulableError
from scheduler.domain.spec import JobSpec
from scheduler.policies.placement import matching_pools


def plan_request(spec: JobSpec, model_config: Mapping[str, Any]) -> PlanRequest:
    devices = spec.resources.devices
    micro_batch = spec.batch.micro_batch
    return PlanRequest(
        profile=model_profile(model_config, spec.data.seq_len),
        seq_len=spec.data.seq_len, global_batch=spec.batch.global_batch,
        total_steps=spec.total_steps(), precision=spec.precision,
        micro_batch=None if micro_batch == "auto" else micro_batch,
        devices=None if devices == "auto" else devices,
        checkpoint_interval_steps=spec.checkpoint.interval_steps,
    )


def plan_spec(db: Database, spec: JobSpec, model_config: Mapping[str, Any]) -> PlanReport:
    """Every candidate plan for ``spec`` on this cluster, ranked, with the rejected ones."""
    with db.read() as session:
        pools = repo.load_pool_views(session)
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
    return plan_job(plan_request(spec, model_config), options)


def profile_fields(spec: JobSpec, model_config: Mapping[str, Any]) -> dict[str, float]:
    """What the job row stores for the cycle to plan with (ModelProfile's fields)."""
    return asdict(model_profile(model_config, spec.data.seq_len))
