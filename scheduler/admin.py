"""Quotas an admin manages (tenants' own settings: :mod:`scheduler.tenants`).

Each function is one transaction; a value the policies would refuse (a negative quota, a lending
limit above nominal) is refused here, before anything is written, with the rule that failed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from scheduler.db import repo
from scheduler.db.models import Quota, Tenant
from scheduler.db.session import Database
from scheduler.domain.errors import CorralError, NotFoundError
from scheduler.policies.quota import CohortQuota, TenantQuota


def set_quota(db: Database, accelerator: str, nominal: int, tenant: str | None = None,
              cohort: str | None = None, borrowing_limit: int | None = None,
              lending_limit: int | None = None) -> dict[str, Any]:
    """Set the quota of a tenant (or the devices a cohort owns) for one accelerator type."""
    if (tenant is None) == (cohort is None):
        raise CorralError("give exactly one of a tenant or --cohort")
    try:
        if tenant is not None:
            TenantQuota(tenant, accelerator, nominal, borrowing_limit, lending_limit)
        else:
            if borrowing_limit is not None or lending_limit is not None:
                raise CorralError("a cohort's own devices have no borrowing or lending limit")
            CohortQuota(cohort or "", accelerator, nominal)
    except ValueError as err:
        raise CorralError(str(err)) from None
    with db.write() as session:
        owner = repo.get_or_create_tenant(session, tenant) if tenant is not None else None
        query = select(Quota).where(func.lower(Quota.accelerator) == accelerator.lower())
        query = query.where(Quota.tenant_id == owner.id) if owner is not None \
            else query.where(Quota.cohort == cohort)
        row = session.scalar(query.with_for_update())
        if row is None:
            row = Quota(tenant_id=owner.id if owner else None,
                        cohort=None if owner else cohort, accelerator=accelerator,
                        nominal=nominal)
            session.add(row)
        row.nominal = nominal
        row.borrowing_limit = borrowing_limit
        row.lending_limit = lending_limit
        session.flush()
        return _quota_row(row, tenant)


def delete_quota(db: Database, accelerator: str, tenant: str | None = None,
                 cohort: str | None = None) -> None:
    if (tenant is None) == (cohort is None):
        raise CorralError("give exactly one of a tenant or --cohort")
    with db.write() as session:
        query = select(Quota).where(func.lower(Quota.accelerator) == accelerator.lower())
        if tenant is not None:
            query = query.join(Tenant, Tenant.id == Quota.tenant_id).where(Tenant.name == tenant)
        else:
            query = query.where(Quota.cohort == cohort)
        row = session.scalar(query)
        if row is None:
            raise NotFoundError(f"no {accelerator} quota for {tenant or 'cohort ' + str(cohort)}")
        session.delete(row)


def list_quotas(db: Database) -> list[dict[str, Any]]:
    with db.read() as session:
        names = dict(session.execute(select(Tenant.id, Tenant.name)).all())
        cohorts = dict(session.execute(select(Tenant.id, Tenant.cohort)).all())
        rows = []
        for row in session.scalars(select(Quota).order_by(Quota.id)):
            name = names.get(row.tenant_id) if row.tenant_id is not None else None
            listed = _quota_row(row, name)
            if row.tenant_id is not None:
                listed["cohort"] = cohorts.get(row.tenant_id)
            rows.append(listed)
        return rows


def _quota_row(row: Quota, tenant: str | None) -> dict[str, Any]:
    return {"tenant": tenant, "cohort": row.cohort, "accelerator": row.accelerator,
            "nominal": row.nominal, "borrowing_limit": row.borrowing_limit,
            "lending_limit": row.lending_limit}
