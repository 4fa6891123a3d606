"""A full disk under the run folders: the launch that meets it is held, not failed, and the
job starts once space returns (a real tmpfs filled to its last byte; mounting needs root)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.db import repo
from scheduler.db.session import Database
from scheduler.dispatch import HOLD_S
from scheduler.domain.state import JobState
from scheduler.gangs.backend import GangPhase
from scheduler.gangs.protocol import LaunchRequest
from scheduler.service import SchedulerService
from tests.builders import make_spec
from workers.backends.fake import FakeBackend
from workers.backends.local import LocalBackend


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs with a ``runs`` folder."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        (mount / "runs").mkdir()
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path) -> None:
    """Take every byte left on ``disk`` (the file ``fill``)."""
    fd = os.open(disk / "fill", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # full
    finally:
        os.close(fd)


@pytest.fixture
def full_disk(small_disk: Path) -> Path:
    fill(small_disk)
    return small_disk


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_launch_that_meets_a_full_disk_is_held_until_space_returns(
        database: Database, fake_backend: FakeBackend, full_disk: Path) -> None:
    with database.write() as session:
        repo.add_pool(session, "cpu", "fake", "cpu", nodes=1, devices_per_node=2)
    clock = Clock()
    service = SchedulerService(database, {"fake": fake_backend}, runs_dir=full_disk / "runs",
                               timer=clock)
    job_id = service.submit(make_spec(resources__pool="cpu", resources__devices=1))
    service.tick()
    held = service.describe(job_id)
    assert held["state"] == JobState.PENDING.value and held["attempts"] == 0
    assert "held: no space left" in held["pending_reason"]
    assert "No space left on device" in held["pending_reason"]
    events = len(held["events"])
    service.tick()  # within the hold: not admitted again, nothing written
    assert len(service.describe(job_id)["events"]) == events
    assert not fake_backend.launched

    (full_disk / "fill").unlink()
    clock.now += HOLD_S + 1
    service.tick()
    started = service.describe(job_id)
    assert started["state"] == JobState.RUNNING.value and started["attempts"] == 1
    assert not any(event["to"] == JobState.FAILED.value for event in started["events"])


def test_a_gang_whose_disk_fills_up_says_so_in_its_fate(small_disk: Path,
                                                         tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"marker_dir": str(markers), "sleep_s": {"default": 2},
                                    "exit_code": {"default": 1}}))
    backend = LocalBackend()
    handle = backend.launch(LaunchRequest(
        job_id=1, attempt=1, world_size=1, job_file=str(job_file),
        log_path=str(small_disk / "records" / "attempt-1.log"),
        module="tests.integration.rank_programs.gang_rank"))
    fill(small_disk)  # while the rank "trains"
    deadline = time.monotonic() + 60
    while (status := backend.poll(handle)).phase is GangPhase.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert status.phase is GangPhase.FAILED
    assert "No space left on device under" in status.reason, status.reason
    assert "without a record" not in status.reason
