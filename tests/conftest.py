"""Fixtures for every test folder: throw-away databases.

``postgres_url`` runs one PostgreSQL server per test session from the server binaries on this
machine; ``postgres_db_url`` gives each test a fresh database on it; ``sqlite_url`` is the
embedded mode's file database. initdb and postgres refuse to run as root, so as root (CI) they
run as the ``postgres`` system user.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from tests.pg_server import PG_TOOLS, PgServer, PgUnavailable, find_pg_bin

collect_ignore = [] if importlib.util.find_spec("ray") else ["ray"]
"""tests/ray needs the Ray extra (`make test-ray` installs it); without it they are not part
of the run at all (not skipped: `make test` does not select them either way)."""


@pytest.fixture(scope="session")
def _pg_server() -> Iterator[PgServer]:
    bin_dir = find_pg_bin()
    missing = [tool for tool in PG_TOOLS if bin_dir is None or not (bin_dir / tool).exists()]
    if missing and "CORRAL_PG_BIN" in os.environ:
        pytest.fail(f"CORRAL_PG_BIN={bin_dir} lacks {', '.join(missing)}")
    if bin_dir is None or missing:
        pytest.skip(
            "PostgreSQL server binaries not found (install postgresql-15 or set CORRAL_PG_BIN)"
        )
    try:
        server = PgServer(bin_dir)
    except PgUnavailable as err:
        pytest.skip(str(err))
    try:
        server.start()
        with server.admin() as admin:
            admin.execute("CREATE DATABASE corral_test")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(_pg_server: PgServer) -> str:
    """SQLAlchemy URL of the session's ``corral_test`` database on a throw-away server."""
    return _pg_server.url("corral_test")


@pytest.fixture
def postgres_db_url(_pg_server: PgServer) -> Iterator[str]:
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
