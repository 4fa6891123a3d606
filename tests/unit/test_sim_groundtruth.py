"""The simulator's ground truth: the run-time law times a seeded, mean-one lognormal error."""

from __future__ import annotations

import math
import statistics

import pytest

from scheduler.sim.groundtruth import GroundTruth, RunOutcome
from scheduler.sim.workload import PoolSpec, TraceJob

POOL = PoolSpec("a100", "A100-80G", 4, 8)
FAST = PoolSpec("h100", "H100-SXM", 4, 8)


def job(job_id: int = 1, **fields: object) -> TraceJob:
    values: dict[str, object] = {"devices": (1, 16), "work_s": 3200.0, "speeds": {"H100-SXM": 2.0}}
    values.update(fields)
    return TraceJob.build(job_id, 0.0, "t", **values)  # type: ignore[arg-type]


def test_without_noise_the_truth_is_the_run_time_law() -> None:
    truth = GroundTruth()
    assert truth.run_time_s(job(), POOL, 8) == pytest.approx(400.0)
    assert truth.run_time_s(job(), FAST, 8) == pytest.approx(200.0)
    assert truth.run_time_s(job(scaling_exponent=0.5), POOL, 16) == pytest.approx(800.0)


def test_the_error_is_seeded_and_independent_of_question_order() -> None:
    truth = GroundTruth(job_sigma=0.3, shape_sigma=0.1, seed=5)
    first = [truth.error_factor(i, "a100", 8) for i in range(50)]
    again = [GroundTruth(0.3, 0.1, 5).error_factor(i, "a100", 8) for i in reversed(range(50))]
    assert first == list(reversed(again))
    assert first != [GroundTruth(0.3, 0.1, 6).error_factor(i, "a100", 8) for i in range(50)]


def test_the_job_error_is_shared_across_shapes_and_the_shape_error_is_not() -> None:
    per_job = GroundTruth(job_sigma=0.5, seed=1)
    assert per_job.error_factor(3, "a100", 8) == per_job.error_factor(3, "h100", 4)
    per_shape = GroundTruth(shape_sigma=0.5, seed=1)
    assert per_shape.error_factor(3, "a100", 8) != per_shape.error_factor(3, "h100", 4)


@pytest.mark.parametrize("sigma", [0.1, 0.5])
def test_the_error_is_lognormal_with_mean_one(sigma: float) -> None:
    truth = GroundTruth(job_sigma=sigma, seed=11)
    factors = [truth.error_factor(i, "a100", 8) for i in range(4000)]
    logs = [math.log(f) for f in factors]
    assert statistics.fmean(factors) == pytest.approx(1.0, abs=4 * sigma / math.sqrt(4000) + 0.01)
    assert statistics.fmean(logs) == pytest.approx(-(sigma**2) / 2, abs=4 * sigma / math.sqrt(4000))
    assert statistics.stdev(logs) == pytest.approx(sigma, rel=0.05)
    assert all(f > 0 for f in factors)


def test_an_injected_failure_strikes_the_first_attempt_only() -> None:
    truth = GroundTruth()
    failing = job(fails_after_s=100.0)
    assert truth.outcome(failing, POOL, 8) == RunOutcome(100.0, failed=True)
    retry = truth.outcome(failing, POOL, 8, attempt=2)
    assert retry.run_s == pytest.approx(400.0) and not retry.failed
    # Finishing strictly before the failure point is a success.
    assert truth.outcome(job(fails_after_s=500.0), POOL, 8).failed is False
    assert truth.outcome(job(fails_after_s=400.0), POOL, 8).failed is True
    # A resumed attempt has only the remaining work to do.
    assert truth.outcome(failing, POOL, 8, remaining_fraction=0.2).run_s == pytest.approx(80.0)


def test_shapes_outside_the_job_are_refused() -> None:
    with pytest.raises(ValueError, match="runs on 1..16 devices, not 32"):
        GroundTruth().run_time_s(job(), POOL, 32)
    with pytest.raises(ValueError, match="may run on H100-SXM, not A100-80G"):
        GroundTruth().run_time_s(job(accelerators=["H100-SXM"]), POOL, 8)
    with pytest.raises(ValueError, match="sigmas must be >= 0"):
        GroundTruth(job_sigma=-0.1)
