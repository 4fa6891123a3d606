"""Following a job as it runs: ``corral run``'s progress and ``corral logs -f``, in either mode.

Both poll the seam (:mod:`api.cli.seam`): embedded mode ticks the scheduler between polls, a
server schedules on its own. The log is read by byte offset, so nothing is printed twice and a
retry's new attempt is followed from its first byte.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from api.cli.render import progress_line, state_text
from api.cli.seam import FINAL_STATES, Corral
from scheduler.domain.errors import CorralError
from scheduler.domain.spec import JobSpec

CANCEL_WAIT_S = 60.0
"""How long Ctrl-C waits for a server to settle the cancelled job before printing the summary."""
LOG_POLL_S = 0.5


def follow_run(console: Console, corral: Corral, spec: JobSpec, job_id: int,
               poll_s: float) -> str:
    """Show progress and every event until the job ends; return its final state.

    Ctrl-C cancels the job (its ranks get SIGTERM and may checkpoint) and re-raises."""
    seen_events = 0
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
                        TextColumn("loss {task.fields[loss]}"),
                        TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(),
                        console=console, transient=False)
    try:
        with progress:
            task = progress.add_task(spec.name, total=spec.total_steps(), loss="-", tps="-")
            while True:
                corral.step()
                info = corral.describe(job_id)
                for event in info["events"][seen_events:]:
                    move = f"{state_text(event['to'])}: " if event["to"] else ""
                    progress.console.print(f"  {move}{escape(event['reason'])}", highlight=False)
                seen_events = len(info["events"])
                progress.update(task, completed=info["step"] or 0,
                                total=info["total_steps"] or spec.total_steps(),
                                loss="-" if info["loss"] is None else f"{info['loss']:.4f}",
                                tps="-" if info["tokens_per_s"] is None
                                else f"{info['tokens_per_s']:,.0f}")
                if info["state"] in FINAL_STATES:
                    return str(info["state"])
                time.sleep(poll_s)
    except KeyboardInterrupt:
        console.print("interrupted: cancelling the job (ranks get SIGTERM, then SIGKILL)")
        state = corral.cancel(job_id, "cancelled by Ctrl-C")
        deadline = time.monotonic() + CANCEL_WAIT_S
        while state not in FINAL_STATES and time.monotonic() < deadline:
            time.sleep(poll_s)
            state = corral.describe(job_id)["state"]
        raise


def print_summary(console: Console, corral: Corral, job_id: int, wall_s: float) -> None:
    info = corral.describe(job_id)
    console.rule(f"job {job_id} {info['state']}")
    console.print(f"wall time {wall_s:.1f} s, attempts {info['attempts']}, "
                  f"plan {info['plan'] or '-'}")
    if info["step"] is not None:
        console.print(progress_line(info))
    if info["checkpoints"]:
        console.print(f"latest checkpoint: {info['checkpoints'][-1]['path']}")
    where = " on the server" if corral.is_remote else ""
    console.print(f"run folder{where}: {info['run_dir']}  (logs: corral logs {job_id})")


def stream_log(corral: Corral, job_id: int, attempt: int | None, follow: bool,
               write: Callable[[str], Any] = sys.stdout.write) -> None:
    """Print a job's log; with ``follow`` keep printing until the job ends, moving on to each
    new attempt unless ``attempt`` pins one."""
    chunk = corral.log_chunk(job_id, attempt, 0)
    current = attempt or chunk["latest_attempt"] or None  # the attempt this chunk came from
    if current is None and not follow:
        state = corral.describe(job_id)["state"]
        raise CorralError(f"job {job_id} has no log yet (state {state})")
    offset = chunk["offset"]
    _write(write, chunk["data"])
    while follow:
        if not chunk["data"]:
            latest = chunk["latest_attempt"]
            if attempt is None and latest and latest != current:
                current, offset = latest, 0  # a retry started: follow its log
            elif chunk["finished"]:
                return
            else:
                time.sleep(LOG_POLL_S)
        chunk = corral.log_chunk(job_id, current, offset)
        current = current or chunk["latest_attempt"] or None
        offset = chunk["offset"]
        _write(write, chunk["data"])


def _write(write: Callable[[str], Any], text: str) -> None:
    if text:
        write(text)
        sys.stdout.flush()
