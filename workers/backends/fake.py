"""An in-memory backend for pools that cannot run here (GPU and TPU pools in tests).

It implements the same :class:`~workers.backends.base.Backend` protocol as the real backends;
tests decide each gang's fate with :meth:`FakeBackend.finish`. It runs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.domain.errors import BackendError
from workers.backends.base import GangPhase, GangStatus
from workers.protocol import LaunchRequest


@dataclass
class FakeBackend:
    name: str = "fake"
    launched: list[LaunchRequest] = field(default_factory=list)
    fail_launch: bool = False
    preempt_signals: list[str] = field(default_factory=list)
    """Handles told to preempt, once per signal: tests count them."""
    _status: dict[str, GangStatus] = field(default_factory=dict)
    _logs: dict[str, str] = field(default_factory=dict)

    def launch(self, request: LaunchRequest) -> str:
        if self.fail_launch:
            raise BackendError("fake backend told to refuse launches")
        handle = f"fake:{request.job_id}:{request.attempt}"
        self.launched.append(request)
        self._status[handle] = GangStatus(GangPhase.RUNNING)
        self._logs[handle] = request.log_path
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

    def log_path(self, handle: str) -> str:
        return self._logs.get(handle, "")

    def finish(self, job_id: int, phase: GangPhase, exit_code: int = 0,
               reason: str = "") -> None:
        """End the newest gang of ``job_id`` the way a real backend would report it."""
        for request in reversed(self.launched):
            if request.job_id == job_id:
                handle = f"fake:{request.job_id}:{request.attempt}"
                self._status[handle] = GangStatus(phase, exit_code, reason)
                return
        raise KeyError(f"job {job_id} was never launched on this fake backend")
