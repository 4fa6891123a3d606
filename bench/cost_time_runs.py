"""Real training runs for ``bench/cost_time.py``: gloo gangs on this machine, their per-rank peak
and how much of the machine other work took meanwhile.

Each gang (one per world size and pass) trains its runs one after the other, each built as a
pretrain rank builds it (``init_distributed``, ``build_trainer``, ``Trainer.run``). Before each
run the ranks measure their peak together (:func:`gang_peak_flops`). Rank 0 also reads the
machine's CPU clocks (:class:`LoadProbe`) at every step: the CPU seconds the whole machine spent
during the timed steps, less those of the gang's own processes, are what other work took.
:func:`least_disturbed` then estimates the unloaded machine's figures from the repeats.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.core.progress import ProgressReporter
from workers.protocol import ProgressKind

if TYPE_CHECKING:
    from workers.core.distributed import DistContext

WARMUP_STEPS = 3
PEAK_ROUNDS = 3
"""``measure_cpu_peak`` calls per rank, back to back, before each run (the median counts)."""
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class RunRequest:
    """One run: a name, the gang size, and the job spec and plan its ranks train with."""

    name: str
    world_size: int
    spec: dict[str, Any]
    plan: dict[str, Any]

    @property
    def folder(self) -> str:
        return self.name.replace(" ", "_").replace("=", "")


# --- How much of the machine other work takes ---


@dataclass(frozen=True)
class CpuClock:
    """Wall time, and CPU seconds used by the whole machine and by the gang, at one instant."""

    wall_s: float
    machine_busy_s: float
    gang_busy_s: float


class LoadProbe:
    """CPU clocks of this machine (``/proc/stat``: every process, and time a hypervisor stole)
    and of the gang's processes (``/proc/PID/stat``: all their threads), in clock ticks."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)

    def now(self) -> CpuClock:
        with open("/proc/stat") as stat:
            # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
            ticks = [int(value) for value in stat.readline().split()[1:9]]
        machine = sum(ticks) - ticks[3] - ticks[4]
        gang = 0
        for pid in self.pids:
            with open(f"/proc/{pid}/stat") as stat:
                # Fields after the command name (which may hold spaces): utime, stime are 12, 13.
                fields = stat.read().rsplit(")", 1)[1].split()
            gang += int(fields[11]) + int(fields[12])
        return CpuClock(time.perf_counter(), machine / CLOCK_TICKS_PER_S, gang / CLOCK_TICKS_PER_S)

    @staticmethod
    def other_cores(start: CpuClock, end: CpuClock) -> float:
        """Cores other work kept busy on average between two readings."""
        others_s = (end.machine_busy_s - start.machine_busy_s) - (
            end.gang_busy_s - start.gang_busy_s
        )
        return max(0.0, others_s / (end.wall_s - start.wall_s))


class StepClockReporter(ProgressReporter):
    """The trainer's own progress reporter, also reading ``probe`` at every step event."""

    def __init__(self, inner: ProgressReporter, probe: LoadProbe | None) -> None:
        super().__init__(inner.path, inner.attempt, inner.enabled)
        self.probe = probe
        self.clocks: dict[int, CpuClock] = {}

    def emit(self, kind: ProgressKind, **fields: Any) -> None:
        if kind == "step" and self.probe is not None:
            self.clocks[int(fields["step"])] = self.probe.now()
        super().emit(kind, **fields)


# --- One gang ---


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def join_as_rank(rank: int, world: int, port: int) -> DistContext:
    """Join the gang through the workers' own ``init_distributed`` (threads per rank included)."""
    from workers.core.distributed import init_distributed

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    return init_distributed()


def gang_peak_flops(ctx: DistContext) -> float:
    """One rank's share of the machine: ``measure_cpu_peak`` on every rank at once, averaged.

    The ranks measure back to back after a barrier and each keeps the median of its rounds:
    the first and last rounds overlap ranks that wait in a collective and leave the others a
    whole core (measured: up to 2× the share with 4 ranks on 2 cores, in a best-of-5 alone).
    """
    from workers.core.utilization import measure_cpu_peak

    ctx.barrier()
    rounds = [measure_cpu_peak() for _ in range(PEAK_ROUNDS)]
    return float(ctx.all_reduce_sum([statistics.median(rounds)])[0] / ctx.world_size)


