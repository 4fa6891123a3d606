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
3. folds it into the Calibration row of (accelerator, strategy, job kind) under the rules of
   :func:`scheduler.cost.calibration.update` (enough step reports, weight by run length, outliers
   rejected, each move bounded; a row not there yet starts from the prior η), and notes on the
   job's events what became of it: old → new η, or why η was left alone, with the numbers.

The row's ``observations`` column carries the estimate's weight, in step reports. The cycle reads
the table into its snapshot (:func:`scheduler.db.repo.calibration_table`), so the next job on
that accelerator is planned with the measured η. Admins list the rows and reset them
(:func:`list_calibration`, :func:`reset_calibration`): a reset deletes rows, and the cost model
falls back to its prior.
"""

from __future__ import annotations

import logging
import statistics
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from scheduler.cost.calibration import (
    EfficiencyEstimate,
    Folded,
    StepObservation,
    run_weight,
    update,
)
from scheduler.cost.hardware import lookup
from scheduler.cost.time import efficiency
from scheduler.db import repo
from scheduler.db.models import Calibration, Job, as_utc, utcnow
from scheduler.db.session import Database

log = logging.getLogger("corral.calibration")

MAX_SAMPLES = 50
"""Step times kept per attempt: enough for a stable median, small enough for one JSON cell."""

MIN_SAMPLES = 2
"""Reports an attempt needs, after its first, before its median is shown as its measured step
time (``corral show``, the prediction-error metric). Recalibrating η asks for more:
:data:`scheduler.cost.calibration.MIN_STEP_REPORTS`."""


def record_step_time(job: Job, value: float | None) -> None:
    """Keep one reported step time of the current attempt (the newest ``MAX_SAMPLES``)."""
    if value is None or value <= 0:
        return
    samples = [*(job.step_times_s or []), float(value)][-MAX_SAMPLES:]
    job.step_times_s = samples  # a new list, so the JSON column sees the change


def measured_step_time(samples: list[float] | None) -> float | None:
    """Median step time of an attempt without its first report; None if too few."""
    usable = (samples or [])[1:]
    return statistics.median(usable) if len(usable) >= MIN_SAMPLES else None


def prior_efficiency(accelerator: str, strategy: str) -> float | None:
    """η the cost model plans with when no row is measured; None for an unknown accelerator."""
    try:
        family = lookup(accelerator).family
    except KeyError:
        return None
    return efficiency(family, strategy)


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
    """Fold the ending attempt's measured step time into η; return the new η, if it moved."""
    prediction = job.prediction
    samples = (job.step_times_s or [])[1:]  # the first report is start-up
    if not prediction or not samples or prediction.get("calibrated_attempt") == job.attempts:
        return None
    # Once per attempt: the samples stay for `corral show` until the next attempt starts.
    job.prediction = {**prediction, "calibrated_attempt": job.attempts}
    seen = StepObservation(
        (str(prediction["accelerator"]), str(prediction["strategy"])),
        float(prediction["step_time_s"]), float(prediction["compute_s"]),
        float(prediction["efficiency"]), statistics.median(samples), len(samples))
    if run_weight(seen.step_reports) == 0:
        # Says nothing: leave the row unlocked (and uncreated), only say why on the job.
        unmeasured = EfficiencyEstimate(seen.efficiency_used, 0)
        _note(session, job, seen, unmeasured,
              update(unmeasured, seen.observed_efficiency(), seen.step_reports))
        return None
    row = _locked_row(session, (*seen.key, job.kind))
    current = EfficiencyEstimate(row.efficiency, row.observations) \
        if row.observations > 0 and row.efficiency > 0 \
        else EfficiencyEstimate(prior_efficiency(*seen.key) or seen.efficiency_used, 0)
    folded = update(current, seen.observed_efficiency(), seen.step_reports)
    if folded.moved:
        row.efficiency = folded.estimate.efficiency
        row.observations = folded.estimate.weight
        row.updated_at = utcnow()
        session.flush()
    _note(session, job, seen, current, folded)
    return folded.estimate.efficiency if folded.moved else None


def _note(session: Any, job: Job, seen: StepObservation, current: EfficiencyEstimate,
          folded: Folded) -> None:
    """Say on the job's events what its measurement did to η, with the numbers."""
    outcome = (f"η {current.efficiency:.3g} → {folded.estimate.efficiency:.3g}, weight "
               f"{folded.estimate.weight} step reports" if folded.moved
               else f"η {current.efficiency:.3g} left alone")
    repo.note(session, job, (
        f"calibration {seen.key[0]}/{seen.key[1]}: measured {seen.measured_step_s * 1e3:.3g} "
        f"ms/step over {seen.step_reports} report(s), predicted "
        f"{seen.predicted_step_s * 1e3:.3g} ms; {folded.reason}; {outcome}"),
        {"verdict": folded.verdict.value, "measured_step_time_s": seen.measured_step_s,
         "step_reports": seen.step_reports, "observed_efficiency": seen.observed_efficiency(),
         "previous_efficiency": current.efficiency, "previous_weight": current.weight,
         "efficiency": folded.estimate.efficiency, "weight": folded.estimate.weight})


# --- what admins see and reset ----------------------------------------------------------------


def list_calibration(db: Database) -> list[dict[str, Any]]:
    """Every calibration row, beside the prior η the cost model would use without it."""
    with db.read() as session:
        # Sorted here, not by the database: collations order mixed case differently.
        rows = sorted(session.scalars(select(Calibration)),
                      key=lambda row: (row.accelerator, row.strategy, row.kind))
        return [{"accelerator": row.accelerator, "strategy": row.strategy, "kind": row.kind,
                 "efficiency": row.efficiency, "weight": row.observations,
                 "prior_efficiency": prior_efficiency(row.accelerator, row.strategy),
                 "updated_at": as_utc(row.updated_at).isoformat()} for row in rows]


def reset_calibration(db: Database, accelerator: str | None = None, strategy: str | None = None,
                      kind: str | None = None, by: str | None = None) -> int:
    """Delete the rows matching every filter given (all rows without one), in one transaction;
    plans fall back to the prior η. Returns how many rows went."""
    query = delete(Calibration)
    if accelerator is not None:  # case-insensitive, as quotas match accelerators
        query = query.where(func.lower(Calibration.accelerator) == accelerator.lower())
    if strategy is not None:
        query = query.where(Calibration.strategy == strategy)
    if kind is not None:
        query = query.where(Calibration.kind == kind)
    with db.write() as session:
        deleted: int = session.execute(query).rowcount or 0
    log.info("calibration reset by %s: %d row(s) deleted (accelerator=%s, strategy=%s, "
             "kind=%s); plans use the prior η there", by or "embedded admin", deleted,
             accelerator or "*", strategy or "*", kind or "*")
    return deleted
