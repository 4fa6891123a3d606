"""The scheduler lease, its fence and the Replica loop, on SQLite and PostgreSQL: who leads,
and what a replica that no longer leads can still write (nothing)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scheduler.db import lease, repo
from scheduler.db.lease import Fence
from scheduler.db.models import Allocation, Job, JobEvent, utcnow
from scheduler.db.session import Database
from scheduler.domain.errors import StaleLeaderError
from scheduler.domain.state import JobState
from scheduler.gangs.backend import GangPhase
from scheduler.gangs.protocol import LaunchRequest
from scheduler.replica import Replica
from scheduler.service import SchedulerService, TickReport
from tests.builders import make_spec
from workers.backends.fake import FakeBackend

TTL_S = 10.0


def _acquire(db: Database, holder: str, now: datetime, name: str = "scheduler") -> Fence | None:
    with db.write() as session:
        return lease.acquire_or_renew(session, name, holder, TTL_S, now)


def _check(db: Database, fence: Fence, now: datetime) -> None:
    with db.write() as session:
        lease.check(session, fence, now)


def _db_facts(db: Database) -> tuple[int, int, list[tuple[int, str]]]:
    """(allocation rows, job events, (job id, state) of every job): what a tick could write."""
    with db.read() as session:
        allocations = session.scalar(select(func.count()).select_from(Allocation)) or 0
        events = session.scalar(select(func.count()).select_from(JobEvent)) or 0
        states = [(job.id, job.state) for job in session.scalars(select(Job).order_by(Job.id))]
    return allocations, events, states


def test_first_acquire_renew_refuse_expire_take_over(database: Database) -> None:
    start = utcnow()
    first = _acquire(database, "a", start)
    assert first is not None and (first.holder, first.epoch) == ("a", 1)
    assert first.expires_at == start + timedelta(seconds=TTL_S)

    renewed = _acquire(database, "a", start + timedelta(seconds=5))
    assert renewed is not None and renewed.epoch == 1
    assert renewed.expires_at == start + timedelta(seconds=15)

    assert _acquire(database, "b", start + timedelta(seconds=14)) is None  # a's lease is live

    later = start + timedelta(seconds=16)
    taken = _acquire(database, "b", later)
    assert taken is not None and (taken.holder, taken.epoch) == ("b", 2)
    with pytest.raises(StaleLeaderError, match="a no longer leads 'scheduler' at epoch 1: "
                                               "b holds epoch 2 now"):
        _check(database, renewed, later)
    _check(database, taken, later)
    assert _acquire(database, "a", later) is None
    with database.read() as session:
        state = lease.current(session, "scheduler")
    assert state is not None and (state.holder, state.epoch) == ("b", 2)


def test_a_passed_check_renews_the_lease_and_an_idle_lease_expires(database: Database) -> None:
    start = utcnow()
    fence = _acquire(database, "a", start)
    assert fence is not None and fence.ttl_s == TTL_S
    # The last instant it is live: the write passes and renews the lease to start + 2 × TTL.
    _check(database, fence, start + timedelta(seconds=TTL_S))
    assert _acquire(database, "b", start + timedelta(seconds=TTL_S + 1)) is None  # still a's
    with pytest.raises(StaleLeaderError, match="its lease expired"):
        _check(database, fence, start + timedelta(seconds=2 * TTL_S + 0.001))
    again = _acquire(database, "a", start + timedelta(seconds=2 * TTL_S + 1))
    assert again is not None and again.epoch == 2  # re-taken after expiry: a new term


def test_release_lets_another_replica_lead_at_once(database: Database) -> None:
    start = utcnow()
    fence = _acquire(database, "a", start)
    assert fence is not None
    with database.write() as session:
        assert lease.release(session, fence)
        assert not lease.release(session, fence)  # twice is harmless
    taken = _acquire(database, "b", start + timedelta(seconds=1))
    assert taken is not None and taken.epoch == 2
    with database.write() as session:
        assert not lease.release(session, fence)  # a stale fence releases nothing


def test_leases_of_different_names_are_independent(database: Database) -> None:
    now = utcnow()
    one, other = _acquire(database, "a", now, "one"), _acquire(database, "b", now, "other")
    assert one is not None and other is not None and one.epoch == other.epoch == 1


def test_bad_lease_arguments_are_refused(database: Database) -> None:
    with database.write() as session, pytest.raises(ValueError, match="ttl_s must be > 0"):
        lease.acquire_or_renew(session, "scheduler", "a", 0, utcnow())
    with database.write() as session, pytest.raises(ValueError, match="timezone-aware"):
        lease.acquire_or_renew(session, "scheduler", "a", 1.0, datetime(2030, 1, 1))


def test_a_tick_under_a_stale_fence_writes_nothing(service: SchedulerService,
                                                   fake_backend: FakeBackend) -> None:
    db = service.db
    old = _acquire(db, "a", utcnow())
    assert old is not None
    running = service.submit(make_spec(name="running", resources__pool="cpu",
                                       resources__devices=1))
    assert service.tick(old).started == [running]
    fake_backend.finish(running, GangPhase.SUCCEEDED)
    waiting = service.submit(make_spec(name="waiting", resources__pool="cpu",
                                       resources__devices=1))
    new = _acquire(db, "b", utcnow() + timedelta(seconds=TTL_S + 1))
    assert new is not None and new.epoch == 2

    before = _db_facts(db)
    with pytest.raises(StaleLeaderError):
        service.tick(old)
    assert _db_facts(db) == before  # the ended gang is not settled, the new job not admitted
    assert before[2] == [(running, "RUNNING"), (waiting, "PENDING")]
    assert len(fake_backend.launched) == 1

    report = service.tick(new)
    assert report.ended == {running: "SUCCEEDED"} and report.started == [waiting]
    with db.read() as session:
        epochs = dict(session.execute(select(Allocation.job_id, Allocation.lease_epoch)).all())
    assert epochs == {running: 1, waiting: 2}


class _LeaseLostDuringLaunch(FakeBackend):
    """Launches the gang, and meanwhile another replica takes the lease over."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        self.cancelled: list[str] = []

    def launch(self, request: LaunchRequest) -> str:
        handle = super().launch(request)
        if len(self.launched) == 1:
            taken = _acquire(self.db, "b", utcnow() + timedelta(seconds=TTL_S + 1))
            assert taken is not None
        return handle

    def cancel(self, handle: str, grace_s: float = 30.0) -> None:
        self.cancelled.append(handle)
        super().cancel(handle, grace_s)


