"""Calibration moves η toward what real steps measured."""

from __future__ import annotations

import pytest

from scheduler.cost.calibration import MAX_WEIGHT, EfficiencyEstimate, observed_efficiency, update


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
