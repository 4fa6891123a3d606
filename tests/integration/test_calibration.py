"""η recalibrated from the step times jobs report (enough of them, weighed by run length, outliers
rejected, each move bounded), and deadlines and budgets, on real databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.cost.calibration import (
    MAX_STEP_FACTOR,
    MAX_WEIGHT,
    MIN_STEP_REPORTS,
    OUTLIER_FACTOR,
)
from scheduler.db import repo
from scheduler.db.models import Calibration
from scheduler.domain.errors import UnschedulableError
from scheduler.gangs.backend import GangPhase
from scheduler.gangs.protocol import append_progress
from scheduler.planning import plan_spec
from scheduler.service import SchedulerService
from tests.builders import make_spec
from workers.backends.fake import FakeBackend

LLAMA_1B = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
            "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 8,
            "intermediate_size": 5632, "tie_word_embeddings": False}

H100_JOB = dict(resources__pool="h100", resources__devices=8, batch__global_batch=32,
                data__seq_len=2048, precision="bf16", work__steps=1000,
                parallelism={"strategy": "ddp"})  # the strategy the calibration rows name


LLAMA_SMALL = dict(LLAMA_1B, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=4, intermediate_size=688, vocab_size=4096)
ONE_CPU_JOB = dict(resources__pool="cpu", resources__devices=1, batch__global_batch=4,
                   data__seq_len=256, work__steps=1000)


def _admit(service: SchedulerService, job: dict | None = None,
           model: dict | None = None) -> int:
    """Submit a job and admit and launch it; its id."""
    job_id = service.submit(make_spec(**(job or H100_JOB)), model or LLAMA_1B)
    service.tick()
    return job_id


def _end_reporting(service: SchedulerService, fake_backend: FakeBackend, job_id: int,
                   step_times: list[float], outcome: GangPhase = GangPhase.SUCCEEDED) -> None:
    """Let the job's rank 0 report ``step_times`` (the first is start-up), then end it."""
    progress = Path(service.describe(job_id)["run_dir"]) / "progress.jsonl"
    append_progress(progress, "start", step=0, total_steps=1000, attempt=1)
    for index, seconds in enumerate(step_times):
        append_progress(progress, "step", step=1 + 10 * index, loss=3.0, tokens_per_s=1.0,
                        step_time_s=seconds)
    fake_backend.finish(job_id, outcome, 0 if outcome is GangPhase.SUCCEEDED else 1)
    service.tick()


def _steps(startup_s: float, step_s: float, reports: int = MIN_STEP_REPORTS + 1) -> list[float]:
    """A start-up report, then ``reports`` steps of ``step_s``: just enough to say something."""
    return [startup_s, *([step_s] * reports)]


def _prediction(service: SchedulerService, job_id: int) -> dict[str, float]:
    with service.db.read() as session:
        prediction = repo.get_job(session, job_id).prediction
    assert prediction is not None
    return prediction


def _implied(prediction: dict[str, float], measured_s: float) -> float:
    """η_observed = compute · η_used / (measured − other): the README's equation."""
    other_s = prediction["step_time_s"] - prediction["compute_s"]
    return prediction["compute_s"] * prediction["efficiency"] / (measured_s - other_s)


def _rows(service: SchedulerService) -> list[Calibration]:
    with service.db.read() as session:
        rows = list(session.scalars(select(Calibration)))
        session.expunge_all()
    return rows


def _calibration_events(service: SchedulerService, job_id: int) -> list[dict]:
    return [e for e in service.describe(job_id)["events"]
            if e["reason"].startswith("calibration ")]


def test_a_finished_job_recalibrates_eta_and_the_next_plan_predicts_what_it_measured(
        service: SchedulerService, fake_backend: FakeBackend) -> None:
    job_id = _admit(service)
    prediction = _prediction(service, job_id)
    measured_s = 1.2 * prediction["step_time_s"]  # within the bound of one move
    # the first report (start-up) is left out; the median of the rest is the measured step
    _end_reporting(service, fake_backend, job_id,
                   [30.0, measured_s * 0.97, measured_s, measured_s * 1.03, measured_s,
                    measured_s, measured_s * 0.99])
    (row,) = _rows(service)
    assert (row.accelerator, row.strategy, row.kind) == ("H100-SXM", prediction["strategy"],
                                                         "pretrain")
    assert row.observations == 6  # the weight: six step reports after the start-up one
    assert row.efficiency == pytest.approx(_implied(prediction, measured_s))
    assert row.efficiency != pytest.approx(prediction["efficiency"])
    (event,) = _calibration_events(service, job_id)
    assert event["reason"].startswith(f"calibration H100-SXM/{prediction['strategy']}: "
                                      f"measured {measured_s * 1e3:.3g} ms/step over 6 report(s)")
    assert event["detail"]["verdict"] == "folded"

    # planning the same job again uses the measured η: the same plan now predicts what ran
    report = plan_spec(service.db, make_spec(**H100_JOB), LLAMA_1B)
    same = [c for c in report.ranked + report.rejected
            if c.pool == "h100" and c.plan.strategy.value == prediction["strategy"]
            and c.efficiency == pytest.approx(row.efficiency)]
    assert same, "no candidate was planned with the calibrated efficiency"
    assert any(c.step_time_s == pytest.approx(measured_s, rel=1e-9) for c in same)


