"""The simulator's truth: how long a job really runs on a shape, apart from any prediction.

The planner predicts run times with the cost model; the simulator must not ask the planner what
happened, or a policy could never be caught trusting a wrong prediction. The truth is::

    true_run_s = work_s / (devices ** α × speed[accelerator]) × ε_job × ε_shape

``ε_job = exp(σ_job · z − σ_job² / 2)`` with ``z ~ N(0, 1)`` is the job's own misprediction (its
work was over- or under-estimated: the same on every shape); ``ε_shape`` (with ``σ_shape``) is
how this shape — pool and device count — deviates. Both are lognormal with mean 1 (the
``−σ²/2`` term), so the predictions are right on average and wrong case by case. Each factor is
drawn from its own generator seeded by ``(seed, job_id[, pool, devices])`` through SHA-512
(``random.Random`` seeded with a string), so it never depends on the order of the questions.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

from scheduler.sim.workload import TraceJob


class PoolLike(Protocol):
    """Anything with a pool name and its accelerator (PoolSpec, the cycle's PoolView)."""

    @property
    def name(self) -> str: ...

    @property
    def accelerator(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What one attempt does: runs ``run_s`` seconds, then succeeds or fails."""

    run_s: float
    failed: bool


def _lognormal_mean_one(key: str, sigma: float) -> float:
    if sigma == 0:
        return 1.0
    z = random.Random(key).gauss(0.0, 1.0)
    return math.exp(sigma * z - sigma * sigma / 2)


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """True run times with a seeded multiplicative error; ``sigma = 0`` is the noiseless truth."""

    job_sigma: float = 0.0
    shape_sigma: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.job_sigma < 0 or self.shape_sigma < 0:
            raise ValueError(
                f"sigmas must be >= 0, got job_sigma={self.job_sigma}, "
                f"shape_sigma={self.shape_sigma}"
            )

    def error_factor(self, job_id: int, pool: str, devices: int) -> float:
        """``ε_job × ε_shape`` for this job on this shape; 1.0 without noise."""
        job = _lognormal_mean_one(f"{self.seed}/job/{job_id}", self.job_sigma)
        shape = _lognormal_mean_one(
            f"{self.seed}/shape/{job_id}/{pool}/{devices}", self.shape_sigma
        )
        return job * shape

    def run_time_s(self, job: TraceJob, pool: PoolLike, devices: int) -> float:
        """Seconds ``job`` takes on ``devices`` devices of ``pool``, start to finish, unfailed.

        Raises ValueError if the job may not run on that shape.
        """
        ideal_s = job.run_time_s(pool.accelerator, devices)
        return ideal_s * self.error_factor(job.job_id, pool.name, devices)

    def outcome(
        self,
        job: TraceJob,
        pool: PoolLike,
        devices: int,
        *,
        attempt: int = 1,
        remaining_fraction: float = 1.0,
    ) -> RunOutcome:
        """One attempt, from its start, with ``remaining_fraction`` of the work left to do.

        The injected failure strikes the first attempt only (a retry after it succeeds): the
        attempt fails at ``fails_after_s`` seconds unless it finishes strictly earlier.
        """
        if not 0 < remaining_fraction <= 1:
            raise ValueError(f"remaining_fraction must be in (0, 1], got {remaining_fraction}")
        run_s = self.run_time_s(job, pool, devices) * remaining_fraction
        if attempt == 1 and job.fails_after_s is not None and job.fails_after_s <= run_s:
            return RunOutcome(job.fails_after_s, failed=True)
        return RunOutcome(run_s, failed=False)
