"""Calibration moves η toward what real steps measured."""

from __future__ import annotations

import pytest

from scheduler.cost.calibration import (
    MAX_WEIGHT,
    EfficiencyEstimate,
    StepObservation,
    calibrate,
    observed_efficiency,
    update,
)


def test_observed_efficiency_inverts_the_time_model() -> None:
    # 1e12 FLOPs on a 1e13 FLOP/s device in 0.5 s of compute (+0.1 s other) → η = 0.2.
    assert observed_efficiency(1e12, 1e13, 0.6, 0.1) == pytest.approx(0.2)
    assert observed_efficiency(1e12, 1e13, 0.01, 0.1) == 1.0  # clamped: never above peak


def test_running_mean_converges_and_forgets_slowly() -> None:
    estimate = update(None, 0.5)
    assert estimate == EfficiencyEstimate(0.5, 1)
    for _ in range(200):
        estimate = update(estimate, 0.2)
    assert estimate.efficiency == pytest.approx(0.2, abs=1e-3)
    moved = update(estimate, 1.0)
    assert moved.efficiency == pytest.approx(0.2 + 0.8 / MAX_WEIGHT, abs=1e-3)


def test_calibrate_keeps_one_running_mean_per_accelerator_and_strategy() -> None:
    # Predicted 0.3 s at η 0.5: compute 0.2 s (0.1 s at peak) + 0.1 s other. A DDP step measured
    # at 0.3 s implies η 0.5, one at 0.5 s η 0.25; a TP step at 0.6 s η 0.2.
    def seen(strategy: str, measured_s: float) -> StepObservation:
        return StepObservation(("cpu", strategy), 0.3, 0.2, 0.5, measured_s)

    runs = [seen("ddp", 0.3), seen("tp", 0.6), seen("ddp", 0.5)]
    estimates = calibrate(runs)
    assert estimates[("cpu", "ddp")].efficiency == pytest.approx((0.5 + 0.25) / 2)
    assert estimates[("cpu", "ddp")].observations == 2
    assert estimates[("cpu", "tp")].efficiency == pytest.approx(0.2)
    # An existing estimate is carried on, not restarted, and the input is left alone.
    start = {("cpu", "tp"): EfficiencyEstimate(0.4, 1)}
    assert calibrate(runs[1:2], start)[("cpu", "tp")].efficiency == pytest.approx(0.3)
    assert start[("cpu", "tp")] == EfficiencyEstimate(0.4, 1)
