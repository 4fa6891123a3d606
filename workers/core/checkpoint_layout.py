"""Names and housekeeping of checkpoint folders; no torch, so the scheduler service can use it.

A job's checkpoints live in ``run_dir/checkpoints/``::

    step-00000050/          complete: every rank wrote its shards, then rank 0 renamed it
    step-00000100/
    step-00000150.tmp/      being written (or left by a crash): never used, never "latest"

A folder is complete exactly when it has its final name; rank 0 renames ``.tmp`` folders only
after all ranks have finished writing (a barrier), and a rename is atomic on one file system.
Completeness is additionally checked by the marker file the checkpoint writer creates last.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

STAGING_SUFFIX = ".tmp"
COMPLETE_MARKER = "meta.json"
"""Written by rank 0 into the staging folder after all shards; holds step and metrics."""

_FINAL_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint after ``step`` optimizer steps: ``step-00000050``."""
    return f"step-{step:08d}"


def staging_path(checkpoint_dir: Path, step: int) -> Path:
    """Where the ranks write the checkpoint of ``step`` before it is complete."""
    return checkpoint_dir / f"{checkpoint_name(step)}{STAGING_SUFFIX}"


def step_of(path: Path) -> int | None:
    """The step of a complete checkpoint folder's name, or None for any other name."""
    match = _FINAL_NAME.match(path.name)
    return int(match.group(1)) if match else None


def complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Complete checkpoint folders in ``checkpoint_dir``, oldest step first."""
    if not checkpoint_dir.is_dir():
        return []
    found = [
        (step, path)
        for path in checkpoint_dir.iterdir()
        if (step := step_of(path)) is not None and (path / COMPLETE_MARKER).is_file()
    ]
    return [path for _, path in sorted(found)]


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None if there is none."""
    complete = complete_checkpoints(Path(checkpoint_dir))
    return complete[-1] if complete else None


def prune_checkpoints(checkpoint_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints, and any unfinished folders.

    Unfinished folders (``.tmp`` and the like) are debris of interrupted attempts, so call this
    only while no rank is writing a checkpoint. Returns the removed folders.
    """
    complete = complete_checkpoints(checkpoint_dir)
    doomed = complete[: max(0, len(complete) - keep)]
    doomed += [
        path
        for path in checkpoint_dir.glob("step-*")
        if path.is_dir() and path not in complete
    ]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
