"""Replays side by side: one comparison row per policy, and a plot of the timelines.

Pure formatting, except :func:`plot_timelines`, which writes a PNG with matplotlib's Agg backend
(imported when called, so the rest of the simulator never needs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from scheduler.sim.result import SimResult

COLUMNS = (
    "policy",
    "done",
    "mean JCT",
    "p99 JCT",
    "mean queue",
    "p99 queue",
    "makespan",
    "util",
    "Jain",
    "FTF mean",
    "FTF max",
    "deadlines",
    "preempt",
    "cycle p50 ms",
    "cycle p99 ms",
    "jobs/wall-s",
)
"""Columns of :func:`comparison_rows`: JCT is job completion time (end − arrival), queue the
wait before the first start, util busy device-seconds over the makespan, Jain Jain's index over
tenants' mean slowdowns, FTF Themis' finish-time fairness ρ = JCT / run time alone (mean and
max over jobs; 1 = as if alone), deadlines the share of jobs with a deadline that met it,
preempt the attempts stopped by preemption."""


def format_duration(seconds: float) -> str:
    """``42.0 s``, ``12.5 min``, ``3.40 h`` or ``2.10 d``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 86400:.2f} d"


def _optional(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def comparison_row(result: SimResult) -> tuple[str, ...]:
    """One row of :data:`COLUMNS` for ``result``."""
    m = result.metrics
    timing = (
        _optional(result.cycle_ms(50), ".2f"),
        _optional(result.cycle_ms(99), ".2f"),
        _optional(result.jobs_per_wall_s, ",.0f"),
    )
    done = f"{len(result.records)}/{result.jobs}"
    if m is None:
        return (result.policy, done, *("-" for _ in range(len(COLUMNS) - 5)), *timing)
    return (
        result.policy,
        done,
        format_duration(m.mean_completion_s),
        format_duration(m.p99_completion_s),
        format_duration(m.mean_queueing_s),
        format_duration(m.p99_queueing_s),
        format_duration(m.makespan_s),
        f"{m.device_utilization:.1%}",
        f"{m.jain_slowdown:.3f}",
        f"{m.mean_finish_time_fairness:.2f}",
        f"{m.max_finish_time_fairness:.1f}",
        _optional(m.deadline_hit_rate, ".1%"),
        str(result.preemptions),
        *timing,
    )


def comparison_rows(results: Sequence[SimResult]) -> list[tuple[str, ...]]:
    return [comparison_row(result) for result in results]


def notes(result: SimResult) -> list[str]:
    """What the table does not show: jobs rejected, given up, never admitted, narrowed."""
    lines = []
    if result.rejected:
        first = next(iter(result.rejected.values()))
        lines.append(f"{len(result.rejected)} jobs rejected at submit (e.g. {first})")
    if result.gave_up:
        lines.append(f"{len(result.gave_up)} jobs gave up after failing max_attempts times")
    if result.unfinished:
        lines.append(f"{len(result.unfinished)} jobs never admitted")
    if result.failed_attempts:
        lines.append(f"{result.failed_attempts} attempts failed (injected failures)")
    if result.preemptions:
        lines.append(
            f"{result.preemptions} attempts preempted, losing "
            f"{result.lost_device_s / 3600:,.1f} device-hours of work since their checkpoints"
        )
    if result.narrowed:
        lines.append(
            f"{result.narrowed} jobs allowing several accelerator types were narrowed to one "
            f"per cycle"
        )
    return [f"{result.policy}: {line}" for line in lines]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(cell).ljust(width) if index == 0 else str(cell).rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def plot_timelines(results: Sequence[SimResult], path: Path | str) -> Path:
    """Write a PNG of pending jobs and device utilization over simulated time, one line per
    policy; returns the path."""
    from matplotlib.figure import Figure  # Agg canvas: no display, no global pyplot state

    figure = Figure(figsize=(10, 6), layout="constrained")
    queue_axes, busy_axes = figure.subplots(2, 1, sharex=True)
    for result in results:
        if not result.timeline:
            continue
        hours = [sample.time_s / 3600 for sample in result.timeline]
        queue_axes.step(
            hours, [s.pending_jobs for s in result.timeline], where="post", label=result.policy
        )
        busy_axes.step(
            hours,
            [100 * s.busy_devices / result.total_devices for s in result.timeline],
            where="post",
            label=result.policy,
        )
    queue_axes.set_ylabel("pending jobs")
    queue_axes.set_title("Queue length and device utilization over simulated time")
    busy_axes.set_ylabel("devices busy (%)")
    busy_axes.set_xlabel("simulated time (h)")
    busy_axes.set_ylim(0, 105)
    for axes in (queue_axes, busy_axes):
        axes.grid(alpha=0.3)
        axes.legend(loc="upper right")
    path = Path(path)
    figure.savefig(path, format="png", dpi=100)
    return path
