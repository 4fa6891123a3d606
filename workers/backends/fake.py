"""An in-memory backend for pools that cannot run here (GPU and TPU pools in tests).

It implements the same :class:`~scheduler.gangs.backend.Backend` protocol as the real backends;
tests decide each gang's fate with :meth:`FakeBackend.finish`. It runs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scheduler.domain.capabilities import BackendCapabilities, capabilities_of
from scheduler.domain.errors import BackendError
from scheduler.gangs.backend import GangPhase, GangStatus, read_log_file
from scheduler.gangs.events import ProgressEvent, read_events
from scheduler.gangs.protocol import PROGRESS_FILE, LaunchRequest


@dataclass
class FakeBackend:
    name: str = "fake"
    capabilities: BackendCapabilities = capabilities_of("fake")
    launched: list[LaunchRequest] = field(default_factory=list)
    fail_launch: bool = False
    preempt_signals: list[str] = field(default_factory=list)
    """Handles told to preempt, once per signal: tests count them."""
    _status: dict[str, GangStatus] = field(default_factory=dict)
    _logs: dict[str, str] = field(default_factory=dict)
    _run_dirs: dict[str, str] = field(default_factory=dict)

    def launch(self, request: LaunchRequest) -> str:
        if self.fail_launch:
            raise BackendError("fake backend told to refuse launches")
        handle = f"fake:{request.job_id}:{request.attempt}"
        Path(request.log_path).parent.mkdir(parents=True, exist_ok=True)  # as a real one does
        if request.run_dir:  # as the local backend does: tests write into it, or fill its disk
            Path(request.run_dir).mkdir(parents=True, exist_ok=True)
            if request.job is not None:
                request.job.write(Path(request.run_dir) / f"attempt-{request.attempt}.json")
        self.launched.append(request)
        self._status[handle] = GangStatus(GangPhase.RUNNING)
        self._logs[handle] = request.log_path
        self._run_dirs[handle] = request.run_dir
        return handle

    def poll(self, handle: str) -> GangStatus:
        return self._status.get(handle, GangStatus(GangPhase.FAILED, None, "unknown gang"))

    def cancel(self, handle: str, grace_s: float = 30.0) -> None:
        if self._status.get(handle, GangStatus(GangPhase.FAILED)).phase is GangPhase.RUNNING:
            self._status[handle] = GangStatus(GangPhase.CANCELLED, -15, "cancelled")

    def preempt(self, handle: str) -> None:
        """Record the signal; the gang checkpoints and exits 75 as a real one would."""
        self.preempt_signals.append(handle)
        if self._status.get(handle, GangStatus(GangPhase.FAILED)).phase is GangPhase.RUNNING:
            self._status[handle] = GangStatus(GangPhase.PREEMPTED, 75, "preempted")

    def read_log(self, handle: str, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """What a test wrote at the gang's log path."""
        return read_log_file(Path(self._logs.get(handle, "/nonexistent")), offset, max_bytes)

    def events(self, handle: str, cursor: int) -> tuple[list[ProgressEvent], int]:
        """What a test appended to the gang's progress file, as the local backend reads it."""
        run_dir = self._run_dirs.get(handle)
        if not run_dir:
            return [], cursor
        return read_events(Path(run_dir) / PROGRESS_FILE, cursor)

    def finish(self, job_id: int, phase: GangPhase, exit_code: int = 0,
               reason: str = "") -> None:
        """End the newest gang of ``job_id`` the way a real backend would report it."""
        for request in reversed(self.launched):
            if request.job_id == job_id:
                handle = f"fake:{request.job_id}:{request.attempt}"
                self._status[handle] = GangStatus(phase, exit_code, reason)
                return
        raise KeyError(f"job {job_id} was never launched on this fake backend")
