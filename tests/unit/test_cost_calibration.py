"""Calibration moves η toward what real steps measured, boundedly: enough steps, weight by run
length, outliers rejected, each move at most ×/÷ MAX_STEP_FACTOR."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest

from scheduler.cost.calibration import (
    FULL_WEIGHT_REPORTS,
    MAX_STEP_FACTOR,
    MAX_WEIGHT,
    MIN_STEP_REPORTS,
    OUTLIER_FACTOR,
    OUTLIER_MIN_WEIGHT,
    EfficiencyEstimate,
    StepObservation,
    Verdict,
    calibrate,
    observed_efficiency,
    run_weight,
    update,
)

FULL_RUN = FULL_WEIGHT_REPORTS
SHORT_RUN = MIN_STEP_REPORTS


def runs(count: int, reports: int = FULL_RUN) -> int:
    """The weight ``count`` runs of ``reports`` step reports leave behind."""
    return min(count * run_weight(reports), MAX_WEIGHT)


def test_observed_efficiency_inverts_the_time_model() -> None:
    # 1e12 FLOPs on a 1e13 FLOP/s device in 0.5 s of compute (+0.1 s other) → η = 0.2.
    assert observed_efficiency(1e12, 1e13, 0.6, 0.1) == pytest.approx(0.2)
    assert observed_efficiency(1e12, 1e13, 0.01, 0.1) == 1.0  # clamped: never above peak


def test_the_constants_keep_their_reasons() -> None:
    # The reasons in the module docstring hold only in this order.
    assert MIN_STEP_REPORTS > 2  # the old minimum let a 3-step job speak
    assert MIN_STEP_REPORTS <= FULL_WEIGHT_REPORTS <= OUTLIER_MIN_WEIGHT < MAX_WEIGHT
    assert 1 < MAX_STEP_FACTOR < OUTLIER_FACTOR


@dataclass(frozen=True)
class Case:
    name: str
    current: EfficiencyEstimate
    observed: float
    reports: int
    verdict: Verdict
    efficiency: float
    weight: int


CASES = [
    # The incident: η 0.7 over many runs, one short run on a loaded machine implied 0.024.
    Case("an outlier after 5 runs is rejected", EfficiencyEstimate(0.7, runs(5)), 0.024,
         FULL_RUN, Verdict.REJECTED, 0.7, runs(5)),
    Case("an outlier just past the factor is rejected", EfficiencyEstimate(0.7, runs(5)),
         0.7 / (OUTLIER_FACTOR * 1.01), FULL_RUN, Verdict.REJECTED, 0.7, runs(5)),
    Case("above the estimate too", EfficiencyEstimate(0.2, runs(5)), 0.2 * OUTLIER_FACTOR * 1.01,
         FULL_RUN, Verdict.REJECTED, 0.2, runs(5)),
    Case("just inside the factor is folded", EfficiencyEstimate(0.7, runs(5)),
         0.7 / (OUTLIER_FACTOR * 0.99), FULL_RUN, Verdict.FOLDED,
         (0.7 * runs(5) + 0.7 / (OUTLIER_FACTOR * 0.99) * FULL_RUN) / runs(6), runs(6)),
    Case("one short run moves a young η by at most the bound",
         EfficiencyEstimate(0.7, SHORT_RUN), 0.024, SHORT_RUN, Verdict.BOUNDED,
         0.7 / MAX_STEP_FACTOR, 2 * SHORT_RUN),
    Case("against a full run's η, a short one moves it by its share",
         EfficiencyEstimate(0.7, runs(1)), 0.024, SHORT_RUN, Verdict.FOLDED,
         (0.7 * FULL_RUN + 0.024 * SHORT_RUN) / (FULL_RUN + SHORT_RUN), FULL_RUN + SHORT_RUN),
    Case("the prior takes a first run whole within the bound", EfficiencyEstimate(0.5, 0), 0.4,
         SHORT_RUN, Verdict.FOLDED, 0.4, SHORT_RUN),
    Case("the prior moves at most the bound down", EfficiencyEstimate(0.4, 0), 0.015, FULL_RUN,
         Verdict.BOUNDED, 0.4 / MAX_STEP_FACTOR, FULL_RUN),
    Case("and at most the bound up", EfficiencyEstimate(0.3, 0), 0.9, FULL_RUN,
         Verdict.BOUNDED, 0.3 * MAX_STEP_FACTOR, FULL_RUN),
    Case("a short run weighs its reports", EfficiencyEstimate(0.5, 40), 0.4, SHORT_RUN,
         Verdict.FOLDED, (0.5 * 40 + 0.4 * SHORT_RUN) / (40 + SHORT_RUN), 40 + SHORT_RUN),
    Case("a full run weighs more", EfficiencyEstimate(0.5, 40), 0.4, FULL_RUN,
         Verdict.FOLDED, (0.5 * 40 + 0.4 * FULL_RUN) / (40 + FULL_RUN), 40 + FULL_RUN),
    Case("a longer run weighs no more than a full one", EfficiencyEstimate(0.5, 40), 0.4,
         5 * FULL_RUN, Verdict.FOLDED, (0.5 * 40 + 0.4 * FULL_RUN) / (40 + FULL_RUN),
         40 + FULL_RUN),
    Case("a full window forgets its oldest reports", EfficiencyEstimate(0.5, MAX_WEIGHT), 0.6,
         FULL_RUN, Verdict.FOLDED, (0.5 * (MAX_WEIGHT - FULL_RUN) + 0.6 * FULL_RUN) / MAX_WEIGHT,
         MAX_WEIGHT),
    Case("too few steps say nothing", EfficiencyEstimate(0.7, runs(20)), 0.6,
         MIN_STEP_REPORTS - 1, Verdict.TOO_FEW, 0.7, runs(20)),
    Case("the old minimum of 2 says nothing either, even to a prior", EfficiencyEstimate(0.7, 0),
         0.024, 2, Verdict.TOO_FEW, 0.7, 0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_update(case: Case) -> None:
    folded = update(case.current, case.observed, case.reports)
    assert folded.verdict is case.verdict, folded.reason
    assert folded.estimate.efficiency == pytest.approx(case.efficiency)
    assert folded.estimate.weight == case.weight
    if case.verdict in (Verdict.REJECTED, Verdict.TOO_FEW):
        assert folded.estimate == case.current


def test_the_reason_carries_the_numbers() -> None:
    rejected = update(EfficiencyEstimate(0.7, runs(5)), 0.024, FULL_RUN)
    assert "0.024" in rejected.reason and "0.7" in rejected.reason and "29.2×" in rejected.reason
    too_few = update(EfficiencyEstimate(0.7, 0), 0.5, 3)
    assert f"3 step report(s) after the first, {MIN_STEP_REPORTS} needed" == too_few.reason


def test_no_observation_moves_eta_more_than_the_bound() -> None:
    etas = [1e-4, 0.024, 0.3, 0.7, 1.0]
    weights = [0, SHORT_RUN, runs(1), OUTLIER_MIN_WEIGHT - 1, runs(5), MAX_WEIGHT]
    reports = [0, SHORT_RUN, FULL_RUN, 49]
    for eta, weight, observed, count in itertools.product(etas, weights, etas, reports):
        folded = update(EfficiencyEstimate(eta, weight), observed, count)
        moved = abs(math.log(folded.estimate.efficiency / eta))
        assert moved <= math.log(MAX_STEP_FACTOR) + 1e-12, (eta, weight, observed, count)
        assert 1e-4 <= folded.estimate.efficiency <= 1.0
        assert folded.estimate.weight <= max(weight, MAX_WEIGHT)


def test_a_steady_stream_converges_and_one_odd_run_barely_moves_it() -> None:
    estimate = EfficiencyEstimate(0.5, 0)
    for _ in range(200):
        estimate = update(estimate, 0.2, FULL_RUN).estimate
    assert estimate.efficiency == pytest.approx(0.2, abs=1e-5)
    assert estimate.weight == MAX_WEIGHT
    odd = update(estimate, 0.6, FULL_RUN).estimate  # 3×: inside the outlier factor
    assert odd.efficiency == pytest.approx(0.2 + 0.4 * FULL_RUN / MAX_WEIGHT, abs=1e-5)


def test_calibrate_keeps_one_estimate_per_accelerator_and_strategy_from_the_prior() -> None:
    # Predicted 0.3 s at η 0.5: compute 0.2 s (0.1 s at peak) + 0.1 s other. A DDP step measured
    # at 0.3 s implies η 0.5, one at 0.5 s η 0.25; a TP step at 0.6 s η 0.2.
    def seen(strategy: str, measured_s: float) -> StepObservation:
        return StepObservation(("cpu", strategy), 0.3, 0.2, 0.5, measured_s)

    runs_seen = [seen("ddp", 0.3), seen("tp", 0.6), seen("ddp", 0.5)]
    estimates = calibrate(runs_seen)
    assert estimates[("cpu", "ddp")].efficiency == pytest.approx((0.5 + 0.25) / 2)
    assert estimates[("cpu", "ddp")].weight == 2 * FULL_RUN
    # η 0.2 is 2.5× below the prior 0.5 it was predicted with: one run moves it 1.5× only.
    assert estimates[("cpu", "tp")].efficiency == pytest.approx(0.5 / MAX_STEP_FACTOR)
    # An existing estimate is carried on, not restarted, and the input is left alone.
    start = {("cpu", "tp"): EfficiencyEstimate(0.3, FULL_RUN)}
    assert calibrate(runs_seen[1:2], start)[("cpu", "tp")].efficiency == pytest.approx(0.25)
    assert start[("cpu", "tp")] == EfficiencyEstimate(0.3, FULL_RUN)


@pytest.mark.parametrize(("efficiency", "weight"), [(0.0, 5), (1.2, 5), (0.5, -1)])
def test_an_estimate_refuses_what_no_measurement_can_give(efficiency: float, weight: int) -> None:
    with pytest.raises(ValueError, match="needs 0 < η ≤ 1 and weight ≥ 0"):
        EfficiencyEstimate(efficiency, weight)
