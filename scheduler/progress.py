"""Progress that rank 0 reports (``progress.jsonl``), folded into the job's row and events."""

from __future__ import annotations

from typing import Any

from scheduler.calibrate import record_step_time
from scheduler.db import repo
from scheduler.db.models import Job


def apply_progress(session: Any, job: Job, event: dict[str, Any]) -> None:
    """Fold one progress event from rank 0 into the job row, its events and checkpoints."""
    kind = event.get("event")
    if kind == "step":
        if job.first_loss is None:
            job.first_loss = event.get("loss")
        job.last_step = event.get("step")
        job.last_loss = event.get("loss")
        job.tokens_per_s = event.get("tokens_per_s")
        job.step_time_s = event.get("step_time_s")
        record_step_time(job, event)
    elif kind == "start":
        job.total_steps = event.get("total_steps", job.total_steps)
        job.step_times_s = []
        repo.note(session, job, f"attempt {event.get('attempt')}: ranks started at step "
                                f"{event.get('step')} of {job.total_steps}")
    elif kind in ("checkpoint", "preempted") and event.get("path"):
        repo.add_checkpoint(session, job, int(event["step"]), str(event["path"]),
                            {"loss": job.last_loss})
        if kind == "preempted":
            repo.note(session, job, f"checkpointed at step {event['step']} on SIGTERM")
    elif kind == "eval":
        job.eval_loss = event.get("eval_loss")
    elif kind == "done":
        job.eval_loss = event.get("eval_loss", job.eval_loss)
        repo.note(session, job, f"training finished{_eval_summary(event)}",
                  {k: v for k, v in event.items() if k != "event"})
    elif kind == "compress":
        repo.note(session, job, _compress_note(event),
                  {k: v for k, v in event.items() if k != "event"})


def _eval_summary(event: dict[str, Any]) -> str:
    """``": eval_loss 0.83, eval_accuracy 1"``: the eval metrics of a ``done`` event, if any."""
    metrics = [f"{name} {value:.4g}" for name, value in event.items()
               if name.startswith("eval_") and isinstance(value, float)]
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
