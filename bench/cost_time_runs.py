"""Real training runs for ``bench/cost_time.py``: gloo gangs on this machine, their per-rank peak
and links, and how much of the machine other work took meanwhile.

Each gang (one per world size and pass) trains its runs one after the other, each built as a
pretrain rank builds it (``init_distributed``, ``build_trainer``, ``Trainer.run``). Before each
run the ranks measure their peak and links together (:func:`gang_peak_flops`,
:func:`gang_links`). Rank 0 also reads the machine's CPU clocks (:class:`LoadProbe`) at every
step: the CPU seconds the whole machine spent during the timed steps, less those of the gang's
own processes, are what other work took. ``cost_time_results.least_disturbed`` then estimates
the unloaded machine's figures from the repeats.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cost_time_results import WARMUP_STEPS, Measured

from scheduler.gangs.protocol import ProgressKind
from workers.core.progress import ProgressReporter

if TYPE_CHECKING:
    from workers.core.distributed import DistContext

PEAK_ROUNDS = 3
"""``measure_cpu_peak`` calls per rank, back to back, before each run (the median counts)."""
SYNC_ROUNDS = 30
"""Compute-then-all-reduce rounds per latency measurement (:func:`gang_links`)."""
LINK_PAYLOAD_BYTES = 4 * 2**20
"""The all-reduce β is timed on: bandwidth-bound on every link here."""
SYNC_PAYLOAD_BYTES = 2**20
"""The all-reduce α is measured with: a block's activations or gradients at these sizes."""
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


def gang_links(ctx: DistContext) -> tuple[float, float]:
    """(α, β) of this gang's links as training meets them, measured by all ranks at once.

    β: ring bytes each rank sends per second in an all-reduce of :data:`LINK_PAYLOAD_BYTES`
    with nothing else running, the fastest of five. α: what one all-reduce of
    :data:`SYNC_PAYLOAD_BYTES` (a block's activations or gradients at these model sizes) adds
    after a burst of matrix products, as collectives come in training, less its bytes at β;
    the mean over :data:`SYNC_ROUNDS`, the faster of two tries. The burst is what makes it
    honest: each rank's peer is busy computing when the collective starts, and gloo's
    transfer waits until every rank is scheduled (2 ranks on this 2-core machine: 1.5–1.9 ms
    beyond the bytes, where the same all-reduce alone takes 0.75–1.4 ms in all).
    """
    import torch
    import torch.distributed as dist

    left, right = torch.randn(256, 256), torch.randn(256, 256)
    sync, payload = torch.zeros(SYNC_PAYLOAD_BYTES // 4), torch.zeros(LINK_PAYLOAD_BYTES // 4)
    times_s = []
    for _ in range(5):
        ctx.barrier()
        start_s = time.perf_counter()
        dist.all_reduce(payload)
        times_s.append(time.perf_counter() - start_s)
    ring = 2 * (ctx.world_size - 1) / ctx.world_size
    beta = ring * LINK_PAYLOAD_BYTES / min(times_s)

    def rounds(with_collective: bool) -> float:
        ctx.barrier()
        start_s = time.perf_counter()
        for _ in range(SYNC_ROUNDS):
            for _ in range(4):
                left @ right
            if with_collective:
                dist.all_reduce(sync)
        return time.perf_counter() - start_s

    added_s = min((rounds(True) - rounds(False)) / SYNC_ROUNDS for _ in range(2))
    alpha_s = max(added_s - ring * SYNC_PAYLOAD_BYTES / beta, 0.0)
    figures = ctx.all_reduce_sum([alpha_s, beta])
    return figures[0] / ctx.world_size, figures[1] / ctx.world_size


def gang_rank(
    rank: int, world: int, port: int, root: str, requests: list[RunRequest], threads: int
) -> None:
    """One rank: for each run, measure the per-rank peak with the others, then train."""
    import torch

    from scheduler.domain.plan import Plan
    from scheduler.domain.spec import parse_spec
    from scheduler.gangs.protocol import JobFile
    from workers.core.distributed import shutdown_distributed
    from workers.core.preemption import StopRequest
    from workers.jobs.pretrain import build_trainer

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
            alpha_s, link_bytes_per_s = gang_links(ctx) if world > 1 else (0.0, 0.0)
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
                    json.dumps({"peak_flops": peak_flops, "steps_other_cores": other_cores,
                                "collective_latency_s": alpha_s,
                                "link_bytes_per_s": link_bytes_per_s})
                )
    finally:
        shutdown_distributed()


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
