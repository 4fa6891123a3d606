"""What the runs of ``bench/cost_time.py`` measured, and what counts over repeated runs.

A run's figures come from its progress events (rank 0's) and the gang's measurements before it
(``load.json``, written by ``cost_time_runs.gang_rank``); :func:`least_disturbed` estimates the
unloaded machine's figures from a configuration's repeats; ``--save`` / ``--load`` keep them.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

WARMUP_STEPS = 3


@dataclass(frozen=True)
class Measured:
    """One run: its step times after warm-up, median phases, peaks, and the load beside it."""

    steps_s: list[float]
    phases_s: dict[str, float]
    peak_flops: float
    """Per-rank peak the gang measured just before the run (what predictions use)."""
    trainer_peak_flops: float
    """Per-rank peak the trainer measured for its MFU (one best-of-5 per rank, averaged)."""
    steps_other_cores: float
    """Cores other work kept busy, on average, during the timed steps."""
    collective_latency_s: float | None = None
    """α the gang measured just before the run (``cost_time_runs.gang_links``); None in runs
    saved before the gang measured it (the catalog's then)."""
    link_bytes_per_s: float | None = None
    """β the gang measured with it."""

    @property
    def step_s(self) -> float:
        return statistics.median(self.steps_s)

    @classmethod
    def read(cls, run_dir: Path) -> Measured:
        """One run's figures from its progress events (rank 0's) and rank 0's probe."""
        lines = (run_dir / "progress.jsonl").read_text().splitlines()
        steps = [
            event
            for event in map(json.loads, lines)
            if event["event"] == "step" and event["step"] > WARMUP_STEPS
        ]
        phases = {
            name.removesuffix("_s"): statistics.median(event[name] for event in steps)
            for name in ("data_s", "compute_s", "optimizer_s", "agree_s")
        }
        load = json.loads((run_dir / "load.json").read_text())
        return cls(
            [event["step_time_s"] for event in steps],
            phases,
            load["peak_flops"],
            statistics.median(event["peak_flops"] for event in steps),
            load["steps_other_cores"],
            load.get("collective_latency_s"),
            load.get("link_bytes_per_s"),
        )


@dataclass(frozen=True)
class Summary:
    """A configuration's figures over its repeated runs, as predictions are checked against."""

    step_s: float
    fastest_run_step_s: float
    phases_s: dict[str, float]
    """Median phases of its fastest run, whose median step is ``fastest_run_step_s``."""
    peak_flops: float
    other_cores: float
    """Cores other work took during its timed steps, median over its runs."""
    trainer_peak_flops: float
    collective_latency_s: float | None = None
    """The world size's α: lower quartile of its measurements (None: the catalog's)."""
    link_bytes_per_s: float | None = None
    """The world size's β: upper quartile of its measurements (None: the catalog's)."""


def _quartile(values: list[float], which: int) -> float | None:
    """Lower (0) or upper (2) quartile; the one value if only one; None if none."""
    if not values:
        return None
    return values[0] if len(values) == 1 else statistics.quantiles(values)[which]


def least_disturbed(
    runs: Mapping[str, list[Measured]], world_sizes: Mapping[str, int]
) -> dict[str, Summary]:
    """Each configuration's figures as on the unloaded machine, from its repeated runs.

    Other work on a shared machine only takes cores away: it lengthens steps and collectives
    and lowers measured peaks and bandwidths, never the reverse, and it comes and goes within
    seconds. So a configuration's step time is the lower quartile of its steps over all passes;
    a world size's per-rank peak and β (one figure each, as a pool records it) the upper
    quartile of its measurements and its α the lower, one before every run of every pass. The
    load probe's reading, the median over the configuration's runs, says how far from
    unloaded the machine was.
    """
    measured: dict[int, list[float]] = {}
    for name, values in runs.items():
        measured.setdefault(world_sizes[name], []).extend(run.peak_flops for run in values)
    peaks = {world: statistics.quantiles(values)[2] for world, values in measured.items()}
    alphas: dict[int, list[float]] = {}
    betas: dict[int, list[float]] = {}
    for name, values in runs.items():
        for run in values:
            if run.collective_latency_s is not None and run.link_bytes_per_s:
                alphas.setdefault(world_sizes[name], []).append(run.collective_latency_s)
                betas.setdefault(world_sizes[name], []).append(run.link_bytes_per_s)
    results = {}
    for name, values in runs.items():
        steps = [step for run in values for step in run.steps_s]
        fastest = min(values, key=lambda run: run.step_s)
        results[name] = Summary(
            step_s=statistics.quantiles(steps)[0],
            fastest_run_step_s=fastest.step_s,
            phases_s=fastest.phases_s,
            peak_flops=peaks[world_sizes[name]],
            other_cores=statistics.median(run.steps_other_cores for run in values),
            trainer_peak_flops=fastest.trainer_peak_flops,
            collective_latency_s=_quartile(alphas.get(world_sizes[name], []), 0),
            link_bytes_per_s=_quartile(betas.get(world_sizes[name], []), 2),
        )
    return results


def save_runs(path: Path, runs: Mapping[str, list[Measured]]) -> None:
    path.write_text(
        json.dumps(
            {name: [asdict(run) for run in values] for name, values in runs.items()}, indent=1
        )
    )


def load_runs(path: Path, names: Sequence[str]) -> dict[str, list[Measured]]:
    runs = {
        name: [Measured(**fields) for fields in values]
        for name, values in json.loads(path.read_text()).items()
    }
    missing = [name for name in names if name not in runs]
    if missing:
        raise SystemExit(f"{path} has no measurements of {missing}; run without --load")
    return {name: runs[name] for name in names}
