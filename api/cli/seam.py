"""The one seam between the CLI's commands and where Corral runs: this process, or a server.

Commands ask the :class:`CliContext` for a :class:`Corral` (jobs and pools) or an :class:`Admin`
(tenants, quotas, tokens) and never look at which one they got: both implementations answer
with the dict shapes of the REST contract (docs/api.md).

- embedded (:mod:`api.cli.local`): the scheduler service over the SQLite file under
  ``$CORRAL_HOME`` (or ``$CORRAL_DATABASE_URL``), in this process;
- remote (:mod:`api.cli.remote`): a Corral server through the SDK, chosen by ``--server`` /
  ``$CORRAL_SERVER``, with a token from ``$CORRAL_TOKEN`` or ``corral login``'s config file
  (:mod:`api.cli.config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from api.cli.config import Remote, resolve_remote
from scheduler.domain.errors import CorralError
from scheduler.domain.spec import JobSpec

FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
"""A FAILED job with attempts left moves on to PENDING in the same transaction, so a job seen
FAILED has no retry left."""


class Corral(Protocol):
    """Jobs and pools, wherever they live."""

    is_remote: bool

    def submit(self, spec: JobSpec) -> int: ...

    def queue(self, show_all: bool, limit: int,
              tenant: str | None = None) -> list[dict[str, Any]]: ...

    def describe(self, job_id: int) -> dict[str, Any]: ...

    def cancel(self, job_id: int, reason: str = "cancelled by user") -> str: ...

    def log_chunk(self, job_id: int, attempt: int | None, offset: int,
                  max_bytes: int = 1 << 20) -> dict[str, Any]: ...

    def plan(self, spec: JobSpec, earlier: Mapping[str, JobSpec]) -> dict[str, Any]: ...

    def pools(self) -> list[dict[str, Any]]: ...

    def add_pool(self, name: str, backend: str, accelerator: str, nodes: int,
                 devices_per_node: int, price: float, peak_tflops: float | None,
                 settings: dict[str, str] | None = None) -> None: ...

    def sync_pools(self, address: str, prefix: str,
                   cpu_peak_tflops: float | None) -> list[dict[str, Any]]: ...

    def step(self) -> None:
        """Let scheduling progress while a command follows a job (embedded: one tick)."""
        ...


class Admin(Protocol):
    """Tenants, quotas, tokens and the calibration table, wherever they live."""

    def tenants(self) -> list[dict[str, Any]]: ...

    def set_tenant(self, name: str, **changes: Any) -> dict[str, Any]: ...

    def quotas(self) -> list[dict[str, Any]]: ...

    def set_quota(self, accelerator: str, nominal: int, tenant: str | None, cohort: str | None,
                  borrowing_limit: int | None, lending_limit: int | None) -> dict[str, Any]: ...

    def delete_quota(self, accelerator: str, tenant: str | None, cohort: str | None) -> None: ...

    def tokens(self, tenant: str | None) -> list[dict[str, Any]]: ...

    def issue_token(self, tenant: str, role: Any, name: str) -> dict[str, Any]: ...

    def revoke_token(self, token_id: int) -> dict[str, Any]: ...

    def calibration(self) -> list[dict[str, Any]]: ...

    def reset_calibration(self, accelerator: str | None, strategy: str | None,
                          kind: str | None) -> dict[str, Any]: ...


class CliContext:
    """What the group-level options chose; builds the seam's implementation on first use."""

    def __init__(self, server: str | None = None) -> None:
        self.server_option = server
        self._remote: Remote | None = None
        self._resolved = False

    @property
    def remote(self) -> Remote | None:
        """The server and token in use; None in embedded mode."""
        if not self._resolved:
            self._remote = resolve_remote(self.server_option)
            self._resolved = True
        return self._remote

    # Each mode's stack is imported only when chosen: server mode never loads the database
    # layer, embedded mode never loads httpx.

    def corral(self, **policies: Any) -> Corral:
        remote = self.remote
        if remote is not None:
            from api.cli.remote import RemoteCorral

            return RemoteCorral(remote)
        from api.cli.local import EmbeddedCorral

        return EmbeddedCorral(**policies)

    def admin(self) -> Admin:
        remote = self.remote
        if remote is not None:
            from api.cli.remote import RemoteCorral

            return RemoteCorral(remote)
        from api.cli.local import EmbeddedAdmin

        return EmbeddedAdmin()

    def require_embedded(self, command: str, why: str) -> None:
        """Refuse a command that only makes sense on this machine while a server is chosen."""
        if self.remote is not None:
            raise CorralError(f"`corral {command}` works in embedded mode only ({why}); drop "
                              f"--server and unset CORRAL_SERVER")
