"""Recalibrate the efficiency η from measured step times, one bounded step per attempt.

A prediction splits a step into compute (``flops / (peak · η)``) and everything else
(communication, optimizer, bubble). A measured step time ``t`` therefore implies

    η_observed = flops / (peak · (t − other_s))

The stored η is shared: every tenant's next plan on that (accelerator, strategy, job kind) is
costed with it. One attempt must not be able to swing it (a 3-step job on a loaded machine once
moved η from 0.7 to 0.024 and changed every tenant's plans), so an observation ``o`` from an
attempt with ``r`` step reports (after its start-up report) is folded into the estimate
``(η, W)`` under four rules, in this order:

1. Enough steps: with ``r < MIN_STEP_REPORTS`` the attempt says nothing (too few).
2. Weight by run length: ``w = min(r, FULL_WEIGHT_REPORTS)`` step reports, so a long run counts
   more than a short one, up to a cap.
3. Outliers: once the estimate rests on ``W ≥ OUTLIER_MIN_WEIGHT``, an observation more than
   ``OUTLIER_FACTOR`` times away from it, ``max(o/η, η/o) > OUTLIER_FACTOR``, is rejected and the
   estimate is left alone.
4. A weighted running mean over the last ``MAX_WEIGHT`` step reports, its move bounded in log
   space (η is a ratio: ×1.5 and ÷1.5 are the same size of step):

       W_kept = min(W, MAX_WEIGHT − w)
       η_mean = (η · W_kept + o · w) / (W_kept + w)
       η_new  = clamp(η_mean, η / MAX_STEP_FACTOR, η · MAX_STEP_FACTOR), then into [1e-4, 1]
       W_new  = W_kept + w

A key never measured starts from its prior η at ``W = 0``: the first observation is taken whole
but still moves η at most ``MAX_STEP_FACTOR`` from the prior. η stays in [``ETA_FLOOR``, 1]: a
step cannot beat the hardware's peak.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

MIN_STEP_REPORTS = 5
"""Step reports an attempt needs, after its start-up one, before it says anything about η.

Their median is the measured step time: with 5, up to 2 disturbed reports (a neighbour's burst,
a checkpoint write) cannot move it outside the undisturbed ones. Every job kind reports step 1
and every ``steps // 20``-th step (``workers.jobs.pretrain.trainer_config``), so a job shorter
than 20 steps reports each step: the incident's 3-step job had 2 reports after its first, the
old minimum; now a job needs at least 6 steps to speak, and then weighs little."""

FULL_WEIGHT_REPORTS = 20
"""Step reports at which an attempt reaches full weight; a longer one weighs no more.

