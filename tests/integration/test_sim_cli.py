"""`corral sim` as a user types it: a real process, real CSV files, a real PNG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from api.cli.sim import sim
from scheduler.sim.trace_csv import write_cluster, write_trace
from scheduler.sim.workload import ClusterSpec, PoolSpec, TraceJob

CORRAL = [sys.executable, "-m", "api.cli"]
ALIBABA = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces" / "alibaba-gpu-2023"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_sim_compares_policies_on_a_generated_workload(tmp_path: Path) -> None:
    plot = tmp_path / "timeline.png"
    done = subprocess.run(
        [*CORRAL, "sim", "--generate", "60", "--devices", "16", "--load", "1.5",
         "--policy", "fifo,priority,las,drf,gavel,corral", "--equal-quotas",
         "--error-sigma", "0.3", "--seed", "0", "--validate", "--plot", str(plot)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "60 generated jobs (seed 0" in out
    for header in ("policy", "mean JCT", "p99 queue", "makespan", "util", "Jain", "FTF max",
                   "deadlines", "preempt", "cycle p50 ms", "jobs/wall-s"):  # fmt: skip
        assert header in out
    names = ("fifo", "priority", "las", "drf", "gavel", "corral")
    rows = [line for line in out.splitlines() if line.startswith(tuple(f"│ {n} " for n in names))]
    assert len(rows) == 6 and all("60/60" in row for row in rows)
    assert "invariants held after every cycle" in out
    assert plot.read_bytes().startswith(PNG_SIGNATURE)


def test_sim_replays_a_trace_file(tmp_path: Path) -> None:
    trace, cluster = tmp_path / "jobs.csv", tmp_path / "cluster.csv"
    write_cluster(cluster, ClusterSpec((PoolSpec("p", "A100-80G", 1, 2),)))
    write_trace(trace, [
        TraceJob.build(0, 0.0, "a", 2, 20.0),
        TraceJob.build(1, 1.0, "a", 1, 5.0),
        TraceJob.build(2, 2.0, "b", 2, 4.0, priority=5),
        TraceJob.build(3, 3.0, "b", 4, 4.0),  # larger than the cluster: rejected
    ])  # fmt: skip
    result = CliRunner().invoke(sim, [str(trace), "--cluster", str(cluster), "--limit-jobs", "4"])
    assert result.exit_code == 0, result.output
    assert "replaying 4 jobs on 2 devices in 1 pools" in result.output
    assert "1 jobs rejected at submit" in result.output
    # Every policy finishes 3 of the 4 jobs; FIFO ends at 17 s, as does priority.
    assert result.output.count("3/4") == 6 and "17.0 s" in result.output


def test_sim_says_how_to_fix_its_arguments(tmp_path: Path) -> None:
    runner = CliRunner()
    none = runner.invoke(sim, [])
    assert none.exit_code == 2 and "give exactly one workload" in none.output
    bare = runner.invoke(sim, [str(tmp_path / "jobs.csv")])
    assert bare.exit_code == 2 and "needs --cluster" in bare.output
    unknown = runner.invoke(sim, ["--generate", "5", "--policy", "sjf"])
    assert unknown.exit_code == 2
    assert "known: corral, drf, fifo, gavel, las, priority" in unknown.output


@pytest.mark.skipif(not ALIBABA.is_dir(), reason=f"no Alibaba trace at {ALIBABA}")
def test_sim_replays_the_start_of_the_alibaba_trace() -> None:
    result = CliRunner().invoke(
        sim, ["--alibaba", str(ALIBABA), "--limit-jobs", "300", "--policy", "priority"]
    )
    assert result.exit_code == 0, result.output
    assert "Alibaba 2023 alibaba-gpu-2023: 6203 of 8152 pods" in result.output
    assert "replaying 300 jobs on 6212 devices in 12 pools" in result.output
    assert "300/300" in result.output
