"""Fixtures for every test folder: throw-away databases.

``postgres_url`` runs one PostgreSQL server per test session from the server binaries on this
machine; ``postgres_db_url`` gives each test a fresh database on it; ``sqlite_url`` is the
embedded mode's file database. initdb and postgres refuse to run as root, so as root (CI) they
run as the ``postgres`` system user.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

_PG_TOOLS = ("initdb", "pg_ctl", "postgres")
_PG_TIMEOUT_S = 60
_INITDB_FLAGS = ("-U", "postgres", "-A", "trust", "--no-sync", "--encoding=UTF8", "--no-locale")
_START_ATTEMPTS = 3
"""A free port can be taken between choosing it and the server binding it; then retry."""


def _find_pg_bin() -> Path | None:
    """CORRAL_PG_BIN, else the newest /usr/lib/postgresql/*/bin, else pg_ctl on PATH."""
    if override := os.environ.get("CORRAL_PG_BIN"):
        return Path(override)
    versions = [path for path in Path("/usr/lib/postgresql").glob("*/bin") if path.is_dir()]
    if versions:
        return max(versions, key=lambda path: [int(part) for part in path.parent.name.split(".")])
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class _PgServer:
    """One PostgreSQL cluster in a temporary folder, run as a user that the server accepts."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.as_user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root needs a 'postgres' system user for the server")
            self.as_user = "postgres"
        self.base = Path(tempfile.mkdtemp(prefix="corral-pg-"))
        self.data_dir, self.socket_dir = self.base / "data", self.base / "socket"
        self.socket_dir.mkdir()
        if self.as_user:
            account = pwd.getpwnam(self.as_user)
            for path in (self.base, self.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
        self.port = 0

    def run(self, tool: str, *args: str) -> None:
        """Run a server tool as the server's user; raise with its output if it fails."""
        done = subprocess.run(
            [str(self.bin_dir / tool), *args],
            user=self.as_user,
            group=self.as_user,
            extra_groups=[] if self.as_user else None,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=_PG_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            log = self.base / "server.log"
            server_log = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{tool} {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout}{done.stderr}{server_log}"
            )

    def start(self) -> None:
        """initdb, then start on a free port of 127.0.0.1 with fsync off, and wait until ready."""
        self.run("initdb", "-D", str(self.data_dir), *_INITDB_FLAGS)
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.port = _free_port()
            # pg_ctl hands these to /bin/sh, hence the quoting.
            options = (
                f"-c fsync=off -c listen_addresses=127.0.0.1 -p {self.port} "
                f"-k {shlex.quote(str(self.socket_dir))}"
            )
            log = str(self.base / "server.log")
            try:
                start = ("start", "-D", str(self.data_dir), "-l", log, "-o", options)
                self.run("pg_ctl", *start, "-w", "-t", str(_PG_TIMEOUT_S))
                return
            except RuntimeError:
                if attempt == _START_ATTEMPTS:
                    raise

    def stop(self) -> None:
        """Stop the server if it runs (no clean shutdown: the data is thrown away) and delete."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self.run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def admin(self) -> psycopg.Connection[TupleRow]:
        """An autocommit connection to the maintenance database, for CREATE/DROP DATABASE."""
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def _pg_server() -> Iterator[_PgServer]:
    bin_dir = _find_pg_bin()
    missing = [tool for tool in _PG_TOOLS if bin_dir is None or not (bin_dir / tool).exists()]
    if missing and "CORRAL_PG_BIN" in os.environ:
        pytest.fail(f"CORRAL_PG_BIN={bin_dir} lacks {', '.join(missing)}")
    if bin_dir is None or missing:
        pytest.skip(
            "PostgreSQL server binaries not found (install postgresql-15 or set CORRAL_PG_BIN)"
        )
    server = _PgServer(bin_dir)
    try:
        server.start()
        with server.admin() as admin:
            admin.execute("CREATE DATABASE corral_test")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(_pg_server: _PgServer) -> str:
    """SQLAlchemy URL of the session's ``corral_test`` database on a throw-away server."""
    return _pg_server.url("corral_test")


@pytest.fixture
def postgres_db_url(_pg_server: _PgServer) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty database of this test's own; dropped afterwards."""
    name = f"corral_{uuid.uuid4().hex[:12]}"
    with _pg_server.admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _pg_server.url(name)
    finally:
        # FORCE ends connections a test left open (an undisposed engine's pool, say).
        with _pg_server.admin() as admin:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            admin.execute(drop.format(sql.Identifier(name)))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """SQLAlchemy URL of an SQLite file in this test's temporary folder (embedded mode)."""
    return f"sqlite:///{tmp_path / 'corral.db'}"
