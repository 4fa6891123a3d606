"""A job writes its own progress file; whatever it writes there, the scheduler stays up and
stores only what the protocol allows (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from scheduler.db import repo
from scheduler.gangs.protocol import MAX_PROGRESS_READ_BYTES, read_progress
from scheduler.service import SchedulerService
from tests.builders import make_spec


def running_job(service: SchedulerService) -> tuple[int, Path]:
    """A job whose gang runs on the fake backend, and its run folder."""
    job_id = service.submit(make_spec(resources__pool="cpu", resources__devices=1))
    service.tick()
    with service.db.read() as session:
        job = repo.get_job(session, job_id)
        assert job.backend_handle is not None
        return job_id, Path(job.run_dir or "")


def test_garbage_in_the_progress_file_is_skipped_and_types_are_checked(
        service: SchedulerService) -> None:
    job_id, run_dir = running_job(service)
    lines = [
        "not json at all",
        json.dumps(["a", "list"]),
        json.dumps({"event": "step", "step": "many", "loss": "NaN?", "tokens_per_s": 1e400,
                    "step_time_s": True}),
        '{"event": "step", "step": 3, "loss": NaN, "tokens_per_s": 100.0}',
        json.dumps({"event": "checkpoint", "step": 2, "path": "/etc"}),
        json.dumps({"event": "checkpoint", "step": 2, "path": str(run_dir / "checkpoints" /
                                                                   "step-2")}),
        json.dumps({"event": "done", "eval_loss": 0.5, "blob": "x" * 100_000}),
        json.dumps({"event": "compress", "before": "not a dict"}),
    ]
    (run_dir / "progress.jsonl").write_text("\n".join(lines) + "\n")
    service.tick()  # the reconciler reads them through the backend
    detail = service.describe(job_id)
    assert detail["step"] == 3 and detail["loss"] is None and detail["tokens_per_s"] == 100.0
    assert [c["path"] for c in detail["checkpoints"]] == [str(run_dir / "checkpoints" /
                                                              "step-2")]
    done = [e for e in detail["events"] if e["reason"].startswith("training finished")]
    assert done and done[0]["detail"] is None  # 100 kB of detail is not stored


def test_a_link_in_place_of_the_progress_file_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"event": "step", "step": 1, "password": "hunter2"}) + "\n")
    os.symlink(secret, tmp_path / "progress.jsonl")
    assert read_progress(tmp_path / "progress.jsonl") == ([], 0)


def test_a_flood_is_read_in_bounded_pieces(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    path.write_bytes(b"x" * (MAX_PROGRESS_READ_BYTES + 10) + b"\n" +
                     json.dumps({"event": "eval", "eval_loss": 1.0}).encode() + b"\n")
    events, offset = read_progress(path)
    assert events == [] and offset == MAX_PROGRESS_READ_BYTES  # the long line is skipped
    events, _ = read_progress(path, offset)
    assert events == [{"event": "eval", "eval_loss": 1.0}]
