"""Progress that rank 0 reports (``progress.jsonl``), folded into the job's row and events."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from scheduler.calibrate import record_step_time
from scheduler.db import repo
from scheduler.db.models import Job

MAX_PATH_CHARS = 4096
MAX_NOTE_CHARS = 4096
MAX_DETAIL_CHARS = 16_384
"""Largest JSON an event's detail may take in the events table; a job writes its own progress
file, so a bigger one is stored without its detail."""


def _count(event: dict[str, Any], key: str) -> int | None:
    """A non-negative whole number a rank reported, or None for anything else."""
    value = event.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and 0 <= value < 2**31 else None


def _real(event: dict[str, Any], key: str) -> float | None:
    """A finite number a rank reported, or None for anything else."""
    value = event.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and abs(value) < 1e300 else None


def _inside(path: str, folder: str | None) -> bool:
    if folder is None:
        return False
    base = os.path.normpath(folder)
    return os.path.normpath(path).startswith(base.rstrip("/") + "/")


def _detail(event: dict[str, Any]) -> dict[str, Any] | None:
    """The event's fields for the events table, if they are plain JSON (no NaN, which
    PostgreSQL's json type refuses) and small enough."""
    detail = {k: v for k, v in event.items() if k != "event"}
    try:
        text = json.dumps(detail, allow_nan=False)
    except ValueError:
        return None
    return detail if len(text) <= MAX_DETAIL_CHARS else None


def apply_progress(session: Any, job: Job, event: dict[str, Any]) -> None:
    """Fold one progress event from rank 0 into the job row, its events and checkpoints.

    The ranks run the tenant's code and write the file: every field is checked for its type
    and range here, and one that is not what the protocol says is left out, never stored."""
    kind = event.get("event")
    if kind == "step":
        loss = _real(event, "loss")
        if job.first_loss is None:
            job.first_loss = loss
        job.last_step = _count(event, "step")
        job.last_loss = loss
        job.tokens_per_s = _real(event, "tokens_per_s")
        job.step_time_s = _real(event, "step_time_s")
        record_step_time(job, event)
    elif kind == "start":
        job.total_steps = _count(event, "total_steps") or job.total_steps
        job.step_times_s = []
        repo.note(session, job, f"attempt {_count(event, 'attempt')}: ranks started at step "
                                f"{_count(event, 'step')} of {job.total_steps}")
    elif kind in ("checkpoint", "preempted"):
        step, path = _count(event, "step"), event.get("path")
        if step is None or not isinstance(path, str) or not 0 < len(path) <= MAX_PATH_CHARS \
                or not _inside(path, job.run_dir):
            return  # a later attempt resumes only from the job's own folder
        repo.add_checkpoint(session, job, step, path, {"loss": job.last_loss})
        if kind == "preempted":
            repo.note(session, job, f"checkpointed at step {step} on SIGTERM")
    elif kind == "eval":
        job.eval_loss = _real(event, "eval_loss")
    elif kind == "done":
        job.eval_loss = _real(event, "eval_loss") or job.eval_loss
        repo.note(session, job, f"training finished{_eval_summary(event)}", _detail(event))
    elif kind == "compress":
        try:
            note = _compress_note(event)
        except (TypeError, ValueError, KeyError, AttributeError):
            note = "compressed (the ranks' report was malformed)"
        repo.note(session, job, note[:MAX_NOTE_CHARS], _detail(event))


def _eval_summary(event: dict[str, Any]) -> str:
    """``": eval_loss 0.83, eval_accuracy 1"``: the eval metrics of a ``done`` event, if any."""
    metrics = [f"{name} {value:.4g}" for name, value in event.items()
               if name.startswith("eval_") and len(name) <= 64 and isinstance(value, float)][:8]
    return f": {', '.join(metrics)}" if metrics else ""


def _compress_note(event: dict[str, Any]) -> str:
    """The before → after lines of a ``compress`` event, as ``corral show`` prints them."""
    before, after = event.get("before") or {}, event.get("after") or {}
    settings = ", ".join(f"{name} {value}" for name, value in (event.get("settings") or {}).items()
                         if name not in ("method", "latency_runs", "latency_threads"))

    def change(name: str, scale: float = 1.0, unit: str = "", digits: int = 4) -> str:
        old, new = before.get(name), after.get(name)
        if old is None or new is None:
            return "-"
        ratio = f" (×{new / old:.2f})" if old else ""
        return f"{old * scale:.{digits}g}{unit} → {new * scale:.{digits}g}{unit}{ratio}"

    def metric(name: str) -> str:
        old = (before.get("metrics") or {}).get(name)
        new = (after.get("metrics") or {}).get(name)
        return f"{name} {old:.4f} → {new:.4f}" if old is not None and new is not None else ""

    threads = event.get("threads")
    batch = "×".join(str(size) for size in event.get("latency_batch_shape") or [])
    metrics = "; ".join(text for text in (metric("eval_loss"), metric("perplexity"),
                                          metric("eval_accuracy")) if text)
    # Continuation lines indented, so that `corral run` shows them under their headline.
    return "\n  ".join([
        f"compress {event.get('method')} ({settings}): before → after",
        f"size on disk {change('size_bytes', 1e-6, ' MB')}",
        f"parameters {change('parameters', digits=9)}, non-zero "
        f"{change('nonzero_parameters', digits=9)}",
        f"latency per {batch} batch {change('latency_s', 1e3, ' ms', 3)} on {threads} thread(s)",
        metrics or "no quality metric",
    ])
