"""The Backend seam: turn an admitted gang into running ranks and report their fate.

Implementations: ``local`` (torchrun subprocesses on this machine), and later ``ray`` and
``kubernetes``. A backend is stateless between calls: everything needed to poll or cancel a
gang is in its *handle* (a JSON-able string the service stores on the job), so any process of
the scheduler on the same cluster can pick up a gang another one launched.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

from scheduler.domain.capabilities import BackendCapabilities
from scheduler.gangs.events import ProgressEvent
from scheduler.gangs.protocol import LaunchRequest


class GangPhase(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PREEMPTED = "preempted"
    """The ranks exited with ``EXIT_PREEMPTED`` after checkpointing."""
    CANCELLED = "cancelled"
    """The gang stopped because :meth:`Backend.cancel` was called on it."""


@dataclass(frozen=True, slots=True)
class GangStatus:
    phase: GangPhase
    exit_code: int | None = None
    reason: str = ""
    """Why it ended, in words for ``corral show`` ("rank 1 killed by SIGKILL")."""
    retryable: bool = True
    """False for a failure that would repeat on every attempt (the ranks found the spec wrong,
    the kernel refused the launch's arguments): the job fails without a retry."""


class Backend(Protocol):
    name: str
    capabilities: BackendCapabilities
    """What its gangs can do (:data:`scheduler.domain.capabilities.CAPABILITIES` under
    ``name``): the policies read it from a pool, never the backend's name."""

    def launch(self, request: LaunchRequest) -> str:
        """Start the gang; return its handle. Raise BackendError if it cannot start."""
        ...

    def poll(self, handle: str) -> GangStatus:
        """Where the gang is now. Never blocks for long; never raises for a dead gang."""
        ...

    def cancel(self, handle: str, grace_s: float = 30.0) -> None:
        """SIGTERM the gang, wait up to ``grace_s`` for it to checkpoint and exit, then SIGKILL."""
        ...

    def preempt(self, handle: str) -> None:
        """SIGTERM the gang and return at once: its ranks checkpoint and exit on their own
        (exit 75); the scheduler polls it like any gang and kills it if it overstays."""
        ...

    def read_log(self, handle: str, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """Up to ``max_bytes`` of the gang's combined log from byte ``offset``, and the log's
        size now; (b"", 0) for a gang whose log is gone."""
        ...

    def events(self, handle: str, cursor: int) -> tuple[list[ProgressEvent], int]:
        """Progress events the gang's rank 0 reported after ``cursor`` (0 at first), typed and
        checked (:func:`scheduler.gangs.events.parse_events`), and the cursor to ask from next
        time: the scheduler reads progress only through its backend, never from a folder of
        the ranks. Never raises for a gang that is gone."""
        ...


@dataclass(frozen=True, slots=True)
class NodeReport:
    """One machine as a backend that discovers its nodes reports it (a Ray cluster's)."""

    name: str
    """The node's name in Corral (unique over all pools): ``ray-`` and its id's first 12."""
    accelerator: str
    """Its devices' type (``H100``, ``cpu``)."""
    devices: int
    alive: bool


@runtime_checkable
class DiscoversNodes(Protocol):
    """A backend whose machines come and go on their own (a Ray cluster's nodes): its pools'
    nodes follow what it reports (:func:`scheduler.inventory.refresh`)."""

    def nodes(self) -> list[NodeReport]:
        """Every node it knows, alive or not; raises BackendError when it cannot tell."""
        ...


class LogSource(Protocol):
    """A log read in pieces (:func:`api.logs.read_masked`): its size now and a byte range."""

    def size(self) -> int: ...

    def read(self, start: int, length: int) -> bytes: ...


@dataclass(frozen=True, slots=True)
class BackendLog:
    """The log of one gang, read through its backend."""

    backend: Backend
    handle: str

    def size(self) -> int:
        return self.backend.read_log(self.handle, 0, 0)[1]

    def read(self, start: int, length: int) -> bytes:
        return self.backend.read_log(self.handle, start, length)[0]


@dataclass(frozen=True, slots=True)
class FileLog:
    """A log file on this machine (a gang's log recorded before backends served logs)."""

    path: Path

    def size(self) -> int:
        return file_size(self.path)

    def read(self, start: int, length: int) -> bytes:
        return read_file_range(self.path, start, length)


def read_log_file(path: Path, offset: int, max_bytes: int) -> tuple[bytes, int]:
    """:meth:`Backend.read_log` of a backend whose gang's log is a file on this machine."""
    log = FileLog(path)
    return (log.read(offset, max_bytes) if max_bytes else b""), log.size()


def read_file_range(path: Path, start: int, length: int) -> bytes:
    """``length`` bytes of ``path`` from ``start`` (fewer at its end; none if it is gone)."""
    try:
        with path.open("rb") as file:
            file.seek(start)
            return file.read(length)
    except OSError:
        return b""


def file_size(path: Path) -> int:
    """Bytes in ``path`` now; 0 if it is gone."""
    try:
        return path.stat().st_size
    except OSError:
        return 0
