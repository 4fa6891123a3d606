"""A stand-in training rank for backend tests, driven by a JSON job file.

Job file fields (all optional except ``marker_dir``)::

    marker_dir   folder where rank R writes ``pid.R`` at start and ``sigterm.R`` on SIGTERM
    sleep_s      {"R": seconds} or "default": how long the rank "trains" before exiting
    exit_code    {"R": code} or "default": the code the rank exits with afterwards
    raise_error  {"R": message}: raise RuntimeError(message) instead of exiting
    on_sigterm   "default" (die), "preempt" (exit 75 as after a checkpoint), or "ignore"
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from scheduler.gangs.protocol import EXIT_PREEMPTED


def _per_rank(table: dict[str, Any], rank: int, fallback: Any) -> Any:
    return table.get(str(rank), table.get("default", fallback))


def main(job_file: str) -> int:
    """Behave as the job file says for this process's RANK; return the exit code."""
    config = json.loads(Path(job_file).read_text())
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    marker_dir = Path(config["marker_dir"])
    on_sigterm = config.get("on_sigterm", "default")

    def preempt(signum: int, frame: FrameType | None) -> None:
        (marker_dir / f"sigterm.{rank}").write_text("")
        print(f"rank {rank} got SIGTERM; exiting {EXIT_PREEMPTED}", flush=True)
        sys.exit(EXIT_PREEMPTED)

    if on_sigterm == "preempt":
        signal.signal(signal.SIGTERM, preempt)
    elif on_sigterm == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Written after the handlers are set, so a test that waits for it can signal right away.
    (marker_dir / f"pid.{rank}").write_text(str(os.getpid()))
    print(f"rank {rank} of {world_size} started as pid {os.getpid()}", flush=True)
    time.sleep(_per_rank(config.get("sleep_s", {}), rank, 0.0))
    message = config.get("raise_error", {}).get(str(rank))
    if message is not None:
        raise RuntimeError(message)
    code: int = _per_rank(config.get("exit_code", {}), rank, 0)
    print(f"rank {rank} exiting with code {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
