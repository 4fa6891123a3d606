"""Recalibrate the efficiency η from measured step times.

A prediction splits a step into compute (``flops / (peak · η)``) and everything else
(communication, optimizer, bubble). A measured step time ``t`` therefore implies

    η_observed = flops / (peak · (t − other_s))

and the stored η moves toward it as a running mean over the last ``MAX_WEIGHT`` observations,
so a new accelerator or software stack takes over within a few jobs while one odd run cannot
swing it. η is clamped to (0, 1]: a step cannot beat the hardware's peak.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_WEIGHT = 20
"""Observations after which older ones stop gaining weight (a sliding running mean)."""

ETA_FLOOR = 1e-4


@dataclass(frozen=True, slots=True)
class EfficiencyEstimate:
    efficiency: float
    observations: int


def observed_efficiency(flops_per_device: float, peak_flops: float, measured_step_s: float,
                        other_s: float) -> float:
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
