"""Read and write traces and clusters as CSV with a header; see docs/simulator-trace-format.md.

A bad file raises :class:`~scheduler.sim.workload.TraceError` naming the file, the line (the
header is line 1) and the field, with the value it got and what is allowed.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from scheduler.sim.workload import ClusterSpec, PoolSpec, TraceError, TraceJob, TraceKind

T = TypeVar("T")

TRACE_COLUMNS = (
    "job_id",
    "name",
    "arrival_s",
    "tenant",
    "priority",
    "kind",
    "min_devices",
    "max_devices",
    "accelerators",
    "work_s",
    "scaling_exponent",
    "speeds",
    "deadline_s",
    "fails_after_s",
)
"""Every column of a trace file, in the order :func:`write_trace` writes them."""
TRACE_REQUIRED = frozenset(
    {"job_id", "arrival_s", "tenant", "min_devices", "max_devices", "work_s"}
)
CLUSTER_COLUMNS = ("pool", "accelerator", "nodes", "devices_per_node")
"""Every column of a cluster file; all are required."""


def _int(field: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise TraceError(field, f"expected an integer, got {text!r}") from None


def _float(field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(field, f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise TraceError(field, f"expected a finite number, got {text!r}")
    return value


def _optional_float(field: str, text: str) -> float | None:
    return None if text == "" else _float(field, text)


def _kind(text: str) -> TraceKind:
    try:
        return TraceKind(text or TraceKind.OTHER)
    except ValueError:
        allowed = ", ".join(kind.value for kind in TraceKind)
        raise TraceError("kind", f"expected one of {allowed}, got {text!r}") from None


def _accelerators(text: str) -> tuple[str, ...]:
    names = [name.strip() for name in text.split("|")] if text else []
    if "" in names:
        raise TraceError(
            "accelerators", f"empty name in {text!r}; write A|B, or nothing for any type"
        )
    return tuple(sorted(set(names)))


def _speeds(text: str) -> tuple[tuple[str, float], ...]:
    speeds: dict[str, float] = {}
    for item in text.split("|") if text else []:
        name, equals, number = item.partition("=")
        if not equals or not name.strip():
            raise TraceError("speeds", f"expected TYPE=SPEED items separated by '|', got {item!r}")
        if name.strip() in speeds:
            raise TraceError("speeds", f"{name.strip()} is listed twice")
        speeds[name.strip()] = _float("speeds", number.strip())
    return tuple(sorted(speeds.items()))


def _job_from_row(row: dict[str, str]) -> TraceJob:
    def get(column: str) -> str:
        value = row.get(column, "").strip()
        if column in TRACE_REQUIRED and value == "":
            raise TraceError(column, "is required, got an empty cell")
        return value

    return TraceJob(
        job_id=_int("job_id", get("job_id")),
        name=get("name"),
        arrival_s=_float("arrival_s", get("arrival_s")),
        tenant=get("tenant"),
        priority=_int("priority", get("priority") or "0"),
        kind=_kind(get("kind")),
        min_devices=_int("min_devices", get("min_devices")),
        max_devices=_int("max_devices", get("max_devices")),
        accelerators=_accelerators(get("accelerators")),
        work_s=_float("work_s", get("work_s")),
        scaling_exponent=_float("scaling_exponent", get("scaling_exponent") or "1"),
        speeds=_speeds(get("speeds")),
        deadline_s=_optional_float("deadline_s", get("deadline_s")),
        fails_after_s=_optional_float("fails_after_s", get("fails_after_s")),
    )


def _pool_from_row(row: dict[str, str]) -> PoolSpec:
    def get(column: str) -> str:
        value = row.get(column, "").strip()
        if value == "":
            raise TraceError(column, "is required, got an empty cell")
        return value

    return PoolSpec(
        name=get("pool"),
        accelerator=get("accelerator"),
        nodes=_int("nodes", get("nodes")),
        devices_per_node=_int("devices_per_node", get("devices_per_node")),
    )


def _parse(
    lines: Iterable[str],
    source: str,
    columns: Sequence[str],
    required: frozenset[str],
    make: Callable[[dict[str, str]], T],
) -> list[tuple[int, T]]:
    """``(line, item)`` per row of a CSV whose header names a subset of ``columns`` holding
    ``required``."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None or not any(cell.strip() for cell in header):
        raise TraceError(
            "header",
            f"the file is empty; the first line must name the columns: {','.join(columns)}",
            line=1,
            source=source,
        )
    header = [cell.strip() for cell in header]
    for cell in header:
        if cell not in columns:
            raise TraceError(
                cell or "header",
                f"unknown column {cell!r}; the columns are {', '.join(columns)}",
                line=1,
                source=source,
            )
        if header.count(cell) > 1:
            raise TraceError(cell, "column named twice", line=1, source=source)
    missing = [column for column in columns if column in required and column not in header]
    if missing:
        raise TraceError(
            missing[0],
            f"required column missing (missing: {', '.join(missing)})",
            line=1,
            source=source,
        )
    items: list[tuple[int, T]] = []
    for cells in reader:
        if not cells:
            continue  # blank line
        if len(cells) != len(header):
            raise TraceError(
                "row",
                f"expected {len(header)} cells as in the header, got {len(cells)}",
                line=reader.line_num,
                source=source,
            )
        try:
            items.append((reader.line_num, make(dict(zip(header, cells, strict=True)))))
        except TraceError as error:
            raise error.at(reader.line_num, source) from None
    return items


