"""The contract between the scheduler service, a backend and the training ranks.

The service writes a *job file* (JSON, :class:`JobFile`) into the attempt's folder, asks a
backend to launch ``world_size`` ranks running ``python -m workers.jobs.run JOB_FILE``, and
reads back two things:

* the gang's fate from :meth:`Backend.poll` (exit status of the whole gang);
* progress that rank 0 appends, one JSON object per line, to ``progress.jsonl`` in the job's run
  folder (:class:`ProgressEvent` kinds below). Lines are flushed whole; a reader must ignore a
  last line without a newline (it is still being written).

Exit statuses of the gang: ``0`` succeeded, :data:`EXIT_PREEMPTED` the trainer caught SIGTERM,
saved a checkpoint and stopped on purpose; anything else is a failure.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

EXIT_PREEMPTED = 75
"""EX_TEMPFAIL from sysexits.h: stopped on request after checkpointing; retry later."""

EXPORT_DIR_NAME = "export"
"""Folder in a job's run folder where a finished job leaves its model in the transformers layout
(``save_pretrained`` weights and the tokenizer); ``model.path: job:NAME`` points at it."""

ProgressKind = Literal["start", "step", "checkpoint", "eval", "done", "preempted", "compress"]
"""``start``: {step, total_steps}; ``step``: {step, loss, tokens_per_s, step_time_s, lr};
``checkpoint``: {step, path}; ``eval``: {step, eval_loss, and the task's other metrics such as
eval_accuracy}; ``done``: {step, loss, eval_loss, the same metrics};
``preempted``: {step, path}; ``compress``: {method, settings, threads, latency_batch_shape,
before, after, report}, where before and after are {size_bytes, parameters, nonzero_parameters,
latency_s, metrics: {eval_loss, perplexity, ...}} and report is the path of ``report.json``.
Every event also has ``time`` (unix seconds) and ``attempt``."""


@dataclass(frozen=True, slots=True)
class JobFile:
    """Everything a rank needs to run one attempt of a job; written by the service as JSON."""

    job_id: int
    attempt: int
    spec: dict[str, Any]
    """``JobSpec.model_dump(mode="json")``."""
    plan: dict[str, Any]
    """``Plan.to_dict()``."""
    run_dir: str
    """The job's folder, shared by all attempts: checkpoints/, progress.jsonl, logs/, export/."""
    resume_from: str | None = None
    """A complete checkpoint folder to resume from, or None to start fresh."""

    @property
    def progress_path(self) -> Path:
        return Path(self.run_dir) / "progress.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.run_dir) / "checkpoints"

    @property
    def export_dir(self) -> Path:
        return Path(self.run_dir) / EXPORT_DIR_NAME

    def write(self, path: Path) -> None:
        # Owner-only: the spec may carry secret env values.
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str | Path) -> JobFile:
        return cls(**json.loads(Path(path).read_text()))


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """One gang to start: ``world_size`` ranks of the job file, with logs in ``log_path``."""

    job_id: int
    attempt: int
    world_size: int
    job_file: str
    log_path: str
    nodes: int = 1
    devices: dict[str, list[int]] = field(default_factory=dict)
    """Node name -> device indexes allocated on it (CUDA_VISIBLE_DEVICES on GPU nodes)."""
    env: dict[str, str] = field(default_factory=dict)
    module: str = "workers.jobs.run"
    """Python module each rank runs with the job file as its one argument."""


def append_progress(progress_file: Path, kind: ProgressKind, /, **fields: Any) -> None:
    """Append one progress event as a whole line (rank 0 only)."""
    record = {"event": kind, "time": time.time(), **fields}
    with progress_file.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def read_progress(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Return complete events after byte ``offset`` and the offset to read from next time."""
    if not path.exists():
        return [], offset
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    events = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return events, offset + end
