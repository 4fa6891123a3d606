"""The local backend runs real torchrun gangs (gloo on CPU) and reports each fate correctly."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scheduler.domain.errors import BackendError
from scheduler.gangs.backend import GangPhase, GangStatus
from scheduler.gangs.events import Step
from scheduler.gangs.protocol import EXIT_PREEMPTED, PROGRESS_FILE, LaunchRequest, append_progress
from workers.backends.local import LocalBackend

STARTUP_TIMEOUT_S = 30.0
"""torchrun plus two ranks importing torch take ~3 s on 2 idle cores; allow for a busy CI box."""


@dataclass(frozen=True)
class Gang:
    """A launched test gang: its handle and where its ranks leave marker files."""

    backend: LocalBackend
    handle: str
    marker_dir: Path
    world_size: int

    def rank_pids(self) -> list[int]:
        """Pids of all ranks, waiting until every rank has started."""
        paths = [self.marker_dir / f"pid.{rank}" for rank in range(self.world_size)]
        wait_for(lambda: all(path.exists() for path in paths), STARTUP_TIMEOUT_S)
        return [int(path.read_text()) for path in paths]

    def wait_until_ended(self, timeout_s: float = STARTUP_TIMEOUT_S) -> GangStatus:
        status = self.backend.poll(self.handle)
        deadline = time.monotonic() + timeout_s
        while status.phase is GangPhase.RUNNING and time.monotonic() < deadline:
            time.sleep(0.1)
            status = self.backend.poll(self.handle)
        return status


def launch(tmp_path: Path, world_size: int = 2, **behaviour: Any) -> Gang:
    """Start ``world_size`` gang_rank ranks that behave as ``behaviour`` says (see gang_rank)."""
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"marker_dir": str(marker_dir), **behaviour}))
    request = LaunchRequest(
        job_id=1,
        attempt=1,
        world_size=world_size,
        job_file=str(job_file),
        log_path=str(tmp_path / "logs" / "gang.log"),
        module="tests.integration.rank_programs.gang_rank",
    )
    backend = LocalBackend()
    return Gang(backend, backend.launch(request), marker_dir, world_size)


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.05)


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie (orphans may wait long to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


ENDINGS = [
    pytest.param({}, GangPhase.SUCCEEDED, 0, "all ranks exited 0", id="all-ranks-exit-0"),
    pytest.param(
        {"exit_code": {"1": 3}, "sleep_s": {"0": 30}},
        GangPhase.FAILED,
        3,
        "rank 1 exited with code 3",
        id="rank-1-exits-3",
    ),
    pytest.param(
        {"raise_error": {"1": "cannot open shard 7"}, "sleep_s": {"0": 30}},
        GangPhase.FAILED,
        1,
        "RuntimeError: cannot open shard 7",
        id="rank-1-raises",
    ),
    pytest.param(
        # Ranks torchrun SIGTERMs after the first exits 75 also checkpoint, as a trainer would.
        {"exit_code": {"default": EXIT_PREEMPTED}, "on_sigterm": "preempt"},
        GangPhase.PREEMPTED,
        EXIT_PREEMPTED,
        "exited 75",
        id="all-ranks-exit-75",
    ),
]


@pytest.mark.parametrize(("behaviour", "phase", "exit_code", "reason"), ENDINGS)
def test_gang_fate_follows_rank_exit_codes(
    tmp_path: Path, behaviour: dict[str, Any], phase: GangPhase, exit_code: int, reason: str
) -> None:
    gang = launch(tmp_path, **behaviour)

    status = gang.wait_until_ended()

    assert (status.phase, status.exit_code) == (phase, exit_code), status
    assert reason in status.reason
    assert not any(running(pid) for pid in gang.rank_pids())


def test_log_holds_the_output_of_every_rank(tmp_path: Path) -> None:
    gang = launch(tmp_path)
    gang.wait_until_ended()

    data, size = gang.backend.read_log(gang.handle, 0, 1 << 20)
    assert len(data) == size
    log = data.decode()

    assert "rank 0 of 2 started" in log
    assert "rank 1 exiting with code 0" in log


def test_a_killed_rank_fails_the_gang_promptly_and_leaves_no_rank_behind(tmp_path: Path) -> None:
    gang = launch(tmp_path, sleep_s={"default": 60})
    pids = gang.rank_pids()

    os.kill(pids[1], signal.SIGKILL)
    started = time.monotonic()
    status = gang.wait_until_ended()

    assert status.phase is GangPhase.FAILED
    assert status.exit_code == 128 + signal.SIGKILL
    assert "rank 1 killed by SIGKILL" in status.reason
    assert time.monotonic() - started < 10.0  # not torchrun's 30 s shutdown timeout
    assert not any(running(pid) for pid in pids)


def test_cancel_lets_ranks_checkpoint_within_the_grace_period(tmp_path: Path) -> None:
    gang = launch(tmp_path, sleep_s={"default": 60}, on_sigterm="preempt")
    pids = gang.rank_pids()

    started = time.monotonic()
    gang.backend.cancel(gang.handle, grace_s=20.0)
    elapsed_s = time.monotonic() - started

    status = gang.backend.poll(gang.handle)
    assert status.phase is GangPhase.CANCELLED
    assert "within the 20.0 s grace period" in status.reason
    assert elapsed_s < 20.0
    assert all((gang.marker_dir / f"sigterm.{rank}").exists() for rank in range(2))
    assert not any(running(pid) for pid in pids)


def test_cancel_kills_ranks_that_ignore_sigterm_after_the_grace_period(tmp_path: Path) -> None:
    gang = launch(tmp_path, sleep_s={"default": 60}, on_sigterm="ignore")
    pids = gang.rank_pids()

    started = time.monotonic()
    gang.backend.cancel(gang.handle, grace_s=1.0)
    elapsed_s = time.monotonic() - started

    status = gang.backend.poll(gang.handle)
    assert status.phase is GangPhase.CANCELLED
    assert "SIGKILL" in status.reason
    assert 1.0 <= elapsed_s < 10.0
    assert not any(running(pid) for pid in pids)


def test_cancel_right_after_launch_stops_the_gang_before_ranks_start(tmp_path: Path) -> None:
    gang = launch(tmp_path, sleep_s={"default": 60}, on_sigterm="preempt")

    gang.backend.cancel(gang.handle, grace_s=20.0)

    assert gang.backend.poll(gang.handle).phase is GangPhase.CANCELLED
    started = [int(path.read_text()) for path in gang.marker_dir.glob("pid.*")]
    assert not any(running(pid) for pid in started)


def test_cancel_of_an_ended_gang_keeps_its_fate(tmp_path: Path) -> None:
    gang = launch(tmp_path)
    gang.wait_until_ended()

    gang.backend.cancel(gang.handle, grace_s=1.0)

    assert gang.backend.poll(gang.handle).phase is GangPhase.SUCCEEDED


def test_a_new_backend_instance_sees_the_fate_of_a_gang_launched_before_a_restart(
    tmp_path: Path,
) -> None:
    gang = launch(tmp_path, sleep_s={"default": 1}, exit_code={"default": EXIT_PREEMPTED})
    handle = json.loads(json.dumps(gang.handle))  # as stored in, and read back from, the DB

    restarted = Gang(LocalBackend(), handle, gang.marker_dir, gang.world_size)

    assert restarted.backend.poll(handle).phase is GangPhase.RUNNING
    assert restarted.wait_until_ended().phase is GangPhase.PREEMPTED


def test_a_dead_supervisor_fails_the_gang_and_its_ranks_are_killed(tmp_path: Path) -> None:
    gang = launch(tmp_path, sleep_s={"default": 60})
    pids = gang.rank_pids()

    os.kill(json.loads(gang.handle)["pid"], signal.SIGKILL)
    status = gang.wait_until_ended()

    assert status.phase is GangPhase.FAILED
    assert "supervisor died" in status.reason
    wait_for(lambda: not any(running(pid) for pid in pids), 5.0)


def test_a_handle_from_elsewhere_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="not a local backend handle"):
        LocalBackend().poll(json.dumps({"backend": "kubernetes", "job": "corral-1"}))


def test_launch_without_a_python_raises_a_backend_error(tmp_path: Path) -> None:
    backend = LocalBackend(python=str(tmp_path / "no-such-python"))
    request = LaunchRequest(
        job_id=1,
        attempt=1,
        world_size=2,
        job_file=str(tmp_path / "job.json"),
        log_path=str(tmp_path / "gang.log"),
    )

    with pytest.raises(BackendError, match="cannot start the local supervisor"):
        backend.launch(request)


def test_launch_refuses_more_than_one_node(tmp_path: Path) -> None:
    request = LaunchRequest(
        job_id=1,
        attempt=1,
        world_size=4,
        nodes=2,
        job_file=str(tmp_path / "job.json"),
        log_path=str(tmp_path / "gang.log"),
    )

    with pytest.raises(BackendError, match="1 node"):
        LocalBackend().launch(request)


def test_inventory_counts_cpu_rank_slots_and_cuda_devices() -> None:
    import torch

    inventory = LocalBackend().inventory()

    assert 1 <= inventory.cpu_devices <= (os.cpu_count() or 1)
    expected_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert inventory.cuda_devices == expected_cuda


def test_progress_comes_back_through_the_backend(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "markers").mkdir()
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"marker_dir": str(tmp_path / "markers")}))
    backend = LocalBackend()
    handle = backend.launch(LaunchRequest(
        job_id=1, attempt=1, world_size=1, job_file=str(job_file),
        log_path=str(tmp_path / "records" / "attempt-1.log"), run_dir=str(run_dir),
        module="tests.integration.rank_programs.gang_rank"))
    append_progress(run_dir / PROGRESS_FILE, "step", step=1, loss=2.5)
    events, cursor = backend.events(handle, 0)
    assert events == [Step(step=1, loss=2.5, tokens_per_s=None, step_time_s=None)]
    assert backend.events(handle, cursor) == ([], cursor)
    before = {k: v for k, v in json.loads(handle).items() if k != "progress_path"}
    assert backend.events(json.dumps(before), 0) == ([], 0)  # a handle from an older Corral
    Gang(backend, handle, tmp_path / "markers", 1).wait_until_ended()
