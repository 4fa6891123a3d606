"""The schema on real SQLite and PostgreSQL: migrations, constraints, write locking."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from scheduler.db import repo
from scheduler.db.migrate import current_revision, head_revision, upgrade
from scheduler.db.models import Allocation, JobEvent
from scheduler.db.session import Database
from scheduler.domain.errors import TransitionError
from scheduler.domain.state import JobState
from tests.builders import make_spec

TABLES = {
    "tenant",
    "api_token",
    "queue",
    "quota",
    "pool",
    "node",
    "job",
    "allocation",
    "job_event",
    "checkpoint",
    "calibration",
}


def test_migration_creates_the_data_model(database: Database) -> None:
    assert current_revision(database) == head_revision()
    assert set(inspect(database.engine).get_table_names()) >= TABLES
    assert upgrade(database) == head_revision()  # idempotent


def _job_and_node(database: Database) -> tuple[int, int, int]:
    with database.write() as session:
        pool = repo.add_pool(session, "p", "fake", "cpu", nodes=1, devices_per_node=4)
        first = repo.create_job(session, make_spec(name="a"))
        second = repo.create_job(session, make_spec(name="b"))
        return first.id, second.id, pool.nodes[0].id


def test_one_device_cannot_serve_two_live_jobs(database: Database) -> None:
    first, second, node = _job_and_node(database)
    with database.write() as session:
        repo.allocate(session, repo.get_job(session, first), [(node, 0), (node, 1)])
    with pytest.raises(IntegrityError), database.write() as session:
        repo.allocate(session, repo.get_job(session, second), [(node, 1)])
    with database.read() as session:
        rows = session.scalars(select(Allocation).where(Allocation.job_id == second)).all()
        assert rows == []  # the failed transaction left nothing behind


def test_a_released_device_can_be_allocated_again(database: Database) -> None:
    first, second, node = _job_and_node(database)
    with database.write() as session:
        repo.allocate(session, repo.get_job(session, first), [(node, 0)])
    with database.write() as session:
        assert repo.release(session, repo.get_job(session, first)) == 1
        repo.allocate(session, repo.get_job(session, second), [(node, 0)])
    with database.read() as session:
        assert repo.live_devices(session, second) == {"p-0": [0]}
        assert repo.live_devices(session, first) == {}


def test_every_move_writes_an_event_in_the_same_transaction(database: Database) -> None:
    first, _, _ = _job_and_node(database)
    with database.write() as session:
        repo.transition(session, repo.get_job(session, first), JobState.ADMITTED, "test admit")
    with pytest.raises(TransitionError), database.write() as session:
        job = repo.get_job(session, first)
        repo.transition(session, job, JobState.RUNNING, "fine")
        repo.transition(session, job, JobState.PENDING, "illegal: RUNNING -> PENDING")
    with database.read() as session:
        job = repo.get_job(session, first)
        assert job.state == JobState.ADMITTED.value  # the whole transaction rolled back
        reasons = [
            e.reason
            for e in session.scalars(
                select(JobEvent).where(JobEvent.job_id == first).order_by(JobEvent.id)
            )
        ]
        assert reasons == ["submitted", "test admit"]


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    db.dispose()


def test_sqlite_write_transactions_take_the_lock_before_reading(tmp_path: Path) -> None:
    """Two read-modify-write transactions on two connections never interleave."""
    db = Database(f"sqlite:///{tmp_path / 'lock.db'}")
    upgrade(db)
    with db.write() as session:
        repo.get_or_create_tenant(session, "t").weight = 0.0
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with db.write() as session:
            tenant = repo.get_or_create_tenant(session, "t")
            order.append(f"first read {tenant.weight}")
            inside.set()
            release.wait(5)
            tenant.weight += 1

    def second() -> None:
        inside.wait(5)
        with db.write() as session:
            tenant = repo.get_or_create_tenant(session, "t")
            order.append(f"second read {tenant.weight}")
            tenant.weight += 1

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    inside.wait(5)
    time.sleep(0.3)  # let the second transaction reach its BEGIN while the first holds the lock
    release.set()
    for thread in threads:
        thread.join(10)
    # Without BEGIN IMMEDIATE the second would read 0.0 and one increment would be lost.
    assert order == ["first read 0.0", "second read 1.0"]
    with db.read() as session:
        assert repo.get_or_create_tenant(session, "t").weight == 2.0
    db.dispose()
