"""Recalibrate the efficiency η from measured step times.

A prediction splits a step into compute (``flops / (peak · η)``) and everything else
(communication, optimizer, bubble). A measured step time ``t`` therefore implies

    η_observed = flops / (peak · (t − other_s))

and the stored η moves toward it as a running mean over the last ``MAX_WEIGHT`` observations,
so a new accelerator or software stack takes over within a few jobs while one odd run cannot
swing it. η is clamped to (0, 1]: a step cannot beat the hardware's peak.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_WEIGHT = 20
"""Observations after which older ones stop gaining weight (a sliding running mean)."""

ETA_FLOOR = 1e-4


@dataclass(frozen=True, slots=True)
class EfficiencyEstimate:
    efficiency: float
    observations: int


def observed_efficiency(
    flops_per_device: float, peak_flops: float, measured_step_s: float, other_s: float
) -> float:
    """η implied by one measured step, given the predicted non-compute seconds."""
    compute_s = max(measured_step_s - other_s, 1e-9)
    return min(1.0, max(ETA_FLOOR, flops_per_device / (peak_flops * compute_s)))


def update(current: EfficiencyEstimate | None, observed: float) -> EfficiencyEstimate:
    """Fold one observation into the running estimate."""
    if current is None:
        return EfficiencyEstimate(observed, 1)
    weight = min(current.observations, MAX_WEIGHT - 1)
    value = (current.efficiency * weight + observed) / (weight + 1)
    return EfficiencyEstimate(value, current.observations + 1)


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
    """η per key: each observation folded, in order, into its key's running estimate."""
    estimates = dict(start or {})
    for seen in observations:
        estimates[seen.key] = update(estimates.get(seen.key), seen.observed_efficiency())
    return estimates