def test_a_gang_launched_by_a_replica_that_lost_the_lease_is_killed(database: Database,
                                                                    tmp_path: Path) -> None:
    backend = _LeaseLostDuringLaunch(database)
    with database.write() as session:
        repo.add_pool(session, "cpu", "fake", "cpu", nodes=1, devices_per_node=2)
    service = SchedulerService(database, {"fake": backend}, runs_dir=tmp_path / "runs")
    job_id = service.submit(make_spec(resources__pool="cpu", resources__devices=2))
    stale = _acquire(database, "a", utcnow())
    assert stale is not None

    with pytest.raises(StaleLeaderError):
        service.tick(stale)
    assert backend.cancelled == [f"fake:{job_id}:1"]  # killed, with no grace
    assert service.job_state(job_id) is JobState.ADMITTED  # the RUNNING commit was refused

    with database.read() as session:
        leader = lease.current(session, "scheduler")
    assert leader is not None and leader.holder == "b"
    fence = Fence(leader.name, leader.holder, leader.epoch, leader.expires_at)
    report = service.tick(fence)  # the new leader takes the orphaned admission back at once
    assert report.started == [job_id]
    assert [request.attempt for request in backend.launched] == [1, 2]
    moves = [f"{e['from']}->{e['to']}" for e in service.describe(job_id)["events"] if e["to"]]
    assert moves[-4:] == ["ADMITTED->PREEMPTED", "PREEMPTED->PENDING", "PENDING->ADMITTED",
                          "ADMITTED->RUNNING"]
    assert "ADMITTED->FAILED" not in moves  # requeued without counting as a failure
    assert service.job_state(job_id) is JobState.RUNNING