A job of 21 steps or more reports at least 20 after its first (one every ``steps // 20``), so
every job but a very short one weighs in full, and a short one, whose steps are the most
disturbed by start-up, in proportion. The median's spread falls as 1/√r: 20 reports are 2×
steadier than 5. The cap keeps one tenant's job to 1/20 of a settled estimate
(``MAX_WEIGHT``)."""

MAX_WEIGHT = 20 * FULL_WEIGHT_REPORTS
"""Step reports after which older ones give way (a sliding window of 20 full-weight runs): a new
accelerator or software stack takes over within a few jobs, and one odd run cannot swing η."""

OUTLIER_FACTOR = 4.0
"""An observation this many times above or below the estimate is a disturbance, not the hardware.

η of one (accelerator, strategy, kind) varies with the model and the plan by well under 2×: the
cost-time bench's calibrated η stay within 1.25× of the prior (docs/benchmarks/cost-time.md);
a shared, loaded machine easily makes steps 4× slower (the incident: 29×)."""

OUTLIER_MIN_WEIGHT = 3 * FULL_WEIGHT_REPORTS
"""Weight (three full-weight runs) before observations far from the estimate are rejected.

A young estimate may itself be the wrong one (a prior off for new hardware): rejecting before
then would freeze it. By this weight a prior off by up to 1.5³ × 4 = 13.5× has been moved close
enough that the truth is no longer rejected."""

MAX_STEP_FACTOR = 1.5
"""Most one observation moves η, up (×) or down (÷): a real 2× change (a new driver) shows within
two runs, while a single bad run cannot cost another tenant's plan more than 1.5× its time."""

ETA_FLOOR = 1e-4


class Verdict(StrEnum):
    """What became of one observation."""

    FOLDED = "folded"
    BOUNDED = "bounded"
    """Folded, its move cut to ``MAX_STEP_FACTOR``."""
    REJECTED = "rejected"
    """Farther than ``OUTLIER_FACTOR`` from a settled estimate: not folded in."""
    TOO_FEW = "too_few"
    """Fewer than ``MIN_STEP_REPORTS`` step reports: says nothing."""


@dataclass(frozen=True, slots=True)
class EfficiencyEstimate:
    """η of one key and the weight of the measurements behind it."""

    efficiency: float
    weight: int
    """Step reports behind the estimate (at most ``MAX_WEIGHT``); 0: the prior, unmeasured."""

    def __post_init__(self) -> None:
        if not 0 < self.efficiency <= 1 or self.weight < 0:
            raise ValueError(f"an efficiency estimate needs 0 < η ≤ 1 and weight ≥ 0, not "
                             f"η {self.efficiency} at weight {self.weight}")


@dataclass(frozen=True, slots=True)
class Folded:
    """The estimate after one observation, and why it is what it is."""

    estimate: EfficiencyEstimate
    """The new estimate; the old one unless the verdict is FOLDED or BOUNDED."""
    verdict: Verdict
    reason: str

    @property
    def moved(self) -> bool:
        """Whether the observation was folded in (its move bounded or not)."""
        return self.verdict in (Verdict.FOLDED, Verdict.BOUNDED)


def observed_efficiency(
    flops_per_device: float, peak_flops: float, measured_step_s: float, other_s: float
) -> float:
    """η implied by one measured step, given the predicted non-compute seconds."""
    compute_s = max(measured_step_s - other_s, 1e-9)
    return min(1.0, max(ETA_FLOOR, flops_per_device / (peak_flops * compute_s)))


def run_weight(step_reports: int) -> int:
    """Weight of an attempt with ``step_reports`` (after its first): 0 below the minimum."""
    return 0 if step_reports < MIN_STEP_REPORTS else min(step_reports, FULL_WEIGHT_REPORTS)


def update(current: EfficiencyEstimate, observed: float, step_reports: int) -> Folded:
    """Fold one attempt's observed η into the estimate (the four rules of the module)."""
    eta, weight = current.efficiency, current.weight
    added = run_weight(step_reports)
    if added == 0:
        return Folded(current, Verdict.TOO_FEW,
                      f"{step_reports} step report(s) after the first, {MIN_STEP_REPORTS} needed")
    factor = max(observed / eta, eta / observed)
    if weight >= OUTLIER_MIN_WEIGHT and factor > OUTLIER_FACTOR:
        return Folded(current, Verdict.REJECTED,
                      f"observed η {observed:.3g} is {factor:.3g}× off the estimate {eta:.3g} "
                      f"(weight {weight}): more than {OUTLIER_FACTOR:g}×, rejected as an outlier")
    kept = min(weight, MAX_WEIGHT - added)
    mean = (eta * kept + observed * added) / (kept + added)
    bounded = min(max(mean, eta / MAX_STEP_FACTOR), eta * MAX_STEP_FACTOR)
    new = EfficiencyEstimate(min(1.0, max(ETA_FLOOR, bounded)), kept + added)
    if not math.isclose(bounded, mean):
        return Folded(new, Verdict.BOUNDED,
                      f"observed η {observed:.3g}; the mean {mean:.3g} is more than "
                      f"{MAX_STEP_FACTOR:g}× from {eta:.3g}, so η moves only to "
                      f"{new.efficiency:.3g}")
    return Folded(new, Verdict.FOLDED, f"observed η {observed:.3g}, weight {added}")


@dataclass(frozen=True, slots=True)
class StepObservation:
    """A measured step time beside the prediction that was made for it."""

    key: tuple[str, str]
    """(accelerator, strategy): what η is kept per."""
    predicted_step_s: float
    predicted_compute_s: float
    efficiency_used: float
    """η the prediction was made with; ``compute · η`` is FLOPs / peak."""
    measured_step_s: float
    step_reports: int = FULL_WEIGHT_REPORTS
    """Step reports the measurement is the median of (after the start-up one)."""

    def observed_efficiency(self) -> float:
        """η this run implies, the rest of the step (communication, optimizer) as predicted."""
        other_s = self.predicted_step_s - self.predicted_compute_s
        return observed_efficiency(
            self.predicted_compute_s * self.efficiency_used, 1.0, self.measured_step_s, other_s
        )


def calibrate(
    observations: Iterable[StepObservation],
    start: Mapping[tuple[str, str], EfficiencyEstimate] | None = None,
) -> dict[tuple[str, str], EfficiencyEstimate]:
    """η per key: each observation folded, in order, into its key's estimate by :func:`update`.

    A key without a ``start`` estimate starts from the η its first observation was predicted
    with (the prior, for a prediction made before any calibration), at weight 0."""
    estimates = dict(start or {})
    for seen in observations:
        current = estimates.get(seen.key) or EfficiencyEstimate(seen.efficiency_used, 0)
        estimates[seen.key] = update(current, seen.observed_efficiency(),
                                     seen.step_reports).estimate
    return estimates
