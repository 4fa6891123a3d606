"""How a gang's end reads, the same for every backend: a cancel, a rank that found the spec
wrong, an exit code in words."""

from __future__ import annotations

import signal
from typing import Any

from scheduler.gangs.backend import GangPhase, GangStatus
from scheduler.gangs.protocol import EXIT_SPEC_ERROR
from workers.backends.local_supervisor import shell_code


def cancelled_status(marker: dict[str, Any]) -> GangStatus:
    """The fate of a gang its backend cancelled: ``marker`` is ``{"grace_s", "killed"}``, what
    the cancel recorded (killed: still running when the grace period ended)."""
    if marker["killed"]:
        reason = f"cancelled: SIGKILLed after the {marker['grace_s']} s grace period"
        return GangStatus(GangPhase.CANCELLED, shell_code(-signal.SIGKILL), reason)
    reason = f"cancelled: stopped within the {marker['grace_s']} s grace period after SIGTERM"
    return GangStatus(GangPhase.CANCELLED, None, reason)


def spec_error_status(ranks: dict[int, int], errors: str) -> GangStatus | None:
    """A failure no retry helps, when a rank exited :data:`EXIT_SPEC_ERROR`; else None."""
    wrong = [rank for rank, code in ranks.items() if code == EXIT_SPEC_ERROR]
    if not wrong:
        return None
    reason = f"rank {min(wrong)} found the job's spec or files wrong"
    return GangStatus(GangPhase.FAILED, EXIT_SPEC_ERROR,
                      f"{reason}: {errors}" if errors else reason, retryable=False)


def describe_exit(code: int) -> str:
    """``killed by SIGKILL``, ``exited with code 137 (128 + SIGKILL)``, ``exited with code 1``."""
    if code < 0:
        return f"killed by {_signal_name(-code)}"
    if 128 < code < 128 + signal.NSIG:
        return f"exited with code {code} (128 + {_signal_name(code - 128)})"
    return f"exited with code {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
