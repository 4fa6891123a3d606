"""Fixtures for tests on real databases: each runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.db import repo
from scheduler.db.migrate import upgrade
from scheduler.db.session import Database
from scheduler.service import SchedulerService
from workers.backends.fake import FakeBackend


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database: the embedded SQLite file, then a fresh PostgreSQL one."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'corral.db'}"
    else:
        url = request.getfixturevalue("postgres_db_url")
    db = Database(url)
    upgrade(db)
    yield db
    db.dispose()


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def service(database: Database, fake_backend: FakeBackend, tmp_path: Path) -> SchedulerService:
    """A service over two fake pools: 1 node × 2 CPUs, and 2 nodes × 8 H100 (multi-node)."""
    with database.write() as session:
        repo.add_pool(session, "cpu", "fake", "cpu", nodes=1, devices_per_node=2)
        repo.add_pool(
            session,
            "h100",
            "fake",
            "H100-SXM",
            nodes=2,
            devices_per_node=8,
            price_per_device_hour=3.5,
        )
    return SchedulerService(
        database, {"fake": fake_backend}, runs_dir=tmp_path / "runs", grace_s=1.0
    )
