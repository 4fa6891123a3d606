"""The LLM workload generator: deterministic from its seed, and shaped like the Acme summary."""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from scheduler.sim import generator
from scheduler.sim.generator import (
    GeneratorConfig,
    catalog_speeds,
    generate,
    homogeneous_cluster,
    offered_load,
)
from scheduler.sim.workload import ClusterSpec, PoolSpec, TraceJob, TraceKind

ACME = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces" / "acme"
CLUSTER = homogeneous_cluster(512)


def config(**fields: object) -> GeneratorConfig:
    base = GeneratorConfig(jobs=3000, tenants=5, arrival_rate_per_s=0.05, cluster=CLUSTER, seed=7)
    return replace(base, **fields)  # type: ignore[arg-type]


def observed_run_s(job: TraceJob) -> float:
    """Run time on its largest gang at reference speed, cut short by its failure."""
    run_s = job.run_time_s(CLUSTER.pools[0].accelerator, job.max_devices)
    return min(run_s, job.fails_after_s) if job.fails_after_s is not None else run_s


@pytest.fixture(scope="module")
def jobs() -> tuple[TraceJob, ...]:
    return generate(config())


def test_the_same_seed_gives_the_same_jobs(jobs: tuple[TraceJob, ...]) -> None:
    assert generate(config()) == jobs
    assert generate(config(seed=8)) != jobs


def test_jobs_arrive_in_order_at_the_configured_rate(jobs: tuple[TraceJob, ...]) -> None:
    assert [job.job_id for job in jobs] == list(range(3000))
    arrivals = [job.arrival_s for job in jobs]
    assert arrivals == sorted(arrivals)
    assert arrivals[-1] / len(arrivals) == pytest.approx(1 / 0.05, rel=0.1)


def test_every_job_fits_one_pool_and_tenants_are_skewed(jobs: tuple[TraceJob, ...]) -> None:
    assert all(1 <= job.min_devices <= job.max_devices <= 512 for job in jobs)
    tenants = Counter(job.tenant for job in jobs)
    assert set(tenants) == {f"tenant-{i}" for i in range(5)}
    assert tenants["tenant-0"] > tenants["tenant-4"]


def test_few_pretraining_jobs_hold_most_device_time(jobs: tuple[TraceJob, ...]) -> None:
    device_s = sorted((observed_run_s(job) * job.max_devices for job in jobs), reverse=True)
    top = len(device_s) // 20
    assert sum(device_s[:top]) / sum(device_s) > 0.8  # top 5 % of jobs
    kinds = Counter(job.kind for job in jobs)
    assert kinds[TraceKind.EVAL] > 0.7 * len(jobs) > 20 * kinds[TraceKind.PRETRAIN] > 0


def test_shape_matches_the_acme_kalos_summary(jobs: tuple[TraceJob, ...]) -> None:
    assert statistics.median(job.max_devices for job in jobs) == generator.KALOS_MEDIAN_GPUS
    failing = sum(job.fails_after_s is not None for job in jobs) / len(jobs)
    assert failing == pytest.approx(generator.KALOS_FAIL_RATE, abs=0.03)
    median_run = statistics.median(observed_run_s(job) for job in jobs)
    assert (
        generator.KALOS_MEDIAN_RUN_TIME_S / 1.5
        < median_run
        < generator.KALOS_MEDIAN_RUN_TIME_S * 1.5
    )
    mean_run = statistics.mean(observed_run_s(job) for job in jobs)
    assert generator.KALOS_MEAN_RUN_TIME_S / 3 < mean_run < generator.KALOS_MEAN_RUN_TIME_S * 3
    assert max(observed_run_s(job) for job in jobs) <= generator.KALOS_MAX_RUN_TIME_S


@pytest.mark.skipif(
    not ACME.is_dir(),
    reason=f"the Acme summary is not at {ACME} (it lives in ../shared, absent from a user's clone)",
)
def test_constants_are_the_acme_summary_figures() -> None:
    with (ACME / "cluster_summary.csv").open(newline="") as stream:
        kalos = next(row for row in csv.DictReader(stream) if row["id"] == "Kalos")
    assert float(kalos["fail_rate_gpu"]) == generator.KALOS_FAIL_RATE
    assert float(kalos["max_run_time_gpu"]) == generator.KALOS_MAX_RUN_TIME_S
    assert float(kalos["med_run_time_gpu"]) == generator.KALOS_MEDIAN_RUN_TIME_S
    assert float(kalos["avg_run_time_gpu"]) == generator.KALOS_MEAN_RUN_TIME_S
    assert float(kalos["med_gpu_num"]) == generator.KALOS_MEDIAN_GPUS


def test_deadlines_and_constraints_when_asked() -> None:
    cluster = ClusterSpec((PoolSpec("a100", "A100-80G", 8, 8), PoolSpec("h100", "H100-SXM", 2, 8)))
    jobs = generate(
        config(cluster=cluster, deadline_fraction=0.5, constrained_fraction=0.5, jobs=1000)
    )
    with_deadline = [job for job in jobs if job.deadline_s is not None]
    assert 0.3 < len(with_deadline) / len(jobs) < 0.6
    assert all(job.kind is not TraceKind.PRETRAIN for job in with_deadline)
    pinned = [job for job in jobs if job.accelerators]
    assert 0.4 < len(pinned) / len(jobs) < 0.6
    assert all(job.max_devices <= cluster.largest_gang(job.accelerators) for job in pinned)
    assert jobs[0].speed_on("H100-SXM") == pytest.approx(989.4 / 312)


def test_speeds_come_from_the_catalog_or_default_to_one() -> None:
    cluster = ClusterSpec(
        (
            PoolSpec("a", "A100-80G", 1, 8),
            PoolSpec("b", "H100-SXM", 1, 8),
            PoolSpec("c", "G2", 1, 8),
        )
    )
    assert catalog_speeds(cluster) == pytest.approx(
        {"A100-80G": 1.0, "H100-SXM": 989.4 / 312, "G2": 1.0}
    )


def test_offered_load_scales_with_the_arrival_rate(jobs: tuple[TraceJob, ...]) -> None:
    faster = generate(config(arrival_rate_per_s=0.1))
    assert offered_load(faster, CLUSTER) == pytest.approx(2 * offered_load(jobs, CLUSTER), rel=0.2)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"tenants": 0}, "tenants must be >= 1"),
        ({"arrival_rate_per_s": 0.0}, "arrival_rate_per_s must be > 0"),
        ({"fail_rate": 1.5}, "fail_rate must be in [0, 1]"),
        ({"deadline_slack": (0.5, 2.0)}, "deadline_slack"),
    ],
)
def test_bad_configs_say_which_rule_failed(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        config(**fields)
