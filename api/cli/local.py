"""Embedded mode behind the CLI's seam: the scheduler service and the database in this process.

Answers have the shapes the REST API serves (:mod:`api.cli.seam`), so every command and
renderer works the same over :class:`EmbeddedCorral` and :class:`api.cli.remote.RemoteCorral`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api.cli.seam import FINAL_STATES
from api.embedded import open_embedded, prepare_database
from api.model_inputs import model_profile_for, submit_profile
from scheduler import admin, auth, calibrate, tenants
from scheduler.db.session import Database, default_url
from scheduler.domain.spec import JobSpec
from scheduler.planning import plan_spec, report_dict
from scheduler.service import SchedulerService


class EmbeddedCorral:
    """Jobs and pools through a :class:`SchedulerService` over the embedded database."""

    is_remote = False

    def __init__(self, service: SchedulerService | None = None, **policies: Any) -> None:
        self._service = service
        self._policies = policies

    @property
    def service(self) -> SchedulerService:
        """Opened on first use, so that ``--help`` and argument errors touch no database."""
        if self._service is None:
            self._service = open_embedded(**self._policies)
        return self._service

    def submit(self, spec: JobSpec) -> int:
        return self.service.submit(spec, submit_profile(self.service, spec))

    def queue(self, show_all: bool, limit: int, tenant: str | None = None) -> list[dict[str, Any]]:
        return self.service.queue(include_finished=show_all, limit=limit, tenant=tenant)

    def describe(self, job_id: int) -> dict[str, Any]:
        return self.service.describe(job_id)

    def cancel(self, job_id: int, reason: str = "cancelled by user") -> str:
        """Cancel and, for a running gang, wait for it to stop (SIGTERM, grace, SIGKILL)."""
        return self.service.cancel(job_id, reason)

    def log_chunk(self, job_id: int, attempt: int | None, offset: int,
                  max_bytes: int = 1 << 20) -> dict[str, Any]:
        """What the log of ``attempt`` (default: the latest) holds from byte ``offset``, as
        ``GET /v1/jobs/{id}/logs`` answers (``attempt`` as asked; ``latest_attempt`` 0: no
        attempt has started)."""
        info = self.service.describe(job_id)
        log = self.service.log_source(job_id, attempt)
        chunk = log.read(offset, max_bytes) if log is not None else b""
        return {"attempt": attempt, "latest_attempt": info["attempts"],
                "offset": offset + len(chunk), "data": chunk.decode(errors="replace"),
                "finished": info["state"] in FINAL_STATES}

    def plan(self, spec: JobSpec, earlier: Mapping[str, JobSpec]) -> dict[str, Any]:
        profile = model_profile_for(self.service, spec, earlier)
        return report_dict(plan_spec(self.service.db, spec, profile))

    def pools(self) -> list[dict[str, Any]]:
        return self.service.pools()

    def add_pool(self, name: str, backend: str, accelerator: str, nodes: int,
                 devices_per_node: int, price: float, peak_tflops: float | None,
                 settings: dict[str, str] | None = None) -> None:
        self.service.add_pool(name, backend, accelerator, nodes, devices_per_node, price,
                              peak_tflops, settings)

    def sync_pools(self, address: str, prefix: str,
                   cpu_peak_tflops: float | None) -> list[dict[str, Any]]:
        return self.service.sync_pools("ray", {"address": address}, prefix, cpu_peak_tflops)

    def step(self) -> None:
        """One scheduler tick: embedded ``corral run`` schedules its own job."""
        self.service.tick()


class EmbeddedAdmin:
    """Tenants, quotas and tokens written straight into the database: how the first admin
    token of a new server is made (``CORRAL_DATABASE_URL=... corral admin token issue``)."""

    def __init__(self, url: str | None = None) -> None:
        self._url = url
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self._url or default_url())
            prepare_database(self._db)
        return self._db

    def tenants(self) -> list[dict[str, Any]]:
        return tenants.list_tenants(self.db)

    def set_tenant(self, name: str, clear_cohort: bool = False, clear: tuple[str, ...] = (),
                   **changes: Any) -> dict[str, Any]:
        given = {field: value for field, value in changes.items() if value is not None}
        if clear_cohort:
            given["cohort"] = None
        given.update(dict.fromkeys(clear))
        return tenants.update_tenant(self.db, name, given)

    def quotas(self) -> list[dict[str, Any]]:
        return admin.list_quotas(self.db)

    def set_quota(self, accelerator: str, nominal: int, tenant: str | None, cohort: str | None,
                  borrowing_limit: int | None, lending_limit: int | None) -> dict[str, Any]:
        return admin.set_quota(self.db, accelerator, nominal, tenant, cohort, borrowing_limit,
                               lending_limit)

    def delete_quota(self, accelerator: str, tenant: str | None, cohort: str | None) -> None:
        admin.delete_quota(self.db, accelerator, tenant, cohort)

    def tokens(self, tenant: str | None) -> list[dict[str, Any]]:
        return auth.list_tokens(self.db, tenant)

    def issue_token(self, tenant: str, role: auth.Role, name: str) -> dict[str, Any]:
        token, row = auth.issue_token(self.db, tenant, role, name)
        return {"token": token, **row}

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        return auth.revoke_token(self.db, token_id)

    def calibration(self) -> list[dict[str, Any]]:
        return calibrate.list_calibration(self.db)

    def reset_calibration(self, accelerator: str | None, strategy: str | None,
                          kind: str | None) -> dict[str, Any]:
        deleted = calibrate.reset_calibration(self.db, accelerator, strategy, kind,
                                              by="the embedded CLI")
        return {"accelerator": accelerator, "strategy": strategy, "kind": kind,
                "deleted": deleted}

