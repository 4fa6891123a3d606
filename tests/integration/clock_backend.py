"""A test double of the Backend protocol whose gangs are timers, shared across processes.

A gang runs no process: it is RUNNING until ``started_at + run_s`` (wall clock) and SUCCEEDED
after. Everything about it lives in its handle (JSON ``{job_id, attempt, started_at, run_s}``)
and in files of one shared folder, so a scheduler replica in any process can poll, preempt or
cancel a gang that another replica launched, exactly as with a real backend:

- ``run_s`` is the job spec's ``work.steps`` × the ``seconds_per_step`` given to the backend;
- ``cancel`` / ``preempt`` write ``signals/<job>-<attempt>.cancel|.preempt`` holding the time of
  the signal; a gang signalled before its end polls CANCELLED / PREEMPTED (exit 75) from then on;
- every launch appends one line ``{job_id, attempt, holder, time, devices}`` to
  ``launches.jsonl``, so a test can check that no attempt of a job was launched twice.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from scheduler.domain.capabilities import SPANS_NODES
from scheduler.gangs.backend import GangPhase, GangStatus
from scheduler.gangs.events import ProgressEvent
from scheduler.gangs.protocol import EXIT_PREEMPTED, LaunchRequest

SIGNALS = (("cancel", GangPhase.CANCELLED, -15), ("preempt", GangPhase.PREEMPTED, EXIT_PREEMPTED))


class ClockBackend:
    """Gangs that succeed ``work.steps × seconds_per_step`` seconds after their launch."""

    capabilities = SPANS_NODES

    def __init__(self, folder: Path, seconds_per_step: float, holder: str = "",
                 name: str = "clock") -> None:
        self.folder = folder
        self.seconds_per_step = seconds_per_step
        self.holder = holder
        """The replica launching through this backend, recorded with each launch."""
        self.name = name
        (folder / "signals").mkdir(parents=True, exist_ok=True)

    @property
    def launches_path(self) -> Path:
        return self.folder / "launches.jsonl"

    def launch(self, request: LaunchRequest) -> str:
        assert request.job is not None
        steps = int(request.job.spec["work"]["steps"])
        started_at = time.time()
        record = {"job_id": request.job_id, "attempt": request.attempt, "holder": self.holder,
                  "time": started_at, "devices": request.devices}
        _append_line(self.launches_path, record)
        return json.dumps({"job_id": request.job_id, "attempt": request.attempt,
                           "started_at": started_at, "run_s": steps * self.seconds_per_step})

    def poll(self, handle: str) -> GangStatus:
        gang = json.loads(handle)
        ends_at = gang["started_at"] + gang["run_s"]
        signalled = [(at, phase, code) for kind, phase, code in SIGNALS
                     if (at := self._signal_time(gang, kind)) is not None and at < ends_at]
        if signalled:
            _, phase, code = min(signalled)
            return GangStatus(phase, code, f"{phase.value} by signal")
        if time.time() < ends_at:
            return GangStatus(GangPhase.RUNNING)
        return GangStatus(GangPhase.SUCCEEDED, 0)

    def cancel(self, handle: str, grace_s: float = 30.0) -> None:
        self._signal(handle, "cancel")

    def preempt(self, handle: str) -> None:
        self._signal(handle, "preempt")

    def read_log(self, handle: str, offset: int, max_bytes: int) -> tuple[bytes, int]:
        return b"", 0  # its gangs print nothing

    def events(self, handle: str, cursor: int) -> tuple[list[ProgressEvent], int]:
        return [], cursor  # its gangs report no progress: time alone ends them

    def was_signalled(self, job_id: int, attempt: int, kind: str) -> bool:
        """Whether attempt ``attempt`` of ``job_id`` got a ``cancel`` or ``preempt``."""
        return self._marker({"job_id": job_id, "attempt": attempt}, kind).exists()

    def launches(self) -> list[dict[str, Any]]:
        """Every launch so far, by any process, in the order they were appended."""
        if not self.launches_path.exists():
            return []
        return [json.loads(line) for line in self.launches_path.read_text().splitlines()]

    def _marker(self, gang: dict[str, Any], kind: str) -> Path:
        return self.folder / "signals" / f"{gang['job_id']}-{gang['attempt']}.{kind}"

    def _signal_time(self, gang: dict[str, Any], kind: str) -> float | None:
        try:
            return float(self._marker(gang, kind).read_text())
        except (FileNotFoundError, ValueError):  # absent, or being written right now
            return None

    def _signal(self, handle: str, kind: str) -> None:
        """Record the first signal of ``kind``; a later one does not move its time."""
        marker = self._marker(json.loads(handle), kind)
        if not marker.exists():
            tmp = marker.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(repr(time.time()))
            os.replace(tmp, marker)


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single write(2) on an O_APPEND file: whole, even when
    several processes append at once."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)
