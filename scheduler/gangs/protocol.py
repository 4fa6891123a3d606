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
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

EXIT_PREEMPTED = 75
"""EX_TEMPFAIL from sysexits.h: stopped on request after checkpointing; retry later."""

EXIT_SPEC_ERROR = 78
"""EX_CONFIG from sysexits.h: the job's spec or files are wrong (a data file the ranks cannot
read, a path outside the tenant's roots): a retry would fail the same way, so none is made."""

PROGRESS_FILE = "progress.jsonl"
"""Where rank 0 appends its progress events in the job's run folder."""

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
    """The job's folder, shared by all attempts and writable by its ranks: checkpoints/,
    progress.jsonl, export/. Logs are the service's and live elsewhere."""
    resume_from: str | None = None
    """A complete checkpoint folder to resume from, or None to start fresh."""
    allowed_roots: dict[str, list[str]] | None = None
    """``{"data": [...], "model": [...]}``: folders the spec's files must lie in (checked again
    by the ranks, links resolved); None: any path (embedded mode)."""

    @property
    def progress_path(self) -> Path:
        return Path(self.run_dir) / PROGRESS_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.run_dir) / "checkpoints"

    @property
    def export_dir(self) -> Path:
        return Path(self.run_dir) / EXPORT_DIR_NAME

    def write(self, path: Path, owner: JobIdentity | None = None) -> None:
        """Write the file owner-only (the spec may carry secret env values), owned by
        ``owner`` when the ranks run as another identity.

        The folder may be the job's own, writable by its ranks: a link planted at the
        temporary name is refused (O_EXCL, O_NOFOLLOW), never followed, and the rename
        replaces whatever entry holds the final name without following it."""
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            if owner is not None:
                os.fchown(handle.fileno(), owner.uid, owner.gid)
            handle.write(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str | Path) -> JobFile:
        return cls(**json.loads(Path(path).read_text()))


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """The unprivileged user and group a gang's ranks run as (server mode)."""

    uid: int
    gid: int
    name: str


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """One gang to start: ``world_size`` ranks of a job, with logs in ``log_path``.

    The job travels by value (``job``): the backend puts it where its ranks can read it (the
    local backend: ``run_dir/attempt-N.json``); the scheduler writes nothing into a run folder.
    ``job_file`` names a file the ranks read instead, for programs that are not a Corral job
    (the backends' own tests)."""

    job_id: int
    attempt: int
    world_size: int
    log_path: str
    job: JobFile | None = None
    job_file: str = ""
    nodes: int = 1
    devices: dict[str, list[int]] = field(default_factory=dict)
    """Node name -> device indexes allocated on it (CUDA_VISIBLE_DEVICES on GPU nodes)."""
    env: dict[str, str] = field(default_factory=dict)
    module: str = "workers.jobs.run"
    """Python module each rank runs with the job file as its one argument."""
    run_dir: str = ""
    """The job's run folder: the ranks' working folder, HOME and TMPDIR."""
    identity: JobIdentity | None = None
    """Who the ranks run as; None: the scheduler's own user (embedded mode)."""
    accelerator: str = ""
    """The pool's accelerator (``cpu``, ``H100-SXM``, ...): what each rank's share of a node
    holds, for a backend that reserves it (a Ray bundle asks for a GPU unless ``cpu``)."""


def append_progress(progress_file: Path, kind: ProgressKind, /, **fields: Any) -> None:
    """Append one progress event as a whole line (rank 0 only)."""
    record = {"event": kind, "time": time.time(), **fields}
    with progress_file.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


MAX_PROGRESS_READ_BYTES = 1 << 20
"""Most bytes of a progress file read per call: a job that floods its file cannot make the
scheduler read it all at once (the rest is read on the next calls)."""


def read_progress(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Return complete events after byte ``offset`` and the offset to read from next time
    (:func:`read_progress_bytes`, then :func:`parse_progress`): a line that is not a JSON
    object (or longer than :data:`MAX_PROGRESS_READ_BYTES`) is skipped."""
    return parse_progress(read_progress_bytes(path, offset), offset)


def read_progress_bytes(path: Path, offset: int) -> bytes:
    """At most :data:`MAX_PROGRESS_READ_BYTES` of a progress file from byte ``offset``.

    The file lies in the job's own folder, written by its ranks, and its reader may have more
    rights than they have: a link is not followed and anything but a regular file reads as
    empty."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # missing, or a link planted in its place
        return b""
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        handle.seek(offset)
        return handle.read(MAX_PROGRESS_READ_BYTES)


def parse_progress(data: bytes, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The complete events in ``data``, read from byte ``offset`` of a progress stream (at
    most :data:`MAX_PROGRESS_READ_BYTES`), and the offset to read from next time: a last line
    without its newline is left for then, one longer than the bound is skipped, and a line
    that is not a JSON object is ignored."""
    end = data.rfind(b"\n") + 1
    if end == 0 and len(data) >= MAX_PROGRESS_READ_BYTES:
        return [], offset + len(data)  # one line longer than the bound: skip it
    events = []
    for line in data[:end].splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events, offset + end
