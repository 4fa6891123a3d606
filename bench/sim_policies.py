"""Every simulated policy on two workloads, one comparison table each (docs/simulator.md).

(a) The Alibaba 2023 GPU trace (``../shared/data/traces/alibaba-gpu-2023``,
    ``openb_pod_list_default.csv``), whole, on its own 6,212 GPUs, gangs on one node. Skipped
    with a message when the trace is absent.
(b) A generated LLM workload (``scheduler/sim/generator.py``, Acme/Kalos-shaped): 2,000 jobs
    from 6 tenants, 20 % of the jobs with a deadline, 20 % pinned to one accelerator type, on a
    heterogeneous cluster of 48 × 8 A100-80G and 16 × 8 H100-SXM (H100 speed from the hardware
    catalog's peak ratio, 3.17), at an offered load of 1.0 counted in A100-equivalents; ground
    truth error σ = 0.3. ``corral+quotas`` is ``corral`` with every tenant owning an equal share
    of each type, all lent to one cohort.

Policies: fifo, priority, las, drf, gavel, corral (``scheduler/sim/policy.py``). Checkpoints
every 30 min; a preempted job stops 60 s after it is told to.

    .venv/bin/python bench/sim_policies.py                       # both tables, ~1 min here
    .venv/bin/python bench/sim_policies.py --only generated --jobs 3000 --load 1.1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from scheduler.sim.engine import SimConfig, Simulator
from scheduler.sim.generator import GeneratorConfig, catalog_speeds, generate, offered_load
from scheduler.sim.groundtruth import GroundTruth
from scheduler.sim.policy import POLICIES, equal_quotas, policy_named, renamed
from scheduler.sim.report import COLUMNS, comparison_rows, format_table, notes
from scheduler.sim.result import SimResult
from scheduler.sim.workload import ClusterSpec, PoolSpec, TraceJob

ALIBABA = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "alibaba-gpu-2023"
GENERATED_CLUSTER = ClusterSpec(
    (PoolSpec("a100", "A100-80G", 48, 8), PoolSpec("h100", "H100-SXM", 16, 8))
)
TENANTS = 6
SIGMA = 0.3


def replay_all(
    jobs: Sequence[TraceJob], cluster: ClusterSpec, config: SimConfig, with_quotas: bool
) -> list[SimResult]:
    """Every policy of ``POLICIES`` (and ``corral+quotas`` when asked), timed."""
    policies = [policy_named(name) for name in POLICIES]
    results = []
    for policy in policies:
        results.append(
            Simulator(jobs, cluster, replace(config, policy=policy), timer=time.perf_counter).run()
        )
    if with_quotas:
        tenants = sorted({job.tenant for job in jobs})
        quotas = equal_quotas(cluster.devices_by_accelerator(), tenants)
        policy = renamed(policy_named("corral"), "corral+quotas")
        results.append(
            Simulator(
                jobs,
                cluster,
                replace(config, policy=policy, quotas=quotas),
                timer=time.perf_counter,
            ).run()
        )
    return results


def show(title: str, results: Sequence[SimResult]) -> None:
    print(title)
    print(format_table(COLUMNS, comparison_rows(results)))
    for result in results:
        for line in notes(result):
            print(f"  {line}")
    wall = sum(result.wall_s for result in results)
    print(f"  replay wall time, all policies: {wall:.1f} s\n")


def bench_alibaba() -> None:
    from scheduler.sim.alibaba import read_alibaba

    if not ALIBABA.is_dir():
        print(f"(a) skipped: no Alibaba trace at {ALIBABA}\n")
        return
    trace = read_alibaba(ALIBABA)
    config = SimConfig(single_node_gangs=True)
    load = offered_load(trace.jobs, trace.cluster)
    title = (
        f"(a) Alibaba 2023, openb_pod_list_default.csv, whole trace: {len(trace.jobs):,} jobs on "
        f"{trace.cluster.total_devices:,} GPUs in {len(trace.cluster.pools)} pools, offered load "
        f"{load:.4f}, gangs on one node, no run-time error"
    )
    show(title, replay_all(trace.jobs, trace.cluster, config, with_quotas=False))


def generated_jobs(count: int, load: float, seed: int) -> tuple[TraceJob, ...]:
    """``count`` jobs whose arrival rate gives ``load`` on :data:`GENERATED_CLUSTER`, counting
    each device at its catalog speed (offered load is proportional to the rate)."""
    speeds = catalog_speeds(GENERATED_CLUSTER)

    def config(rate: float) -> GeneratorConfig:
        return GeneratorConfig(count, TENANTS, rate, GENERATED_CLUSTER, seed=seed,
                               deadline_fraction=0.2, constrained_fraction=0.2)  # fmt: skip

    rate = load / offered_load(generate(config(1.0)), GENERATED_CLUSTER, speeds)
    return generate(config(rate))


def bench_generated(count: int, load: float, seed: int) -> None:
    jobs = generated_jobs(count, load, seed)
    speeds = catalog_speeds(GENERATED_CLUSTER)
    config = SimConfig(truth=GroundTruth(job_sigma=SIGMA, seed=seed))
    title = (
        f"(b) generated: {count:,} jobs (seed {seed}, {TENANTS} tenants, 20 % with deadlines, "
        f"20 % pinned to a type) on 384 A100-80G + 128 H100-SXM (speed "
        f"{speeds['H100-SXM']:.2f}), offered load "
        f"{offered_load(jobs, GENERATED_CLUSTER, speeds):.2f}, σ = {SIGMA}"
    )
    show(title, replay_all(jobs, GENERATED_CLUSTER, config, with_quotas=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("alibaba", "generated"), default=None)
    parser.add_argument("--jobs", type=int, default=2000, help="generated jobs")
    parser.add_argument("--load", type=float, default=1.0, help="generated offered load")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.only in (None, "alibaba"):
        bench_alibaba()
    if args.only in (None, "generated"):
        bench_generated(args.jobs, args.load, args.seed)


if __name__ == "__main__":
    main()
