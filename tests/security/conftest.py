"""The security suite's deployment: a real ``corral server`` run as root, as an operator would.

Each test gets a server over SQLite and over a real PostgreSQL, an admin token, member tokens
on demand, and a scratch area (``Deployment.area``) that the unprivileged job identity can
traverse, unlike pytest's own 0700 temporary folders. Run the suite as root so that the job
identity is real: the ranks of a server started as root run as ``nobody`` unless configured.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from api.client import CorralClient
from tests.server_process import (
    Server,
    cli_env,
    corral,
    db_url,
    issued_token,
    ok,
    processes,
    start_server,
)

__all__ = ["db_url", "processes"]  # fixtures the tests here use


def _grant_traverse(path: Path) -> list[str]:
    """Let every user pass through ``path``'s folders (x only, no listing); return what changed."""
    changed = []
    for folder in [*reversed(path.parents)]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)
            changed.append(str(folder))
    return changed


@pytest.fixture(scope="session")
def job_identity_can_run_python() -> None:
    """Ranks run as ``nobody``, who must be able to reach this interpreter (a pyenv build under
    a 0700 /root is not): the operator's duty (docs/security.md), done here for the suite."""
    if os.geteuid() != 0:
        return
    for path in (Path(sys.executable), Path(os.path.realpath(sys.executable))):
        changed = _grant_traverse(path)
        if changed:
            print(f"security suite: granted traverse (o+x) on {', '.join(changed)}")


@dataclass
class Deployment:
    """One running server and what an operator and its tenants hold."""

    server: Server
    db_url: str
    admin_token: str
    home: Path
    area: Path
    """A folder every identity can traverse: data roots and job files of the tests go here."""
    tmp_path: Path
    _clients: list[CorralClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, token: str | None = None) -> CorralClient:
        sdk = CorralClient(self.url, token or self.admin_token)
        self._clients.append(sdk)
        return sdk

    def member(self, tenant: str) -> str:
        """A fresh member token of ``tenant``."""
        token: str = self.client().issue_token(tenant, "member")["token"]
        return token

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def log(self) -> str:
        return self.server.log.read_text(errors="replace")

    def close(self) -> None:
        for sdk in self._clients:
            sdk.close()


def make_area() -> Path:
    """A scratch folder under /tmp that the job identity can reach (0711), removed after."""
    area = Path(tempfile.mkdtemp(prefix="corral-security-", dir="/tmp"))
    area.chmod(0o711)
    return area


@pytest.fixture
def area() -> Iterator[Path]:
    folder = make_area()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def deploy(db_url: str, tmp_path: Path, area: Path, processes: list[subprocess.Popen[bytes]],
           **variables: str) -> Deployment:
    """Migrate ``db_url``, issue an admin token with the CLI and start a server over it."""
    ok(corral(cli_env(tmp_path), "db", "upgrade", "--url", db_url))
    admin = issued_token(corral(cli_env(tmp_path, CORRAL_DATABASE_URL=db_url), "admin",
                                "token", "issue", "--tenant", "ops", "--role", "admin"))
    home = area / "home"
    server = start_server(tmp_path, db_url, home=home, **variables)
    processes.append(server.process)
    deployment = Deployment(server, db_url, admin, home, area, tmp_path)
    sdk = deployment.client()
    if not any(pool["name"] == "local" for pool in sdk.pools()):
        sdk.add_pool("local", "local", "cpu", nodes=1, devices_per_node=2)
    return deployment


Deploy = Callable[..., Deployment]


@pytest.fixture
def deploy_with(db_url: str, tmp_path: Path, area: Path, job_identity_can_run_python: None,
                processes: list[subprocess.Popen[bytes]]) -> Iterator[Deploy]:
    """``deploy_with(CORRAL_JOB_USER=..., ...)``: a server as root over SQLite, then
    PostgreSQL, with these variables in its environment."""
    made: list[Deployment] = []

    def make(**variables: str) -> Deployment:
        made.append(deploy(db_url, tmp_path, area, processes, **variables))
        return made[-1]

    yield make
    for deployment in made:
        deployment.close()


@pytest.fixture
def deployment(deploy_with: Deploy) -> Deployment:
    """A server as root over SQLite, then PostgreSQL, with nothing about jobs configured."""
    return deploy_with()


@pytest.fixture(autouse=True)
def _as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the security suite runs as root, so that job identities are real "
                    "(make test-security as root; CI does)")


SUITE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is marked ``security``: `make test-security` runs them (as root)."""
    for item in items:
        if SUITE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.security)
