"""Start a job's ranks as torchrun would, and read what rank 0 reported.

The ranks are started directly, with the variables torchrun sets: no agent in between, so
each rank's own exit status (75 after a preemption) is visible and a stopped gang ends as soon
as its ranks do (torchrun's own SIGTERM handling is covered in ``test_trainer.py``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

Gang = list[subprocess.Popen[bytes]]
"""The rank processes of one launch, rank 0 first."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def launch_ranks(job_file: Path, log: Path, world_size: int) -> Gang:
    """``world_size`` processes of ``python -m workers.jobs.run JOB_FILE``, one gang."""
    port = str(free_port())
    ranks = []
    with log.open("ab") as sink:
        for rank in range(world_size):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world_size),
                       LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
            ranks.append(subprocess.Popen(
                [sys.executable, "-m", "workers.jobs.run", str(job_file)], cwd=REPO_ROOT,
                env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True))
    return ranks


def wait(ranks: Gang, log: Path, timeout_s: float = 120) -> list[int]:
    """The exit status of every rank; kill them all and fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    try:
        return [rank.wait(timeout=max(0.0, deadline - time.monotonic())) for rank in ranks]
    except subprocess.TimeoutExpired:
        for rank in ranks:
            rank.kill()
        pytest.fail(f"ranks still running after {timeout_s} s; log:\n{log.read_text()[-4000:]}")


def kill_leftovers(*gangs: Gang) -> None:
    """SIGKILL every rank of ``gangs`` still running (after a failed assertion)."""
    for gang in gangs:
        for rank in gang:
            if rank.poll() is None:
                rank.kill()
                rank.wait()


def events(run_dir: Path, attempt: int) -> list[dict[str, Any]]:
    """Progress events of ``attempt``; a last line still being written is skipped."""
    path = run_dir / "progress.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return [event for event in lines if event["attempt"] == attempt]


def losses(run_events: list[dict[str, Any]]) -> dict[int, float]:
    """Step → loss of the ``step`` events."""
    return {event["step"]: event["loss"] for event in run_events if event["event"] == "step"}


def wait_for_step(run_dir: Path, step: int, ranks: Gang,
                  timeout_s: float = 90) -> None:
    """Return once attempt 1 has reported ``step``; fail if the ranks exit or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if max(losses(events(run_dir, 1)), default=0) >= step:
            return
        if any(rank.poll() is not None for rank in ranks):
            pytest.fail(f"ranks exited with {[rank.poll() for rank in ranks]} before step {step}")
        time.sleep(0.05)
    pytest.fail(f"step {step} not reached within {timeout_s} s")