def test_eta_is_a_weighted_mean_over_jobs_and_failed_attempts_count(
        service: SchedulerService, fake_backend: FakeBackend) -> None:
    # one device: every job runs the same (single) strategy, so both land in one row
    first_job = _admit(service, ONE_CPU_JOB, LLAMA_SMALL)
    first_s = 1.1 * _prediction(service, first_job)["step_time_s"]
    _end_reporting(service, fake_backend, first_job, _steps(9.0, first_s))
    first = _rows(service)[0].efficiency
    # the second reports twice as many steps: its η weighs twice as much
    second_job = _admit(service, ONE_CPU_JOB, LLAMA_SMALL)
    prediction = _prediction(service, second_job)
    assert prediction["efficiency"] == pytest.approx(first)  # planned with the first's η
    second_s = 1.3 * prediction["step_time_s"]
    _end_reporting(service, fake_backend, second_job,
                   _steps(9.0, second_s, 2 * (MIN_STEP_REPORTS + 1)), GangPhase.FAILED)
    (row,) = _rows(service)
    assert (row.accelerator, row.strategy) == ("cpu", "single")
    assert row.observations == 3 * (MIN_STEP_REPORTS + 1)
    assert row.efficiency == pytest.approx((first + 2 * _implied(prediction, second_s)) / 3)


def test_too_few_reports_leave_eta_alone_and_say_so(service: SchedulerService,
                                                    fake_backend: FakeBackend) -> None:
    job_id = _admit(service)
    slow_s = 30 * _prediction(service, job_id)["step_time_s"]
    # one report short of the minimum: the 3-step job of the incident said as much as this
    _end_reporting(service, fake_backend, job_id, _steps(9.0, slow_s, MIN_STEP_REPORTS - 1))
    assert _rows(service) == []
    (event,) = _calibration_events(service, job_id)
    assert f"{MIN_STEP_REPORTS - 1} step report(s) after the first, {MIN_STEP_REPORTS} needed" \
        in event["reason"]
    assert event["detail"]["verdict"] == "too_few"


def test_a_fresh_key_moves_from_the_prior_by_at_most_the_bound(
        service: SchedulerService, fake_backend: FakeBackend) -> None:
    job_id = _admit(service)
    prediction = _prediction(service, job_id)
    prior = prediction["efficiency"]
    # 30× slower than predicted: a loaded machine, not the hardware
    _end_reporting(service, fake_backend, job_id, _steps(9.0, 30 * prediction["step_time_s"]))
    (row,) = _rows(service)
    assert row.efficiency == pytest.approx(prior / MAX_STEP_FACTOR)
    (event,) = _calibration_events(service, job_id)
    assert event["detail"]["verdict"] == "bounded"
    assert event["detail"]["observed_efficiency"] < prior / OUTLIER_FACTOR


def test_an_outlier_against_a_settled_eta_is_rejected_and_recorded(
        service: SchedulerService, fake_backend: FakeBackend) -> None:
    prior = _prediction(service, _admit(service))["efficiency"]
    with service.db.write() as session:
        session.add(Calibration(accelerator="H100-SXM", strategy="ddp", kind="pretrain",
                                efficiency=prior, observations=MAX_WEIGHT))
    job_id = _admit(service)
    prediction = _prediction(service, job_id)
    assert (prediction["strategy"], prediction["efficiency"]) == ("ddp", pytest.approx(prior))
    _end_reporting(service, fake_backend, job_id, _steps(9.0, 30 * prediction["step_time_s"]))
    (row,) = _rows(service)
    assert (row.efficiency, row.observations) == (pytest.approx(prior), MAX_WEIGHT)
    (event,) = _calibration_events(service, job_id)
    observed = _implied(prediction, 30 * prediction["step_time_s"])
    assert event["detail"] == pytest.approx({
        "verdict": "rejected", "measured_step_time_s": 30 * prediction["step_time_s"],
        "step_reports": MIN_STEP_REPORTS + 1, "observed_efficiency": observed,
        "previous_efficiency": prior, "previous_weight": MAX_WEIGHT, "efficiency": prior,
        "weight": MAX_WEIGHT})
    assert f"observed η {observed:.3g} is {prior / observed:.3g}× off the estimate " \
           f"{prior:.3g} (weight {MAX_WEIGHT}): more than 4×, rejected as an outlier" \
           in event["reason"]
    assert event["reason"].endswith(f"η {prior:.3g} left alone")


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
