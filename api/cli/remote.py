"""Server mode behind the CLI's seam: every command through the SDK (:mod:`api.client`).

The same answers as :class:`api.cli.local.EmbeddedCorral` and :class:`~api.cli.local.
EmbeddedAdmin`, fetched over REST. The job file is read and checked here, its relative paths
made absolute, and sent with only the fields it sets (so ``tenant`` is sent only when the file
names one, and the server fills in the caller's).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from api.cli.config import Remote
from api.client import CorralClient
from scheduler.domain.spec import JobSpec

MAX_PAGE = 500
"""The largest ``limit`` ``GET /v1/jobs`` takes."""


def spec_body(spec: JobSpec) -> dict[str, Any]:
    """``spec`` as the REST API takes it: the fields the file set, paths already absolute."""
    return spec.model_dump(mode="json", exclude_unset=True)


class RemoteCorral:
    """Jobs, pools, tenants, quotas and tokens of one Corral server."""

    is_remote = True

    def __init__(self, remote: Remote, client: CorralClient | None = None) -> None:
        self.remote = remote
        self.client = client or CorralClient(remote.server_url, remote.token)

    # --- jobs and pools (api.cli.seam.Corral) ----------------------------------------------

    def submit(self, spec: JobSpec) -> int:
        return int(self.client.submit(spec_body(spec))["id"])

    def queue(self, show_all: bool, limit: int, tenant: str | None = None) -> list[dict[str, Any]]:
        rows = self.client.iter_jobs(all=show_all, tenant=tenant, page_size=min(limit, MAX_PAGE))
        return list(itertools.islice(rows, limit))

    def describe(self, job_id: int) -> dict[str, Any]:
        return self.client.get_job(job_id)

    def cancel(self, job_id: int, reason: str = "cancelled by user") -> str:
        """Ask for the cancel and return at once; the leading replica stops a running gang."""
        return str(self.client.cancel_job(job_id)["state"])

    def log_chunk(self, job_id: int, attempt: int | None, offset: int,
                  max_bytes: int = 1 << 20) -> dict[str, Any]:
        return self.client.logs(job_id, attempt, offset, max_bytes)

    def plan(self, spec: JobSpec, earlier: Mapping[str, JobSpec]) -> dict[str, Any]:
        return self.client.plan(spec_body(spec))

    def pools(self) -> list[dict[str, Any]]:
        return self.client.pools()

    def add_pool(self, name: str, backend: str, accelerator: str, nodes: int,
                 devices_per_node: int, price: float, peak_tflops: float | None,
                 settings: dict[str, str] | None = None) -> None:
        self.client.add_pool(name, backend, accelerator, nodes, devices_per_node, price,
                             peak_tflops, settings)

    def sync_pools(self, address: str, prefix: str,
                   cpu_peak_tflops: float | None) -> list[dict[str, Any]]:
        return self.client.sync_pools({"address": address}, prefix, cpu_peak_tflops)

    def step(self) -> None:
        """Nothing: the server's leading replica schedules."""

    # --- administration (api.cli.seam.Admin) -----------------------------------------------

    def tenants(self) -> list[dict[str, Any]]:
        return self.client.tenants()

    def set_tenant(self, name: str, **changes: Any) -> dict[str, Any]:
        return self.client.set_tenant(name, **changes)

    def quotas(self) -> list[dict[str, Any]]:
        return self.client.quotas()

    def set_quota(self, accelerator: str, nominal: int, tenant: str | None, cohort: str | None,
                  borrowing_limit: int | None, lending_limit: int | None) -> dict[str, Any]:
        return self.client.set_quota(accelerator, nominal, tenant, cohort, borrowing_limit,
                                     lending_limit)

    def delete_quota(self, accelerator: str, tenant: str | None, cohort: str | None) -> None:
        self.client.delete_quota(accelerator, tenant, cohort)

    def tokens(self, tenant: str | None) -> list[dict[str, Any]]:
        return self.client.tokens(tenant)

    def issue_token(self, tenant: str, role: str, name: str) -> dict[str, Any]:
        return self.client.issue_token(tenant, role, name or None)

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        return self.client.revoke_token(token_id)

    def calibration(self) -> list[dict[str, Any]]:
        return self.client.calibration()

    def reset_calibration(self, accelerator: str | None, strategy: str | None,
                          kind: str | None) -> dict[str, Any]:
        return self.client.reset_calibration(accelerator, strategy, kind)
