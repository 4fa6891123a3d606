"""Preemption under FSDP: SIGTERM → checkpoint → a later attempt continues the same run exactly.

Two runs of the same job (FSDP full-shard over two gloo ranks): one uninterrupted; one stopped
by SIGTERM to one of its ranks early on (as a backend's SIGTERM reaches every rank, possibly at
different moments) and resumed as attempt 2 from its newest checkpoint, as the scheduler's retry
does. The stopped run's losses, before and after the stop, must equal the
uninterrupted run's step by step (deterministic fp32 on the CPU: measured bitwise equal; the
test allows 1e-6).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.domain.plan import Plan, Strategy
from scheduler.domain.spec import parse_spec
from scheduler.gangs.protocol import EXIT_PREEMPTED, JobFile
from tests.integration.gang import (
    Gang,
    events,
    kill_leftovers,
    launch_ranks,
    losses,
    wait,
    wait_for_step,
)
from tests.integration.rank_programs.equivalence_ranks import SPEC
from workers.core.checkpoint_layout import (
    COMPLETE_MARKER,
    checkpoint_name,
    latest_checkpoint,
    staging_path,
)

pytestmark = pytest.mark.slow

WORLD_SIZE = 2
STEPS = 60
INTERVAL = 10
KEEP = 2
PLAN = Plan(strategy=Strategy.FSDP_FULL, world_size=WORLD_SIZE, dp_shard=WORLD_SIZE,
            micro_batch=2, grad_accum=2)


def _job_file(run_dir: Path, attempt: int = 1, resume_from: Path | None = None) -> Path:
    spec = parse_spec({**SPEC, "work": {"steps": STEPS, "eval_batches": 2},
                       "checkpoint": {"interval_steps": INTERVAL, "keep": KEEP}})
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"attempt-{attempt}.json"
    JobFile(job_id=1, attempt=attempt, spec=spec.model_dump(mode="json"), plan=PLAN.to_dict(),
            run_dir=str(run_dir),
            resume_from=str(resume_from) if resume_from else None).write(path)
    return path


@pytest.fixture
def gangs() -> Iterator[list[Gang]]:
    """Gangs the test launches; any rank still running at the end (a failed test) is killed."""
    launched: list[Gang] = []
    yield launched
    kill_leftovers(*launched)


def test_sigterm_checkpoint_and_resume_repeat_the_uninterrupted_fsdp_run(
        tmp_path: Path, gangs: list[Gang]) -> None:
    full_dir, stopped_dir, log = tmp_path / "full", tmp_path / "stopped", tmp_path / "ranks.log"
    # The reference and the run to stop train side by side.
    full = launch_ranks(_job_file(full_dir), log, WORLD_SIZE)
    stopped = launch_ranks(_job_file(stopped_dir), log, WORLD_SIZE)
    gangs += [full, stopped]
    wait_for_step(stopped_dir, 3, stopped)
    # Rank 1 only: rank 0 learns of it in the step's stop vote, and both checkpoint and stop.
    stopped[1].send_signal(signal.SIGTERM)
    assert wait(stopped, log) == [EXIT_PREEMPTED] * WORLD_SIZE, log.read_text()[-4000:]

    # Attempt 1 stopped with a complete checkpoint of the step it stopped at.
    first = events(stopped_dir, attempt=1)
    assert first[-1]["event"] == "preempted", log.read_text()[-4000:]
    stopped_at = first[-1]["step"]
    assert 3 <= stopped_at < STEPS
    checkpoints = stopped_dir / "checkpoints"
    assert latest_checkpoint(checkpoints) == checkpoints / checkpoint_name(stopped_at)
    assert not list(checkpoints.glob("*.tmp"))

    # A crash while writing a later checkpoint leaves a staging folder; it is never "latest".
    debris = staging_path(checkpoints, stopped_at + 1)
    debris.mkdir()
    (debris / COMPLETE_MARKER).write_text(json.dumps({"step": stopped_at + 1}))
    resume_from = latest_checkpoint(checkpoints)
    assert resume_from == checkpoints / checkpoint_name(stopped_at)

    # Attempt 2, as the scheduler's retry launches it, runs to the end.
    retry = launch_ranks(_job_file(stopped_dir, attempt=2, resume_from=resume_from), log,
                         WORLD_SIZE)
    gangs.append(retry)
    assert wait(retry, log) == [0] * WORLD_SIZE, log.read_text()[-4000:]
    assert wait(full, log) == [0] * WORLD_SIZE, log.read_text()[-4000:]

    reference = losses(events(full_dir, attempt=1))
    assert sorted(reference) == list(range(1, STEPS + 1))
    resumed = losses(events(stopped_dir, attempt=2))
    assert sorted(resumed) == list(range(stopped_at + 1, STEPS + 1))
    for step, loss in {**losses(first), **resumed}.items():
        assert loss == pytest.approx(reference[step], abs=1e-6), step
    # Both runs kept only the newest KEEP checkpoints, and the debris is gone.
    for run_dir in (full_dir, stopped_dir):
        assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == [
            checkpoint_name(step) for step in (STEPS - INTERVAL, STEPS)]
