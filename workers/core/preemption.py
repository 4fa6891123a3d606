"""Turn SIGTERM into a request to stop cleanly at the end of the current step.

Backends preempt or cancel a gang with SIGTERM and a grace period (torchrun forwards it to every
rank and waits ``--shutdown-timeout`` seconds, 30 by default, before SIGKILL). The handler only
records the request; the trainer finishes the step it is in, agrees with the other ranks, saves a
checkpoint and exits with ``EXIT_PREEMPTED``.
"""

from __future__ import annotations

import signal
from types import FrameType


class StopRequest:
    """Set once a stop signal arrives; read by the training loop between steps."""

    def __init__(self) -> None:
        self.signal_number: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def install(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)) -> StopRequest:
        """Handle ``signals`` in this process from now on; returns self."""
        for signal_kind in signals:
            signal.signal(signal_kind, self._handle)
        return self

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        # Only record: the handler runs between two bytecodes of whatever the rank was doing,
        # possibly inside a collective, so any real work here could deadlock the gang. A
        # second signal (torchrun forwards one after the backend's) changes nothing.
        self.signal_number = signal_number
