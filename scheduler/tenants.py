"""Tenants with everything an admin sets on them: cohort, fair-share weight, the limits
submissions are checked against (pending jobs, submissions per minute, highest priority), and
what its jobs are trusted with (the identity its ranks run as, the folders they may read).

:func:`update_tenant` changes only the fields it is given, in one write transaction; a limit set
to None falls back to the server's default (:class:`scheduler.db.submissions.SubmitLimits`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from scheduler.db import repo
from scheduler.db.models import Tenant
from scheduler.db.session import Database
from scheduler.domain.errors import CorralError
from scheduler.domain.roots import check_root_list
from scheduler.trust import parse_job_user

DEFAULT_WEIGHT = 1.0
LIMIT_FIELDS = ("max_pending_jobs", "submissions_per_minute", "max_priority")
TRUST_FIELDS = ("job_user", "data_roots", "model_roots")
"""Whom the tenant's ranks run as and which folders they may read (scheduler.trust); None:
the server's settings."""
FIELDS = ("cohort", "weight", *LIMIT_FIELDS, *TRUST_FIELDS)
PRIORITY_RANGE = (-1000, 1000)
"""The range resources.priority takes in a job spec."""


def update_tenant(db: Database, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Create tenant ``name`` if new and apply ``changes`` (a subset of :data:`FIELDS`);
    ``weight: None`` restores the default weight. Returns the tenant as listed."""
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise CorralError(f"unknown tenant fields {', '.join(unknown)}; known: "
                          f"{', '.join(FIELDS)}")
    _check(changes)
    changes = {**changes, **{field: check_root_list(field, changes[field])
                             for field in ("data_roots", "model_roots")
                             if changes.get(field) is not None}}
    with db.write() as session:
        tenant = repo.get_or_create_tenant(session, name)
        for field, value in changes.items():
            if field == "weight" and value is None:
                value = DEFAULT_WEIGHT
            setattr(tenant, field, value)
        session.flush()
        return tenant_row(tenant)


def list_tenants(db: Database) -> list[dict[str, Any]]:
    with db.read() as session:
        return [tenant_row(t) for t in session.scalars(select(Tenant).order_by(Tenant.name))]


def tenant_row(tenant: Tenant) -> dict[str, Any]:
    return {"name": tenant.name, "cohort": tenant.cohort, "weight": tenant.weight,
            "max_pending_jobs": tenant.max_pending_jobs,
            "submissions_per_minute": tenant.submissions_per_minute,
            "max_priority": tenant.max_priority, "job_user": tenant.job_user,
            "data_roots": tenant.data_roots, "model_roots": tenant.model_roots}


def _check(changes: Mapping[str, Any]) -> None:
    """Refuse values the policies could not use, naming the rule."""
    weight = changes.get("weight")
    if weight is not None and not (math.isfinite(weight) and weight > 0):
        raise CorralError(f"weight must be a finite number > 0 (a share of the cluster), "
                          f"got {weight}")
    pending = changes.get("max_pending_jobs")
    if pending is not None and pending < 0:
        raise CorralError(f"max_pending_jobs must be >= 0 (0 refuses every submission), got "
                          f"{pending}")
    rate = changes.get("submissions_per_minute")
    if rate is not None and rate < 1:
        raise CorralError(f"submissions_per_minute must be >= 1 (stop a tenant with "
                          f"max_pending_jobs: 0), got {rate}")
    job_user = changes.get("job_user")
    if job_user is not None:
        parse_job_user(job_user)  # a name this machine knows, or UID[:GID]
    priority = changes.get("max_priority")
    low, high = PRIORITY_RANGE
    if priority is not None and not low <= priority <= high:
        raise CorralError(f"max_priority must be within {low}..{high} like resources.priority, "
                          f"got {priority}")
