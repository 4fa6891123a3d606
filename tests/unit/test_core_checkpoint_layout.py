"""Checkpoint folders: only complete, finally named folders count, and pruning keeps the newest."""

from __future__ import annotations

from pathlib import Path

from workers.core.checkpoint_layout import (
    COMPLETE_MARKER,
    checkpoint_name,
    latest_checkpoint,
    prune_checkpoints,
    staging_path,
)


def _complete(checkpoint_dir: Path, step: int) -> Path:
    path = checkpoint_dir / checkpoint_name(step)
    path.mkdir(parents=True)
    (path / COMPLETE_MARKER).write_text("{}")
    return path


def test_names_sort_by_step() -> None:
    assert checkpoint_name(50) == "step-00000050"
    assert staging_path(Path("/c"), 50) == Path("/c/step-00000050.tmp")


def test_no_folder_means_no_latest_checkpoint(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None


def test_a_staging_folder_is_never_the_latest_even_with_a_higher_step(tmp_path: Path) -> None:
    _complete(tmp_path, 50)
    staging = staging_path(tmp_path, 100)
    staging.mkdir()
    (staging / COMPLETE_MARKER).write_text("{}")  # even a finished-looking one
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000050"


def test_a_final_name_without_the_marker_is_not_complete(tmp_path: Path) -> None:
    _complete(tmp_path, 50)
    (tmp_path / checkpoint_name(100)).mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000050"


def test_latest_compares_steps_not_creation_order(tmp_path: Path) -> None:
    for step in (300, 1000, 50):
        _complete(tmp_path, step)
    assert latest_checkpoint(str(tmp_path)) == tmp_path / "step-00001000"


def test_pruning_keeps_the_newest_and_removes_unfinished_debris(tmp_path: Path) -> None:
    for step in (50, 100, 150, 200):
        _complete(tmp_path, step)
    staging_path(tmp_path, 250).mkdir()
    (tmp_path / "step-00000100.superseded").mkdir()
    (tmp_path / "notes.txt").write_text("not ours")

    removed = prune_checkpoints(tmp_path, keep=2)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt", "step-00000150", "step-00000200"]
    assert len(removed) == 4