def gang_rank(
    rank: int, world: int, port: int, root: str, requests: list[RunRequest], threads: int
) -> None:
    """One rank: for each run, measure the per-rank peak with the others, then train."""
    import torch

    from scheduler.domain.plan import Plan
    from scheduler.domain.spec import parse_spec
    from workers.core.distributed import shutdown_distributed
    from workers.core.preemption import StopRequest
    from workers.jobs.pretrain import build_trainer
    from workers.protocol import JobFile

    ctx = join_as_rank(rank, world, port)
    if threads:
        torch.set_num_threads(threads)
    one_hot = [float(os.getpid()) if index == rank else 0.0 for index in range(world)]
    pids = [int(pid) for pid in ctx.all_reduce_sum(one_hot)]
    probe = LoadProbe(pids) if ctx.is_rank_zero else None
    try:
        for request in requests:
            run_dir = Path(root) / request.folder
            # 1. The peak, right before the run.
            peak_flops = gang_peak_flops(ctx)
            # 2. The run, as a pretrain rank runs it, with the machine's clocks at every step.
            spec, plan = parse_spec(request.spec), Plan.from_dict(request.plan)
            job = JobFile(
                job_id=1,
                attempt=1,
                spec=spec.model_dump(mode="json"),
                plan=plan.to_dict(),
                run_dir=str(run_dir),
            )
            trainer = build_trainer(job, spec, plan, ctx, StopRequest())
            reporter = trainer.reporter = StepClockReporter(trainer.reporter, probe)
            trainer.run()
            if probe:
                clocks = reporter.clocks
                other_cores = probe.other_cores(clocks[WARMUP_STEPS], clocks[max(clocks)])
                (run_dir / "load.json").write_text(
                    json.dumps({"peak_flops": peak_flops, "steps_other_cores": other_cores})
                )
    finally:
        shutdown_distributed()


# --- What one run measured, and what counts over repeated runs ---


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


def least_disturbed(
    runs: Mapping[str, list[Measured]], world_sizes: Mapping[str, int]
) -> dict[str, Summary]:
    """Each configuration's figures as on the unloaded machine, from its repeated runs.

    Other work on a shared machine only takes cores away: it lengthens steps and lowers
    measured peaks, never the reverse, and it comes and goes within seconds. So a
    configuration's step time is the lower quartile of its steps over all passes, and a world
    size's per-rank peak (one figure, as a pool records it) the upper quartile of its
    measurements, one before every run of every pass. The load probe's reading, the median over
    the configuration's runs, says how far from unloaded the machine was.
    """
    measured: dict[int, list[float]] = {}
    for name, values in runs.items():
        measured.setdefault(world_sizes[name], []).extend(run.peak_flops for run in values)
    peaks = {world: statistics.quantiles(values)[2] for world, values in measured.items()}
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
        )
    return results


def train(
    requests: Sequence[RunRequest], passes: int, threads: int, root: Path
) -> dict[str, list[Measured]]:
    """Run every request ``passes`` times, one gang per world size in turn; each request's runs
    in pass order, minutes apart."""
    import torch.multiprocessing as mp

    runs: dict[str, list[Measured]] = {}
    for index in range(passes):
        for world in sorted({request.world_size for request in requests}):
            mine = [request for request in requests if request.world_size == world]
            folder = root / f"pass-{index}"
            start_s = time.perf_counter()
            mp.start_processes(
                gang_rank,
                nprocs=world,
                start_method="spawn",
                args=(world, free_port(), str(folder), mine, threads),
            )
            measured = [Measured.read(folder / request.folder) for request in mine]
            for request, run in zip(mine, measured, strict=True):
                runs.setdefault(request.name, []).append(run)
            others = statistics.median(run.steps_other_cores for run in measured)
            print(
                f"  pass {index + 1}, {world} rank(s): {len(mine)} runs in "
                f"{time.perf_counter() - start_s:.0f} s; other work took {others:.2f} cores "
                f"(median over runs)",
                flush=True,
            )
    return runs


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
