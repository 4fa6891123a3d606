"""η recalibrated from the step times jobs report, and deadlines and budgets, on real databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.db import repo
from scheduler.db.models import Calibration
from scheduler.domain.errors import UnschedulableError
from scheduler.planning import plan_spec
from scheduler.service import SchedulerService
from tests.builders import make_spec
from workers.backends.base import GangPhase
from workers.backends.fake import FakeBackend
from workers.protocol import append_progress

LLAMA_1B = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
            "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 8,
            "intermediate_size": 5632, "tie_word_embeddings": False}

H100_JOB = dict(resources__pool="h100", resources__devices=8, batch__global_batch=32,
                data__seq_len=2048, precision="bf16", work__steps=1000)


LLAMA_SMALL = dict(LLAMA_1B, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=4, intermediate_size=688, vocab_size=4096)
ONE_CPU_JOB = dict(resources__pool="cpu", resources__devices=1, batch__global_batch=4,
                   data__seq_len=256, work__steps=1000)


def _run_reporting(service: SchedulerService, fake_backend: FakeBackend, step_times: list[float],
                   outcome: GangPhase = GangPhase.SUCCEEDED, job: dict | None = None,
                   model: dict | None = None) -> int:
    """Submit, admit and launch a job, let its rank 0 report ``step_times``, end it."""
    job_id = service.submit(make_spec(**(job or H100_JOB)), model or LLAMA_1B)
    service.tick()
    run_dir = Path(service.describe(job_id)["run_dir"])
    progress = run_dir / "progress.jsonl"
    append_progress(progress, "start", step=0, total_steps=1000, attempt=1)
    for index, seconds in enumerate(step_times):
        append_progress(progress, "step", step=1 + 10 * index, loss=3.0, tokens_per_s=1.0,
                        step_time_s=seconds)
    fake_backend.finish(job_id, outcome, 0 if outcome is GangPhase.SUCCEEDED else 1)
    service.tick()
    return job_id


def _prediction(service: SchedulerService, job_id: int) -> dict[str, float]:
    with service.db.read() as session:
        prediction = repo.get_job(session, job_id).prediction
    assert prediction is not None
    return prediction


def _rows(service: SchedulerService) -> list[Calibration]:
    with service.db.read() as session:
        rows = list(session.scalars(select(Calibration)))
        session.expunge_all()
    return rows


def test_a_finished_job_recalibrates_eta_and_the_next_plan_predicts_what_it_measured(
        service: SchedulerService, fake_backend: FakeBackend) -> None:
    # the first report (start-up) is left out; the median of the rest is 3 s per step
    job_id = _run_reporting(service, fake_backend, [30.0, 2.9, 3.0, 3.1])
    prediction = _prediction(service, job_id)
    (row,) = _rows(service)
    assert (row.accelerator, row.strategy, row.kind) == ("H100-SXM", prediction["strategy"],
                                                         "pretrain")
    assert row.observations == 1
    other_s = prediction["step_time_s"] - prediction["compute_s"]
    expected = prediction["compute_s"] * prediction["efficiency"] / (3.0 - other_s)
    assert row.efficiency == pytest.approx(expected)
    assert row.efficiency != pytest.approx(prediction["efficiency"])
    notes = [e["reason"] for e in service.describe(job_id)["events"]]
    assert any(note.startswith("calibration H100-SXM/") and "measured 3e+03 ms" in note
               for note in notes)

    # planning the same job again uses the measured η: the same plan now predicts 3 s
    report = plan_spec(service.db, make_spec(**H100_JOB), LLAMA_1B)
    same = [c for c in report.ranked + report.rejected
            if c.pool == "h100" and c.plan.strategy.value == prediction["strategy"]
            and c.efficiency == pytest.approx(row.efficiency)]
    assert same, "no candidate was planned with the calibrated efficiency"
    assert any(c.step_time_s == pytest.approx(3.0, rel=1e-9) for c in same)


def test_eta_is_a_running_mean_over_jobs_and_failed_attempts_count(
        service: SchedulerService, fake_backend: FakeBackend) -> None:
    # one device: every job runs the same (single) strategy, so both land in one row
    _run_reporting(service, fake_backend, [9.0, 3.0, 3.0, 3.0], job=ONE_CPU_JOB,
                   model=LLAMA_SMALL)
    first = _rows(service)[0].efficiency
    second_job = _run_reporting(service, fake_backend, [9.0, 6.0, 6.0, 6.0], GangPhase.FAILED,
                                job=ONE_CPU_JOB, model=LLAMA_SMALL)
    (row,) = _rows(service)
    assert (row.accelerator, row.strategy) == ("cpu", "single")
    prediction = _prediction(service, second_job)
    other_s = prediction["step_time_s"] - prediction["compute_s"]
    observed = prediction["compute_s"] * prediction["efficiency"] / (6.0 - other_s)
    assert row.observations == 2
    assert row.efficiency == pytest.approx((first + observed) / 2)


def test_too_few_reports_leave_eta_alone(service: SchedulerService,
                                         fake_backend: FakeBackend) -> None:
    _run_reporting(service, fake_backend, [9.0, 3.0])  # one report after the start-up one
    assert _rows(service) == []


def test_a_deadline_no_plan_can_meet_is_refused_at_submit(service: SchedulerService) -> None:
    with pytest.raises(UnschedulableError, match="no plan meets the goal: the fastest .* "
                                                 "finishes in .* h"):
        service.submit(make_spec(**H100_JOB, deadline="1m"), LLAMA_1B)


def test_a_budget_below_the_cheapest_plan_is_refused_at_submit(
        service: SchedulerService) -> None:
    with pytest.raises(UnschedulableError, match=r"the cheapest .* costs \$"):
        service.submit(make_spec(**H100_JOB, budget_usd=0.01), LLAMA_1B)


def test_deadline_picks_the_cheapest_plan_in_time_and_budget_the_fastest_within_it(
        service: SchedulerService) -> None:
    free = plan_spec(service.db, make_spec(**dict(H100_JOB, resources__devices="auto")),
                     LLAMA_1B)
    fastest = min(free.ranked, key=lambda c: c.completion_s)
    cheapest = min(free.ranked, key=lambda c: c.price_usd)
    assert fastest.price_usd > cheapest.price_usd  # the choice is a real trade-off here
    # a deadline both meet: the cheaper one
    hours = max(fastest.completion_s, cheapest.completion_s) / 3600 * 1.01
    in_time = plan_spec(service.db, make_spec(**dict(H100_JOB, resources__devices="auto"),
                                              deadline=f"{hours:.4f}h"), LLAMA_1B)
    assert in_time.best is not None
    assert in_time.best.price_usd == pytest.approx(cheapest.price_usd)
    # a budget both fit: the faster one
    budget = max(fastest.price_usd, cheapest.price_usd) * 1.01
    within = plan_spec(service.db, make_spec(**dict(H100_JOB, resources__devices="auto"),
                                             budget_usd=budget), LLAMA_1B)
    assert within.best is not None
    assert within.best.completion_s == pytest.approx(fastest.completion_s)
    assert all(c.price_usd <= budget for c in within.ranked)
