"""How far the simulator scales: one cycle on a 10,000-device cluster, and a whole public trace.

(a) One call of the real ``run_cycle`` on a synthetic pool of 1,250 nodes × 8 devices with N
    pending jobs (gang sizes 1, 1, 2, 4, 8, 16, 32; priorities 0, 0, 1, 5), in two states:
    ``steady`` — every node has 0 or 1 free device, as in a loaded replay, so few jobs fit and
    the first blocked job reserves the pool — and ``cold`` — every device free, so the cycle
    admits gangs until the pool is full (the worst case: thousands of admissions at once) —
    under two configurations: ``default``, the service's ``PolicyConfig()`` (fair share, quota,
    preemption, EASY backfill, moldable shapes), and ``priority``, what the simulator's
    ``priority`` policy runs (priority order; quota, preemption and backfill off).
    Goal (issue): < 1 s at 10,000 devices and 50,000 pending.
(b) The whole Alibaba 2023 trace (``../shared/data/traces/alibaba-gpu-2023``) replayed end to
    end under the ``priority`` policy and under ``corral`` (the service's defaults: fair share,
    preemption, EASY backfill, moldable shapes), gangs on one node (pods). Goal: < 2 min. The trace
    loads its 6,212 GPUs lightly (0.3 % busy), so queues stay short; hence also
(c) a loaded replay: 2,000 generated jobs on 1,024 devices at offered load 0.9 (σ = 0.3), where
    queues reach ~1,600 jobs and every cycle walks all of them (fifo, priority, corral).

    .venv/bin/python bench/sim_scale.py                 # all, 5,000 and 50,000 pending
    .venv/bin/python bench/sim_scale.py --profile       # plus cProfile's top functions
    .venv/bin/python bench/sim_scale.py --pending 5000 --cycle-only
    .venv/bin/python bench/sim_scale.py --what-if      # (a) again with the proposed _without

``--what-if`` measures a proposal for ``scheduler/cycle.py`` without changing it: its
``_without`` copies every node of the pool after each admission (O(nodes) dataclass copies per
admitted gang, the hotspot); the proposal copies only the nodes the gang touched.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import itertools
import pstats
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import scheduler.cycle
from scheduler.cycle import run_cycle
from scheduler.domain.resources import NodeView, PendingJobView, PoolView, Snapshot
from scheduler.policies.config import PolicyConfig
from scheduler.policies.placement import DeviceList
from scheduler.sim.engine import SimConfig, simulate
from scheduler.sim.generator import GeneratorConfig, generate, homogeneous_cluster, offered_load
from scheduler.sim.groundtruth import GroundTruth
from scheduler.sim.metrics import percentile
from scheduler.sim.policy import cycle_config
from scheduler.sim.report import format_table

NODES = 1250
DEVICES_PER_NODE = 8
GANGS = (1, 1, 2, 4, 8, 16, 32)
PRIORITIES = (0, 0, 1, 5)
TRACE_POLICIES = ("priority", "corral")
LOADED_POLICIES = ("fifo", "priority", "corral")
"""(b) replays: the simulator's first policy, and Corral's defaults (``PolicyConfig()``)."""
ALIBABA = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "alibaba-gpu-2023"


def synthetic_snapshot(pending: int, state: str, seed: int = 0) -> Snapshot:
    """A 1,250 × 8 pool in ``state`` (steady or cold) with ``pending`` jobs."""
    rng = random.Random(seed)

    def free(index: int) -> tuple[int, ...]:
        if state == "cold":
            return tuple(range(DEVICES_PER_NODE))
        return tuple(range(DEVICES_PER_NODE - rng.randint(0, 1), DEVICES_PER_NODE))

    nodes = tuple(
        NodeView(node_id=i, name=f"n{i}", devices=DEVICES_PER_NODE, free_devices=free(i))
        for i in range(1, NODES + 1)
    )
    pool = PoolView(
        pool_id=1,
        name="gpu",
        backend="sim",
        accelerator="H100-SXM",
        devices_per_node=DEVICES_PER_NODE,
        nodes=nodes,
    )
    jobs = []
    for i in range(pending):
        devices = rng.choice(GANGS)
        jobs.append(
            PendingJobView(
                job_id=i,
                name=f"j{i}",
                tenant=f"t{i % 7}",
                priority=rng.choice(PRIORITIES),
                submitted_seq=i,
                pool=None,
                accelerator=None,
                devices=devices,
                global_batch=devices,
                micro_batch=None,
                precision="bf16",
                kind="other",
            )
        )
    return Snapshot(pools=(pool,), pending=tuple(jobs))


def without_touched_only(pool: PoolView, taken: DeviceList) -> PoolView:
    """The proposed ``scheduler.cycle._without``: copy only the nodes the gang touched."""
    gone = set(taken)
    touched = {node_id for node_id, _ in taken}
    nodes = tuple(
        replace(
            node,
            free_devices=tuple(d for d in node.free_devices if (node.node_id, d) not in gone),
        )
        if node.node_id in touched
        else node
        for node in pool.nodes
    )
    return replace(pool, nodes=nodes)


def profile(fn: Callable[[], object], top: int = 12) -> str:
    """cProfile's ``top`` functions by internal time over one call of ``fn``."""
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def bench_cycle(
    pending_counts: list[int], repeats: int, show_profile: bool, title: str = ""
) -> None:
    rows = []
    profiles = []
    configs = (("default", PolicyConfig()), ("priority", cycle_config("priority")))
    for (name, config), state, pending in itertools.product(
        configs, ("steady", "cold"), pending_counts
    ):
        snapshot = synthetic_snapshot(pending, state)
        times = []
        admitted = 0
        runs = repeats if pending <= 10_000 else max(1, (repeats + 1) // 2)
        for _ in range(runs):
            started = time.perf_counter()
            result = run_cycle(snapshot, config=config)
            times.append(time.perf_counter() - started)
            admitted = len(result.admissions)
        rows.append(
            (
                name,
                state,
                f"{NODES * DEVICES_PER_NODE:,}",
                f"{pending:,}",
                str(admitted),
                f"{statistics.median(times) * 1e3:,.0f}",
                f"{percentile(times, 99) * 1e3:,.0f}",
                str(runs),
            )
        )
        if show_profile:
            profiles.append(
                (
                    f"{name}, {state}, {pending:,} pending",
                    profile(functools.partial(run_cycle, snapshot, config=config)),
                )
            )
    print(f"(a) one run_cycle on 1,250 nodes × 8 devices{title}")
    print(
        format_table(
            ("config", "state", "devices", "pending", "admitted", "median ms", "p99 ms", "runs"),
            rows,
        )
    )
    for title, text in profiles:
        print(f"\ncProfile, {title}:\n{text}")


def bench_trace(show_profile: bool) -> None:
    from scheduler.sim.alibaba import read_alibaba

    if not ALIBABA.is_dir():
        print(f"\n(b) skipped: no Alibaba trace at {ALIBABA}")
        return
    started = time.perf_counter()
    trace = read_alibaba(ALIBABA)
    read_s = time.perf_counter() - started
    rows = []
    for policy in TRACE_POLICIES:
        config = SimConfig(policy=policy, single_node_gangs=True)
        result = simulate(trace.jobs, trace.cluster, config, timer=time.perf_counter)
        rows.append(
            (
                policy,
                f"{result.jobs:,}",
                f"{result.total_devices:,}",
                f"{len(result.cycle_seconds):,}",
                f"{read_s:.2f}",
                f"{result.wall_s:.1f}",
                f"{result.jobs_per_wall_s or 0:,.0f}",
                f"{result.cycle_ms(50) or 0:.2f}",
                f"{result.cycle_ms(99) or 0:.2f}",
            )
        )
        if show_profile:
            print(f"\ncProfile, Alibaba replay, {policy}:")
            print(profile(functools.partial(simulate, trace.jobs, trace.cluster, config)))
    print("\n(b) the whole Alibaba 2023 trace (openb_pod_list_default.csv)")
    headers = ("policy", "jobs", "devices", "cycles", "read s", "replay wall s",
               "jobs / wall-s", "cycle p50 ms", "cycle p99 ms")  # fmt: skip
    print(format_table(headers, rows))


def bench_loaded(jobs_count: int = 2000, devices: int = 1024, load: float = 0.9) -> None:
    cluster = homogeneous_cluster(devices)
    probe = GeneratorConfig(jobs_count, 8, 1.0, cluster, seed=0, deadline_fraction=0.2)
    rate = load / offered_load(generate(probe), cluster)
    config = GeneratorConfig(jobs_count, 8, rate, cluster, seed=0, deadline_fraction=0.2)
    jobs = generate(config)
    rows = []
    for policy in LOADED_POLICIES:
        sim_config = SimConfig(policy=policy, truth=GroundTruth(job_sigma=0.3, seed=0))
        result = simulate(jobs, cluster, sim_config, timer=time.perf_counter)
        rows.append(
            (
                policy,
                f"{result.jobs:,}",
                f"{devices:,}",
                f"{max(s.pending_jobs for s in result.timeline):,}",
                f"{len(result.cycle_seconds):,}",
                f"{result.preemptions:,}",
                f"{result.wall_s:.1f}",
                f"{sum(result.cycle_seconds) / result.wall_s:.0%}",
                f"{result.jobs_per_wall_s or 0:,.0f}",
                f"{result.cycle_ms(50) or 0:.2f}",
                f"{result.cycle_ms(99) or 0:.2f}",
            )
        )
    print(f"\n(c) {jobs_count:,} generated jobs on {devices:,} devices, offered load {load}")
    headers = ("policy", "jobs", "devices", "max queue", "cycles", "preempted", "wall s",
               "in cycle", "jobs / wall-s", "cycle p50 ms", "cycle p99 ms")  # fmt: skip
    print(format_table(headers, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pending", default="5000,50000", help="comma-separated job counts")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (50,000: half)")
    parser.add_argument("--profile", action="store_true", help="print cProfile hotspots")
    parser.add_argument("--cycle-only", action="store_true", help="only (a)")
    parser.add_argument("--loaded-only", action="store_true", help="only (c)")
    parser.add_argument("--what-if", action="store_true", help="(a) with the proposed _without")
    args = parser.parse_args()
    pending = [int(n) for n in args.pending.split(",")]
    if args.loaded_only:
        bench_loaded()
        return
    bench_cycle(pending, args.repeats, args.profile)
    if args.what_if:
        original = scheduler.cycle._without
        scheduler.cycle._without = without_touched_only
        try:
            print()
            bench_cycle(pending, args.repeats, args.profile, ", what-if: _without touched only")
        finally:
            scheduler.cycle._without = original
    if not args.cycle_only:
        bench_trace(args.profile)
        bench_loaded()


if __name__ == "__main__":
    main()
