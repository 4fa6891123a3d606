"""``corral sim``: replay a workload under several policies and compare them.

Parses arguments, loads or generates the workload, calls ``scheduler.sim`` and renders; the
simulation itself lives in ``scheduler/sim/engine.py`` (see docs/simulator.md).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from scheduler.policies.quota import Quotas
from scheduler.sim import alibaba as alibaba_reader
from scheduler.sim.engine import SimConfig, SimResult, Simulator, window
from scheduler.sim.generator import GeneratorConfig, generate, homogeneous_cluster, offered_load
from scheduler.sim.groundtruth import GroundTruth
from scheduler.sim.policy import POLICIES, equal_quotas, policy_named
from scheduler.sim.report import COLUMNS, comparison_rows, notes, plot_timelines
from scheduler.sim.trace_csv import read_cluster, read_trace
from scheduler.sim.workload import ClusterSpec, TraceJob

# Piped output (scripts, tests) is not cut to 80 columns: the table stays one row per policy.
console = Console(width=None if sys.stdout.isatty() else 200)


def _generated(
    count: int, cluster: ClusterSpec, tenants: int, load: float, seed: int
) -> tuple[TraceJob, ...]:
    """``count`` jobs whose arrival rate gives an offered load of ``load`` on ``cluster``.

    Offered load is proportional to the arrival rate, so one draw at rate 1/s measures the
    constant: ``rate = load / offered_load(rate = 1)``.
    """
    probe = GeneratorConfig(count, tenants, 1.0, cluster, seed=seed, deadline_fraction=0.2)
    base = offered_load(generate(probe), cluster)
    if count < 2 or base <= 0:
        return generate(probe)
    rate = load / base
    config = GeneratorConfig(count, tenants, rate, cluster, seed=seed, deadline_fraction=0.2)
    return generate(config)


def _workload(
    trace: Path | None,
    cluster_file: Path | None,
    alibaba: Path | None,
    pods: str | None,
    generate_jobs: int | None,
    devices: int,
    tenants: int,
    load: float,
    seed: int,
) -> tuple[tuple[TraceJob, ...], ClusterSpec, str]:
    """The jobs, the cluster and a one-line description of where they came from."""
    sources = [
        name
        for name, given in (("TRACE", trace), ("--alibaba", alibaba), ("--generate", generate_jobs))
        if given is not None
    ]
    if len(sources) != 1:
        raise click.UsageError(
            "give exactly one workload: TRACE (a jobs CSV, with --cluster CLUSTER.csv), "
            f"--alibaba FOLDER, or --generate N; got {', '.join(sources) or 'none'}"
        )
    if alibaba is not None:
        if cluster_file is not None:
            raise click.UsageError("--alibaba reads its cluster from the trace; drop --cluster")
        loaded = alibaba_reader.read_alibaba(alibaba, pods or alibaba_reader.POD_FILE)
        report = loaded.report
        return (
            loaded.jobs,
            loaded.cluster,
            (
                f"Alibaba 2023 {alibaba.name}: {report.jobs} of {report.tasks} pods "
                f"({report.skipped_cpu_only} CPU-only and {report.skipped_never_scheduled} never "
                f"scheduled skipped, {report.fractional_rounded_up} fractional rounded up to one "
                f"GPU, {report.failed} failed)"
            ),
        )
    cluster = (
        read_cluster(cluster_file) if cluster_file is not None else homogeneous_cluster(devices)
    )
    if trace is not None:
        if cluster_file is None:
            raise click.UsageError("TRACE needs --cluster CLUSTER.csv (the pools to replay on)")
        return read_trace(trace), cluster, f"trace {trace}"
    assert generate_jobs is not None
    jobs = _generated(generate_jobs, cluster, tenants, load, seed)
    return (
        jobs,
        cluster,
        (
            f"{generate_jobs} generated jobs (seed {seed}, {tenants} tenants, offered load "
            f"{offered_load(jobs, cluster):.2f})"
        ),
    )


def _table(results: list[SimResult]) -> Table:
    table = Table(title="Policies compared", title_justify="left")
    for index, header in enumerate(COLUMNS):
        table.add_column(header, justify="left" if index == 0 else "right", no_wrap=True)
    for row in comparison_rows(results):
        table.add_row(*row)
    return table


@click.command()
@click.argument("trace", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--cluster",
    "cluster_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cluster CSV (pool,accelerator,nodes,devices_per_node) for TRACE or --generate.",
)
@click.option(
    "--alibaba",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the Alibaba cluster-trace-gpu-v2023.",
)
@click.option(
    "--pods", default=None, help="Pod list inside --alibaba (default openb_pod_list_default.csv)."
)
@click.option(
    "--generate",
    "generate_jobs",
    type=click.IntRange(min=1),
    help="Generate N jobs (Acme-shaped) instead of reading a trace.",
)
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Devices of the generated cluster when --generate has no --cluster.",
)
@click.option("--tenants", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--load",
    type=click.FloatRange(min=0, min_open=True),
    default=0.9,
    show_default=True,
    help="Offered load of generated jobs (1 = cluster saturated).",
)
@click.option(
    "--policy",
    "policies",
    default=",".join(POLICIES),
    show_default=True,
    help="Comma-separated policies to compare (docs/simulator.md describes each).",
)
@click.option(
    "--error-sigma",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="σ of the lognormal run-time error of each job (mean 1).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Attempts per job before it gives up (retries after failures).",
)
@click.option(
    "--single-node-gangs/--multi-node-gangs",
    default=None,
    help="Keep every gang on one node (default: on for --alibaba, off otherwise).",
)
@click.option(
    "--moldable/--rigid",
    default=None,
    help="Let the cycle size moldable jobs (largest size that starts now), or run them at the "
    "largest size their range allows, under every policy; default: each policy's own "
    "(drf and corral size them).",
)
@click.option(
    "--checkpoint-interval-s",
    type=click.FloatRange(min=0, min_open=True),
    default=1800.0,
    show_default=True,
    help="Jobs checkpoint this often; a preempted job loses the work since its last one.",
)
@click.option(
    "--stop-delay-s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds a preempted job takes to stop after it is told to.",
)
@click.option(
    "--equal-quotas",
    "equal_quotas_",
    is_flag=True,
    help="Give every tenant an equal share of each accelerator type, all in one cohort "
    "(applied by corral: borrow idle shares, reclaim your own by preemption).",
)
@click.option(
    "--limit-jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Replay only the first N jobs (in arrival order, from --start-s).",
)
@click.option(
    "--start-s",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Replay only jobs arriving at or after this trace time.",
)
@click.option("--validate", is_flag=True, help="Check the invariants after every cycle.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a PNG of queue length and utilization over time.",
)
def sim(
    trace: Path | None,
    cluster_file: Path | None,
    alibaba: Path | None,
    pods: str | None,
    generate_jobs: int | None,
    devices: int,
    tenants: int,
    load: float,
    policies: str,
    error_sigma: float,
    seed: int,
    max_attempts: int,
    single_node_gangs: bool | None,
    moldable: bool | None,
    checkpoint_interval_s: float,
    stop_delay_s: float,
    equal_quotas_: bool,
    limit_jobs: int | None,
    start_s: float,
    validate: bool,
    plot: Path | None,
) -> None:
    """Replay a workload through the real scheduling cycle under each policy and compare.

    \b
      corral sim jobs.csv --cluster cluster.csv --policy fifo,priority
      corral sim --alibaba ../shared/data/traces/alibaba-gpu-2023 --plot alibaba.png
      corral sim --generate 500 --error-sigma 0.3 --seed 0 --validate --policy drf,corral
    """
    try:
        chosen = [policy_named(name.strip()) for name in policies.split(",") if name.strip()]
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--policy") from None
    if not chosen:
        raise click.UsageError("--policy needs at least one policy, e.g. fifo,priority")
    jobs, cluster, source = _workload(
        trace, cluster_file, alibaba, pods, generate_jobs, devices, tenants, load, seed
    )
    jobs = window(jobs, start_s, limit_jobs)
    if not jobs:
        raise click.UsageError(f"no job arrives at or after --start-s {start_s}")
    console.print(
        f"{source}; replaying {len(jobs)} jobs on {cluster.total_devices} devices "
        f"in {len(cluster.pools)} pools",
        highlight=False,
    )
    tenants_seen = sorted({job.tenant for job in jobs})
    config = SimConfig(
        truth=GroundTruth(job_sigma=error_sigma, seed=seed),
        max_attempts=max_attempts,
        validate=validate,
        single_node_gangs=alibaba is not None if single_node_gangs is None else single_node_gangs,
        moldable=moldable,
        quotas=equal_quotas(cluster.devices_by_accelerator(), tenants_seen)
        if equal_quotas_
        else Quotas(),
        checkpoint_interval_s=checkpoint_interval_s,
        stop_delay_s=stop_delay_s,
    )
    results = []
    for policy in chosen:
        simulator = Simulator(
            jobs, cluster, replace(config, policy=policy), timer=time.perf_counter
        )
        results.append(simulator.run())
    console.print(_table(results))
    for result in results:
        for line in notes(result):
            console.print(line, highlight=False)
    if validate:
        console.print("invariants held after every cycle", highlight=False)
    if plot is not None:
        console.print(f"plot: {plot_timelines(results, plot)}", highlight=False)
