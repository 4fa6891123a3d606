"""Settings of ``corral server``: read from ``CORRAL_*`` environment variables, validated once.

Every field has a default that serves one machine; a production server sets at least
``CORRAL_DATABASE_URL`` (PostgreSQL). Per-tenant limits stored in the database override the
three ``max_*`` / ``submissions_per_minute`` defaults here.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler.db.submissions import SubmitLimits
from scheduler.trust import JobTrust

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def default_replica_id() -> str:
    """``HOSTNAME:PID``: tells the replicas of one deployment apart in the scheduler lease."""
    return f"{socket.gethostname()}:{os.getpid()}"


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _folders(text: str) -> list[str]:
    return [part for part in text.split(os.pathsep) if part]


class Settings(BaseSettings):
    """How one API server replica runs (environment variables ``CORRAL_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="forbid")

    home: Path = Field(default=Path("~/.corral"),
                       description="folder of the embedded database and of the jobs' run folders")
    database_url: str = Field(default="",
                              description="SQLAlchemy URL; empty: the SQLite file home/corral.db")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    auth: bool = Field(default=True, description="require bearer tokens; off only on loopback")
    max_pending_jobs: int | None = Field(default=1000, ge=0)
    submissions_per_minute: int | None = Field(default=600, ge=1)
    max_priority: int | None = Field(default=100, ge=-1000, le=1000)
    tick_interval_s: float = Field(default=1.0, gt=0)
    lease_ttl_s: float = Field(default=10.0, gt=0)
    replica_id: str = Field(default_factory=default_replica_id, min_length=1, max_length=256)
    grace_s: float = Field(default=30.0, ge=0)
    job_user: str = Field(
        default="", max_length=64,
        description="whom tenants' ranks run as (a user name, UID or UID:GID) unless a tenant "
                    "names its own; empty: nobody when the server runs as root, else the "
                    "server's own user. 'root' only if you mean it (docs/security.md)")
    data_roots: str = Field(
        default="", max_length=65_536,
        description="folders (':'-separated) tenants' data.path may lie in, unless a tenant "
                    "has its own (corral admin tenant set T --data-root); empty: none")
    model_roots: str = Field(
        default="", max_length=65_536,
        description="folders (':'-separated) tenants' model.path and tokenizer.path may lie "
                    "in, unless a tenant has its own; empty: none (pkg: and job: still work)")
    unlaunched_timeout_s: float = Field(
        default=120.0, gt=0,
        description="seconds an admitted job may wait for its launch before the leader takes "
                    "it back (its dispatcher died between admitting and launching)")
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024,
        description="largest request body accepted; a larger one answers 413 (a job spec is a "
                    "few kilobytes)")
    auth_failure_limit: int = Field(
        default=10, ge=1,
        description="failed authentications (unknown or revoked token) one client address may "
                    "make within auth_failure_window_s before it gets 429 (api.throttle)")
    auth_failure_window_s: float = Field(default=60.0, gt=0)
    api_docs: bool = Field(
        default=False,
        description="serve Swagger UI at /docs from the swagger-ui-bundle package (never from "
                    "a CDN); off, or without that package, /docs answers 404")

    @model_validator(mode="after")
    def _checked(self) -> Settings:
        self.home = self.home.expanduser()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'corral.db'}"
        if not self.auth and not is_loopback(self.host):
            raise ValueError(
                f"auth can be off only on a loopback address (127.0.0.1, ::1, localhost), not "
                f"host {self.host!r}: issue tokens (corral admin token issue) or bind to "
                f"127.0.0.1")
        return self

    def job_trust(self) -> JobTrust:
        """The rules for tenants' jobs (identity, roots) these settings describe."""
        return JobTrust.configure(self.job_user, _folders(self.data_roots),
                                  _folders(self.model_roots))

    @property
    def runs_dir(self) -> Path:
        """Where each job's run folder (job files, logs, checkpoints) is created."""
        return self.home / "runs"

    def submit_limits(self) -> SubmitLimits:
        """The defaults for tenants whose own row leaves a limit unset."""
        return SubmitLimits(max_pending_jobs=self.max_pending_jobs,
                            submissions_per_minute=self.submissions_per_minute,
                            max_priority=self.max_priority)
