"""A throw-away PostgreSQL server from this machine's server binaries (tests and benchmarks).

initdb and postgres refuse to run as root, so as root (CI) they run as the ``postgres`` system
user. The data lives in a temporary folder, fsync is off, and :meth:`PgServer.stop` deletes it.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow


class PgUnavailable(RuntimeError):
    """This machine cannot run a throw-away server (no binaries, or root without a postgres
    user)."""


PG_TOOLS = ("initdb", "pg_ctl", "postgres")
_PG_TIMEOUT_S = 60
_INITDB_FLAGS = ("-U", "postgres", "-A", "trust", "--no-sync", "--encoding=UTF8", "--no-locale")
_START_ATTEMPTS = 3
"""A free port can be taken between choosing it and the server binding it; then retry."""


def find_pg_bin() -> Path | None:
    """CORRAL_PG_BIN, else the newest /usr/lib/postgresql/*/bin, else pg_ctl on PATH."""
    if override := os.environ.get("CORRAL_PG_BIN"):
        return Path(override)
    versions = [path for path in Path("/usr/lib/postgresql").glob("*/bin") if path.is_dir()]
    if versions:
        return max(versions, key=lambda path: [int(part) for part in path.parent.name.split(".")])
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PgServer:
    """One PostgreSQL cluster in a temporary folder, run as a user that the server accepts."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.as_user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable(
                    "running as root needs a 'postgres' system user for the server") from None
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
            self.port = free_port()
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

    def start_with_database(self, name: str) -> str:
        """Start, create database ``name`` and return its SQLAlchemy URL."""
        self.start()
        with self.admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def throwaway_database(name: str) -> Iterator[str]:
    """The URL of database ``name`` on a server started for the block and deleted after it;
    :class:`PgUnavailable` when this machine cannot run one (benchmarks print that and go on).
    """
    bin_dir = find_pg_bin()
    if bin_dir is None or not all((bin_dir / tool).exists() for tool in PG_TOOLS):
        raise PgUnavailable("PostgreSQL server binaries not found (install postgresql-15 or "
                            "set CORRAL_PG_BIN)")
    server = PgServer(bin_dir)
    try:
        yield server.start_with_database(name)
    finally:
        server.stop()