def parse_trace(text: str, source: str = "<trace>") -> tuple[TraceJob, ...]:
    """Jobs from CSV text; job ids must be distinct."""
    rows = _parse(
        io.StringIO(text, newline=""), source, TRACE_COLUMNS, TRACE_REQUIRED, _job_from_row
    )
    seen: set[int] = set()
    for line, job in rows:
        if job.job_id in seen:
            raise TraceError(
                "job_id", f"job id {job.job_id} appears twice", line=line, source=source
            )
        seen.add(job.job_id)
    return tuple(job for _, job in rows)


def parse_cluster(text: str, source: str = "<cluster>") -> ClusterSpec:
    """A cluster from CSV text: one row per pool."""
    rows = _parse(
        io.StringIO(text, newline=""),
        source,
        CLUSTER_COLUMNS,
        frozenset(CLUSTER_COLUMNS),
        _pool_from_row,
    )
    try:
        return ClusterSpec(tuple(pool for _, pool in rows))
    except TraceError as error:
        raise TraceError(error.field, error.reason, source=source) from None


def read_trace(path: Path | str) -> tuple[TraceJob, ...]:
    """Jobs from a trace CSV file, in file order."""
    return parse_trace(Path(path).read_text(encoding="utf-8"), str(path))


def read_cluster(path: Path | str) -> ClusterSpec:
    """A cluster from a cluster CSV file."""
    return parse_cluster(Path(path).read_text(encoding="utf-8"), str(path))


def _number(value: float | None) -> str:
    """Shortest text that reads back to the same float (``repr``); empty for None."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(value)


def format_trace(jobs: Iterable[TraceJob]) -> str:
    """CSV text of ``jobs`` with every column; :func:`parse_trace` reads it back unchanged."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRACE_COLUMNS)
    for job in jobs:
        writer.writerow(
            [
                job.job_id,
                job.name,
                _number(job.arrival_s),
                job.tenant,
                job.priority,
                job.kind.value,
                job.min_devices,
                job.max_devices,
                "|".join(job.accelerators),
                _number(job.work_s),
                _number(job.scaling_exponent),
                "|".join(f"{name}={_number(speed)}" for name, speed in job.speeds),
                _number(job.deadline_s),
                _number(job.fails_after_s),
            ]
        )
    return out.getvalue()


def format_cluster(cluster: ClusterSpec) -> str:
    """CSV text of ``cluster``, one row per pool."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CLUSTER_COLUMNS)
    for pool in cluster.pools:
        writer.writerow([pool.name, pool.accelerator, pool.nodes, pool.devices_per_node])
    return out.getvalue()


def write_trace(path: Path | str, jobs: Iterable[TraceJob]) -> None:
    Path(path).write_text(format_trace(jobs), encoding="utf-8")


def write_cluster(path: Path | str, cluster: ClusterSpec) -> None:
    Path(path).write_text(format_cluster(cluster), encoding="utf-8")
