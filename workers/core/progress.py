"""Progress events of a running attempt, appended by rank 0 to ``run_dir/progress.jsonl``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from scheduler.gangs.protocol import ProgressKind, append_progress

logger = logging.getLogger(__name__)


class ProgressReporter:
    """Writes events for rank 0 and does nothing on the other ranks, so callers need no check."""

    def __init__(self, path: Path, attempt: int, enabled: bool) -> None:
        self.path = path
        self.attempt = attempt
        self.enabled = enabled

    def emit(self, kind: ProgressKind, **fields: Any) -> None:
        """Append one event; every event carries this attempt's number."""
        if not self.enabled:
            return
        append_progress(self.path, kind, attempt=self.attempt, **fields)
        if kind != "step":
            logger.info("%s %s", kind, fields)
