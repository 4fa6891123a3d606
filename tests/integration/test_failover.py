"""kill -9 of the leading replica during 2,000 submissions: no acknowledged job is lost.

Two real server replicas (``tests/integration/replica_programs/clock_replica.py``: the REST
API, the replica loop and the scheduler over one PostgreSQL database; gangs are
:class:`ClockBackend` timers) serve 8 client threads that submit 2,000 jobs through the SDK, each
with its own Idempotency-Key, switching to the other replica when one does not answer. Meanwhile
the test kills the replica holding the scheduler lease with SIGKILL 12 times, each at a random
point of the submission stream (after a random number of acknowledgements), starts it again under
a new holder name and waits until it serves before the next kill, so one replica always serves.
Submitters never run more than a few dozen submissions past the next kill point, so every kill
falls among the 2,000 submissions whatever the machine's speed. Afterwards:

- every acknowledged submission's job is in the database exactly once (one job per key, no job
  without a key, no key answered with two different jobs);
- every job finishes (SUCCEEDED, exactly one SUCCEEDED event), after the fail-overs;
- no attempt of a job was launched twice, and no device was held by two jobs at once.

One round (2,000 submissions, 12 kills) runs in the suite, about two minutes on 2 cores;
``CORRAL_FAILOVER_ROUNDS=10`` repeats it with fresh databases and other kill points.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from api.client import ApiError, CorralClient
from scheduler import auth
from scheduler.db import repo
from scheduler.db.migrate import upgrade
from scheduler.db.models import Allocation, IdempotencyKey, Job, JobEvent, SchedulerLease, as_utc
from scheduler.db.session import Database
from tests.builders import spec_dict
from tests.integration.clock_backend import ClockBackend
from tests.pg_server import free_port

ROOT = Path(__file__).resolve().parents[2]
SUBMISSIONS = 2_000
CLIENTS = 8
KILLS = 12
RUN_AHEAD = 40
"""Submissions may be acknowledged this far past the next kill point before submitters wait."""
FINISH_TIMEOUT_S = 180.0

ROUNDS = int(os.environ.get("CORRAL_FAILOVER_ROUNDS", "1"))

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


class ReplicaProcess:
    """One replica program on a fixed port; ``kill`` is SIGKILL, ``start`` a new process."""

    def __init__(self, name: str, url: str, folder: Path) -> None:
        self.name, self.url, self.folder = name, url, folder
        self.port = free_port()
        self.generation = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.holders: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def holder(self) -> str:
        return f"{self.name}-{self.generation}"

    def start(self) -> None:
        self.generation += 1
        self.holders.append(self.holder)
        with (self.folder / f"{self.holder}.log").open("wb") as log:  # the child keeps it open
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.replica_programs.clock_replica",
                 self.url, str(self.port), str(self.folder), self.holder],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log,
                stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, \
                (self.folder / f"{self.holder}.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"replica {self.holder} not ready within {timeout_s} s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def _leader(db: Database) -> str | None:
    with db.read() as session:
        row = session.scalar(select(SchedulerLease).where(SchedulerLease.name == "scheduler"))
        return row.holder if row is not None else None


class KillPlan:
    """Kill points (numbers of acknowledged submissions) and the gate that keeps submitters
    from running past the next one before it happens."""

    def __init__(self, rng: random.Random) -> None:
        self.points = sorted(rng.sample(range(100, SUBMISSIONS - 100), KILLS))
        self.done = 0
        self.acked = 0
        self.changed = threading.Condition()

    def allowed(self) -> float:
        return self.points[self.done] + RUN_AHEAD if self.done < KILLS else float("inf")

    def acknowledge(self) -> None:
        with self.changed:
            self.acked += 1
            self.changed.notify_all()

    def wait_to_submit(self) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.acked < self.allowed(), timeout=120)

    def wait_for_kill_point(self) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.acked >= self.points[self.done], timeout=300)

    def killed(self) -> None:
        with self.changed:
            self.done += 1
            self.changed.notify_all()


def _submit_all(replicas: list[ReplicaProcess], token: str, plan: KillPlan,
                acked: dict[str, int], errors: list[str]) -> None:
    """8 threads, 2,000 submissions; each key retried, on either replica, until acknowledged."""
    lock = threading.Lock()
    per_thread = SUBMISSIONS // CLIENTS

    def client(index: int) -> None:
        rng = random.Random(index)
        sdks = [CorralClient(replica.base, token=token, timeout_s=5.0) for replica in replicas]
        for number in range(per_thread):
            plan.wait_to_submit()
            key = uuid.uuid4().hex
            spec = spec_dict(name=f"job-{index}-{number}", work__steps=rng.randint(1, 4),
                             resources__devices=rng.choice((1, 1, 2, 4)),
                             resources__pool="clock")
            deadline = time.monotonic() + 120
            turn = rng.randrange(len(sdks))
            while True:
                try:
                    answer = sdks[turn % len(sdks)].submit(spec, idempotency_key=key)
                    break
                except ApiError as err:
                    if err.status not in (0, 502, 503, 504) or time.monotonic() > deadline:
                        with lock:
                            errors.append(f"{key}: {err}")
                        return
                    turn += 1  # that replica is down: the other one, same key
            with lock:
                acked[key] = int(answer["id"])
            plan.acknowledge()
        for sdk in sdks:
            sdk.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _kill_leaders(db: Database, replicas: list[ReplicaProcess], plan: KillPlan,
                  kills: list[tuple[int, str]]) -> None:
    """At each kill point SIGKILL the lease holder, start it again, wait until it serves."""
    while plan.done < KILLS:
        plan.wait_for_kill_point()
        deadline = time.monotonic() + 60
        while True:  # the holder may be a replica that is still starting: wait for a live one
            holder = _leader(db)
            victim = next((r for r in replicas if r.holder == holder
                           and r.process is not None and r.process.poll() is None), None)
            if victim is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert victim is not None, f"no live replica holds the lease (holder {holder!r})"
        victim.kill()
        kills.append((plan.acked, holder or ""))
        victim.start()
        plan.killed()
        victim.wait_ready()


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_kill_9_of_the_leader_loses_no_acknowledged_job(postgres_db_url: str, tmp_path: Path,
                                                        round_number: int) -> None:
    db = Database(postgres_db_url)
    upgrade(db)
    with db.write() as session:
        repo.add_pool(session, "clock", "clock", "H100-SXM", nodes=4, devices_per_node=8)
    token, _ = auth.issue_token(db, "team", "member", "failover")
    replicas = [ReplicaProcess(name, postgres_db_url, tmp_path) for name in ("a", "b")]
    acked: dict[str, int] = {}
    errors: list[str] = []
    kills: list[tuple[int, str]] = []
    plan = KillPlan(random.Random(round_number))
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready()
        submitter = threading.Thread(target=_submit_all,
                                     args=(replicas, token, plan, acked, errors))
        submitter.start()
        _kill_leaders(db, replicas, plan, kills)
        submitter.join()
        assert errors == [], errors[:5]
        assert len(kills) == KILLS
        assert all(0 < at < SUBMISSIONS for at, _ in kills), kills

        deadline = time.monotonic() + FINISH_TIMEOUT_S
        while time.monotonic() < deadline:
            with db.read() as session:
                unfinished = session.scalar(select(func.count()).select_from(Job).where(
                    Job.state != "SUCCEEDED"))
            if unfinished == 0:
                break
            time.sleep(1.0)
    finally:
        for replica in replicas:
            replica.stop()
        db.dispose()  # closes the pool's connections even when an assertion failed above

    with db.read() as session:
        jobs = dict(session.execute(select(Job.id, Job.state)).all())
        keys = dict(session.execute(select(IdempotencyKey.key, IdempotencyKey.job_id))
                    .all())
        succeeded = Counter(session.scalars(select(JobEvent.job_id).where(
            JobEvent.to_state == "SUCCEEDED")))
        allocations = session.execute(select(
            Allocation.node_id, Allocation.device_index, Allocation.job_id,
            Allocation.allocated_at, Allocation.released_at)).all()
    db.dispose()

    assert len(acked) == SUBMISSIONS
    # Every acknowledged job is in the database exactly once, under its own key.
    assert keys == acked
    assert sorted(jobs) == sorted(acked.values())
    assert len(set(acked.values())) == SUBMISSIONS
    # Every job finished, exactly once.
    assert Counter(jobs.values()) == {"SUCCEEDED": SUBMISSIONS}
    assert set(succeeded.values()) == {1} and len(succeeded) == SUBMISSIONS
    # No attempt launched twice; no device held by two jobs at once.
    launches = Counter((launch["job_id"], launch["attempt"])
                       for launch in ClockBackend(tmp_path, 0.0).launches())
    assert [pair for pair, count in launches.items() if count > 1] == []
    by_device: dict[tuple[int, int], list[tuple[float, float, int]]] = {}
    for node, device, job, start, end in allocations:
        assert end is not None, f"job {job} still holds device {device} of node {node}"
        by_device.setdefault((node, device), []).append(
            (as_utc(start).timestamp(), as_utc(end).timestamp(), job))
    for spans in by_device.values():
        spans.sort()
        for (_, first_end, first), (second_start, _, second) in zip(spans, spans[1:],
                                                                    strict=False):
            assert second_start >= first_end, f"jobs {first} and {second} overlap on a device"
    print(f"kills of the leader (acknowledged submissions, holder): {kills}")
