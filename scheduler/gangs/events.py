"""Progress events of a gang, typed: what a backend returns from ``Backend.events``.

Rank 0 writes one JSON object a line (:func:`scheduler.gangs.protocol.append_progress`); the
ranks run a tenant's code, so a line may say anything. :func:`parse_event` turns a line into one
of the dataclasses below or into None, checking every field for its type and range: a field
that is not what the protocol says becomes None, never a value the database would refuse (a
NaN, a string where a count belongs) or a size it should not store.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.domain.spec_limits import MAX_PATH_CHARS
from scheduler.gangs.protocol import parse_progress, read_progress

MAX_DETAIL_CHARS = 16_384
"""Largest JSON an event's detail may take in the events table; a bigger one is dropped."""
MAX_METRICS = 8


@dataclass(frozen=True, slots=True)
class Start:
    """The ranks of an attempt started (at ``step``, of ``total_steps``)."""

    step: int | None
    total_steps: int | None
    attempt: int | None


@dataclass(frozen=True, slots=True)
class Step:
    step: int | None
    loss: float | None
    tokens_per_s: float | None
    step_time_s: float | None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A complete checkpoint at ``step``; ``on_sigterm`` when written to stop (preempted)."""

    step: int
    path: str
    on_sigterm: bool = False


@dataclass(frozen=True, slots=True)
class Eval:
    eval_loss: float | None


@dataclass(frozen=True, slots=True)
class Done:
    """Training finished; ``metrics`` are the ``eval_*`` figures, ``detail`` the whole event
    for the events table (None when too large or not plain JSON)."""

    eval_loss: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Compressed:
    """A compress job's before → after report (kept whole: it is only shown)."""

    report: dict[str, Any]
    detail: dict[str, Any] | None = None


ProgressEvent = Start | Step | Checkpoint | Eval | Done | Compressed


def count(raw: dict[str, Any], key: str) -> int | None:
    """A non-negative whole number a rank reported, or None for anything else."""
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and 0 <= value < 2**31 else None


def real(raw: dict[str, Any], key: str) -> float | None:
    """A finite number a rank reported, or None for anything else."""
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and abs(value) < 1e300 else None


def _detail(raw: dict[str, Any]) -> dict[str, Any] | None:
    detail = {k: v for k, v in raw.items() if k != "event"}
    try:
        text = json.dumps(detail, allow_nan=False)  # PostgreSQL's json refuses NaN
    except ValueError:
        return None
    return detail if len(text) <= MAX_DETAIL_CHARS else None


def parse_event(raw: dict[str, Any]) -> ProgressEvent | None:
    """The typed event of one progress line, or None for a kind the protocol does not have
    (or a checkpoint without a step and a path)."""
    kind = raw.get("event")
    if kind == "step":
        return Step(count(raw, "step"), real(raw, "loss"), real(raw, "tokens_per_s"),
                    real(raw, "step_time_s"))
    if kind == "start":
        return Start(count(raw, "step"), count(raw, "total_steps"), count(raw, "attempt"))
    if kind in ("checkpoint", "preempted"):
        step, path = count(raw, "step"), raw.get("path")
        if step is None or not isinstance(path, str) or not 0 < len(path) <= MAX_PATH_CHARS:
            return None
        return Checkpoint(step, path, on_sigterm=kind == "preempted")
    if kind == "eval":
        return Eval(real(raw, "eval_loss"))
    if kind == "done":
        metrics = {name: value for name in raw if isinstance(name, str)
                   and name.startswith("eval_") and len(name) <= 64
                   and (value := real(raw, name)) is not None}
        return Done(real(raw, "eval_loss"), dict(list(metrics.items())[:MAX_METRICS]),
                    _detail(raw))
    if kind == "compress":
        return Compressed(raw, _detail(raw))
    return None


def parse_events(raws: list[dict[str, Any]]) -> list[ProgressEvent]:
    """The typed events of some progress lines, unknown ones left out."""
    return [event for raw in raws if (event := parse_event(raw)) is not None]


def read_events(path: Path, cursor: int) -> tuple[list[ProgressEvent], int]:
    """:meth:`Backend.events` of a backend whose gang's progress file is on this machine: the
    typed events after byte ``cursor`` (:func:`read_progress`'s bounds) and the next cursor."""
    raw, after = read_progress(path, cursor)
    return parse_events(raw), after


def events_in(data: bytes, cursor: int) -> tuple[list[ProgressEvent], int]:
    """:meth:`Backend.events` of a backend that fetches the progress stream's bytes from
    ``cursor`` itself (a remote engine): the typed events and the next cursor."""
    raw, after = parse_progress(data, cursor)
    return parse_events(raw), after
