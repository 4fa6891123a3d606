"""Recalibrate the cost model's efficiency η from what finished attempts measured.

At admission the service stores on the job what the prediction was made of
(:meth:`scheduler.cost.planner.Candidate.calibration_inputs`: accelerator, strategy, η used,
compute seconds, step seconds). While the attempt runs, :func:`record_step_time` keeps the step
times rank 0 reports. When the attempt ends (whatever its outcome: a failed or preempted attempt
measured real steps too), :func:`recalibrate`:

1. takes the median reported step time, leaving out the attempt's first report (start-up:
   allocator warm-up, first collectives, lazy compilation);
2. splits it like the prediction: ``other = predicted step − predicted compute`` (communication,
   optimizer) is taken as predicted; the rest is compute, so ``η_observed = (compute · η_used) /
   (measured − other)`` (:func:`scheduler.cost.calibration.observed_efficiency`, since
   ``compute · η_used = FLOPs / peak``);
3. folds it into the Calibration row of (accelerator, strategy, job kind) as a running mean,
   and notes old → new η on the job's events.

The cycle reads the table into its snapshot (:func:`scheduler.db.repo.calibration_table`), so the
next job on that accelerator is planned with the measured η.
"""

from __future__ import annotations

import statistics
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from scheduler.cost.calibration import EfficiencyEstimate, StepObservation, update
from scheduler.db import repo
from scheduler.db.models import Calibration, Job, utcnow

MAX_SAMPLES = 50
"""Step times kept per attempt: enough for a stable median, small enough for one JSON cell."""

MIN_SAMPLES = 2
"""Reports an attempt needs, after its first, before it says anything about η."""


def record_step_time(job: Job, event: dict[str, Any]) -> None:
    """Keep one reported step time of the current attempt (the newest ``MAX_SAMPLES``)."""
    value = event.get("step_time_s")
    if not isinstance(value, int | float) or value <= 0:
        return
    samples = [*(job.step_times_s or []), float(value)][-MAX_SAMPLES:]
    job.step_times_s = samples  # a new list, so the JSON column sees the change


def measured_step_time(samples: list[float] | None) -> float | None:
    """Median step time of an attempt without its first report; None if too few."""
    usable = (samples or [])[1:]
    return statistics.median(usable) if len(usable) >= MIN_SAMPLES else None


def _locked_row(session: Any, key: tuple[str, str, str]) -> Calibration:
    """The Calibration row of ``key``, locked for this transaction; created empty if missing.

    Two schedulers may create the same row at once: the unique key refuses the second insert,
    inside a savepoint, and the second reads the first's row instead."""
    query = select(Calibration).where(
        Calibration.accelerator == key[0], Calibration.strategy == key[1],
        Calibration.kind == key[2]).with_for_update()
    row = session.scalar(query)
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = Calibration(accelerator=key[0], strategy=key[1], kind=key[2], efficiency=0.0,
                              observations=0)
            session.add(row)
    except IntegrityError:
        row = session.scalar(query)
    return row


def recalibrate(session: Any, job: Job) -> float | None:
    """Fold the ending attempt's measured step time into η; return the new η, if any."""
    prediction = job.prediction
    measured = measured_step_time(job.step_times_s)
    if not prediction or measured is None or prediction.get("calibrated_attempt") == job.attempts:
        return None
    # Once per attempt: the samples stay for `corral show` until the next attempt starts.
    job.prediction = {**prediction, "calibrated_attempt": job.attempts}
    used = float(prediction["efficiency"])
    observed = StepObservation(
        (str(prediction["accelerator"]), str(prediction["strategy"])),
        float(prediction["step_time_s"]), float(prediction["compute_s"]), used, measured,
    ).observed_efficiency()
    key = (str(prediction["accelerator"]), str(prediction["strategy"]), job.kind)
    row = _locked_row(session, key)
    estimate = update(EfficiencyEstimate(row.efficiency, row.observations)
                      if row.observations else None, observed)
    row.efficiency = estimate.efficiency
    row.observations = estimate.observations
    row.updated_at = utcnow()
    session.flush()
    repo.note(session, job, (
        f"calibration {key[0]}/{key[1]}: measured {measured * 1e3:.3g} ms/step, predicted "
        f"{float(prediction['step_time_s']) * 1e3:.3g} ms; η {used:.3g} → "
        f"{estimate.efficiency:.3g} over {estimate.observations} run(s)"),
        {"measured_step_time_s": measured, "observed_efficiency": observed,
         "efficiency": estimate.efficiency, "observations": estimate.observations})
    return estimate.efficiency
