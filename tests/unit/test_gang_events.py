"""A progress line becomes a typed event with every field checked, or nothing."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.gangs.events import (
    Checkpoint,
    Compressed,
    Done,
    Eval,
    Start,
    Step,
    parse_event,
)

CASES: dict[str, tuple[dict[str, Any], object]] = {
    "a step": ({"event": "step", "step": 3, "loss": 2.5, "tokens_per_s": 100,
                "step_time_s": 0.1, "lr": 1e-3}, Step(3, 2.5, 100.0, 0.1)),
    "a step of strings and NaN": ({"event": "step", "step": "3", "loss": float("nan"),
                                   "tokens_per_s": True, "step_time_s": 1e400},
                                  Step(None, None, None, None)),
    "a negative or huge step": ({"event": "step", "step": -1}, Step(None, None, None, None)),
    "a start": ({"event": "start", "step": 0, "total_steps": 10, "attempt": 2},
                Start(0, 10, 2)),
    "a checkpoint": ({"event": "checkpoint", "step": 2, "path": "/runs/job-1/c"},
                     Checkpoint(2, "/runs/job-1/c")),
    "a checkpoint on SIGTERM": ({"event": "preempted", "step": 2, "path": "/runs/job-1/c"},
                                Checkpoint(2, "/runs/job-1/c", on_sigterm=True)),
    "a checkpoint without a path": ({"event": "checkpoint", "step": 2}, None),
    "a checkpoint with a 1 MB path": ({"event": "checkpoint", "step": 2, "path": "x" * 10**6},
                                      None),
    "an eval": ({"event": "eval", "eval_loss": 0.5}, Eval(0.5)),
    "an unknown kind": ({"event": "rm -rf"}, None),
    "no kind": ({"step": 1}, None),
}


@pytest.mark.parametrize("name", CASES)
def test_progress_lines_parse_into_checked_events(name: str) -> None:
    raw, expected = CASES[name]
    assert parse_event(raw) == expected


def test_done_keeps_eight_eval_metrics_and_drops_a_detail_too_big_to_store() -> None:
    raw = {"event": "done", "eval_loss": 0.5, "note": "x" * 20_000,
           **{f"eval_m{i}": float(i) for i in range(20)}, "eval_bad": "high"}
    event = parse_event(raw)
    assert isinstance(event, Done) and event.eval_loss == 0.5
    assert len(event.metrics) == 8 and "eval_bad" not in event.metrics
    assert event.detail is None


def test_a_compress_report_is_kept_whole_but_its_nan_detail_is_not_stored() -> None:
    event = parse_event({"event": "compress", "method": "quantize", "x": float("nan")})
    assert isinstance(event, Compressed) and event.report["method"] == "quantize"
    assert event.detail is None