def test_two_replicas_racing_never_share_an_epoch(database: Database) -> None:
    """50 rounds: the lease has expired, two replicas (each its own engine) try at once; exactly
    one wins each round, at the next epoch."""
    other = Database(database.url)
    rounds = 50
    start = utcnow()
    barrier = threading.Barrier(2, timeout=30)
    won: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def contend(db: Database, holder: str) -> None:
        try:
            for round_index in range(rounds):
                now = start + timedelta(seconds=round_index * (TTL_S + 1))
                barrier.wait()
                fence = _acquire(db, holder, now)
                if fence is not None:
                    won[holder].append((round_index, fence.epoch))
        except BaseException as err:  # reported by the main thread
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=contend, args=(db, holder))
               for db, holder in ((database, "a"), (other, "b"))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        other.dispose()
    assert not errors, errors
    wins = sorted(won["a"] + won["b"])
    assert [round_index for round_index, _ in wins] == list(range(rounds))  # one per round
    assert [epoch for _, epoch in wins] == list(range(1, rounds + 1))
    assert not {epoch for _, epoch in won["a"]} & {epoch for _, epoch in won["b"]}


# --- the Replica loop ----------------------------------------------------------------------


def _other(service: SchedulerService) -> SchedulerService:
    """Another replica's service: same database, its own engine, the same backends."""
    return SchedulerService(Database(service.db.url), service.backends, service.runs_dir,
                            grace_s=service.grace_s)


def test_ttl_must_cover_several_ticks(service: SchedulerService) -> None:
    with pytest.raises(ValueError, match=r"ttl_s 2.0 s is shorter than 3 × tick_interval_s "
                                         r"1.0 s = 3.0 s"):
        Replica(service, "a", ttl_s=2.0, tick_interval_s=1.0)


def test_one_replica_leads_and_the_other_takes_over_when_it_releases(
        service: SchedulerService) -> None:
    other = _other(service)
    first, second = Replica(service, "a"), Replica(other, "b")
    job_id = service.submit(make_spec(resources__pool="cpu", resources__devices=1))
    report = first.step()
    assert report is not None and report.started == [job_id]
    assert (first.is_leader, first.epoch) == (True, 1)
    assert second.step() is None and not second.is_leader and second.epoch is None

    first.release()
    assert not first.is_leader
    assert second.step() is not None and second.epoch == 2
    assert first.step() is None
    other.db.dispose()


def test_a_leader_whose_lease_lapses_mid_tick_becomes_a_follower(
        service: SchedulerService, caplog: pytest.LogCaptureFixture) -> None:
    # Its clock runs an hour late: the lease it takes has lapsed already when the tick's
    # first write checks it against the real time.
    late = Replica(service, "late", clock=lambda: utcnow() - timedelta(hours=1))
    job_id = service.submit(make_spec(resources__pool="cpu", resources__devices=1))
    with caplog.at_level(logging.INFO, logger="corral.replica"):
        assert late.step() is None
    assert not late.is_leader and late.epoch is None
    assert service.job_state(job_id) is JobState.PENDING  # the tick wrote nothing
    messages = [record.getMessage() for record in caplog.records]
    assert "late became leader of 'scheduler' at epoch 1" in messages
    assert any(message.startswith("late lost the lease") for message in messages)


def test_run_survives_a_crashing_tick_and_releases_on_stop(
        service: SchedulerService, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ticks: list[Fence | None] = []
    real_tick = service.tick

    def flaky_tick(fence: Fence | None = None) -> TickReport:
        ticks.append(fence)
        if len(ticks) == 1:
            raise RuntimeError("boom")
        return real_tick(fence)

    monkeypatch.setattr(service, "tick", flaky_tick)
    stop = threading.Event()
    replica = Replica(service, "runner", ttl_s=0.5, tick_interval_s=0.01)
    thread = threading.Thread(target=replica.run, args=(stop,))
    with caplog.at_level(logging.INFO, logger="corral.replica"):
        thread.start()
        deadline = time.monotonic() + 10
        while len(ticks) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        thread.join(timeout=10)
    assert len(ticks) >= 3 and not thread.is_alive()
    crash = next(r for r in caplog.records if "scheduler step failed" in r.getMessage())
    assert crash.exc_info is not None and "boom" in str(crash.exc_info[1])
    with service.db.read() as session:
        state = lease.current(session, "scheduler")
    assert state is not None and state.expires_at == lease.RELEASED_AT
    assert not replica.is_leader
