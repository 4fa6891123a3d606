"""Progress that rank 0 reports (``progress.jsonl``), folded into the job's row and events."""

from __future__ import annotations

import os
from typing import Any

from scheduler.calibrate import record_step_time
from scheduler.db import repo
from scheduler.db.models import Job
from scheduler.gangs.events import (
    Checkpoint,
    Compressed,
    Done,
    Eval,
    ProgressEvent,
    Start,
    Step,
)

MAX_NOTE_CHARS = 4096


def _inside(path: str, folder: str | None) -> bool:
    if folder is None:
        return False
    base = os.path.normpath(folder)
    return os.path.normpath(path).startswith(base.rstrip("/") + "/")


def apply_progress(session: Any, job: Job, event: ProgressEvent) -> None:
    """Fold one typed progress event (:mod:`scheduler.gangs.events`, every field checked
    there) into the job row, its events and checkpoints."""
    match event:
        case Step():
            if job.first_loss is None:
                job.first_loss = event.loss
            job.last_step = event.step
            job.last_loss = event.loss
            job.tokens_per_s = event.tokens_per_s
            job.step_time_s = event.step_time_s
            record_step_time(job, event.step_time_s)
        case Start():
            job.total_steps = event.total_steps or job.total_steps
            job.step_times_s = []
            repo.note(session, job, f"attempt {event.attempt}: ranks started at step "
                                    f"{event.step} of {job.total_steps}")
        case Checkpoint():
            if not _inside(event.path, job.run_dir):
                return  # a later attempt resumes only from the job's own folder
            repo.add_checkpoint(session, job, event.step, event.path, {"loss": job.last_loss})
            if event.on_sigterm:
                repo.note(session, job, f"checkpointed at step {event.step} on SIGTERM")
        case Eval():
            job.eval_loss = event.eval_loss
        case Done():
            job.eval_loss = event.eval_loss or job.eval_loss
            repo.note(session, job, f"training finished{_eval_summary(event.metrics)}",
                      event.detail)
        case Compressed():
            try:
                note = _compress_note(event.report)
            except (TypeError, ValueError, KeyError, AttributeError):
                note = "compressed (the ranks' report was malformed)"
            repo.note(session, job, note[:MAX_NOTE_CHARS], event.detail)


def _eval_summary(metrics: dict[str, float]) -> str:
    """``": eval_loss 0.83, eval_accuracy 1"``: the eval metrics of a ``done`` event, if any."""
    shown = [f"{name} {value:.4g}" for name, value in metrics.items()]
    return f": {', '.join(shown)}" if shown else ""


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
