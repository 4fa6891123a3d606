"""The simulator's neutral trace format: values, CSV round trips, and errors that name the spot."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scheduler.sim.trace_csv import (
    TRACE_COLUMNS,
    format_cluster,
    format_trace,
    parse_cluster,
    parse_trace,
    read_cluster,
    read_trace,
    write_cluster,
    write_trace,
)
from scheduler.sim.workload import ClusterSpec, PoolSpec, TraceError, TraceJob, TraceKind

ROOT = Path(__file__).resolve().parents[2]


def make_trace_job(job_id: int = 0, **fields: object) -> TraceJob:
    values: dict[str, object] = {
        "job_id": job_id,
        "arrival_s": 10.0,
        "tenant": "research",
        "devices": 4,
        "work_s": 400.0,
    }
    values.update(fields)
    return TraceJob.build(**values)  # type: ignore[arg-type]


JOBS = (
    make_trace_job(0),
    make_trace_job(
        1,
        arrival_s=0.1 + 0.2,
        devices=(8, 64),
        kind="pretrain",
        priority=2,
        accelerators=["H100-SXM", "A100-80G", "H100-SXM"],
        speeds={"H100-SXM": 989.4 / 312, "A100-80G": 1.0},
        scaling_exponent=0.95,
        deadline_s=1e7,
        name="llama, 7b",
    ),
    make_trace_job(
        2, tenant="product", kind=TraceKind.EVAL, fails_after_s=12.5, work_s=1 / 3, priority=-1
    ),
)
CLUSTER = ClusterSpec((PoolSpec("a100", "A100-80G", 16, 8), PoolSpec("h100", "H100-SXM", 4, 8)))


def test_run_time_follows_the_scaling_law() -> None:
    job = make_trace_job(
        devices=(4, 16), work_s=1600.0, scaling_exponent=0.5, speeds={"H100-SXM": 2.0}
    )
    assert job.run_time_s("A100-80G", 4) == pytest.approx(1600 / 2)
    assert job.run_time_s("A100-80G", 16) == pytest.approx(1600 / 4)
    assert job.run_time_s("H100-SXM", 16) == pytest.approx(1600 / 4 / 2)
    assert not job.rigid


def test_run_time_refuses_shapes_outside_the_job() -> None:
    job = make_trace_job(devices=(2, 4), accelerators=["A100-80G"])
    with pytest.raises(ValueError, match="runs on 2..4 devices, not 8"):
        job.run_time_s("A100-80G", 8)
    with pytest.raises(ValueError, match="may run on A100-80G, not T4"):
        job.run_time_s("T4", 2)


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"devices": 0}, "min_devices", "must be >= 1"),
        ({"devices": (8, 4)}, "max_devices", "must be >= min_devices = 8, got 4"),
        ({"work_s": 0.0}, "work_s", "must be > 0"),
        ({"arrival_s": -1.0}, "arrival_s", "must be >= 0"),
        ({"tenant": ""}, "tenant", "non-empty"),
        ({"tenant": "a|b"}, "tenant", "may not contain"),
        ({"scaling_exponent": 0.0}, "scaling_exponent", "in (0, 1.5]"),
        ({"speeds": {"T4": -1.0}}, "speeds", "speed of T4 must be > 0"),
        ({"deadline_s": 5.0}, "deadline_s", "must be >= arrival_s = 10.0"),
        ({"fails_after_s": 0.0}, "fails_after_s", "must be > 0"),
    ],
)
def test_invalid_jobs_name_the_field(fields: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(TraceError, match=re.escape(fragment)) as caught:
        make_trace_job(**fields)
    assert caught.value.field == field


def test_trace_round_trips_through_csv_exactly(tmp_path: Path) -> None:
    assert parse_trace(format_trace(JOBS)) == JOBS
    path = tmp_path / "jobs.csv"
    write_trace(path, JOBS)
    assert read_trace(path) == JOBS
    assert path.read_text().splitlines()[0] == ",".join(TRACE_COLUMNS)


def test_cluster_round_trips_through_csv(tmp_path: Path) -> None:
    path = tmp_path / "cluster.csv"
    write_cluster(path, CLUSTER)
    assert read_cluster(path) == CLUSTER
    assert parse_cluster(format_cluster(CLUSTER)).total_devices == 160


def test_optional_columns_take_their_defaults() -> None:
    (job,) = parse_trace("work_s,max_devices,min_devices,tenant,arrival_s,job_id\n50,2,1,t,0,7\n")
    assert job == TraceJob(
        job_id=7, arrival_s=0.0, tenant="t", min_devices=1, max_devices=2, work_s=50.0
    )
    assert job.kind is TraceKind.OTHER and job.speed_on("anything") == 1.0


HEADER = "job_id,arrival_s,tenant,min_devices,max_devices,work_s,kind,speeds,accelerators\n"


@dataclass(frozen=True)
class BadFile:
    name: str
    text: str
    line: int
    field: str
    fragment: str


BAD_FILES = [
    BadFile("empty file", "", 1, "header", "the file is empty"),
    BadFile("unknown column", "job_id,arival_s\n", 1, "arival_s", "unknown column 'arival_s'"),
    BadFile(
        "missing column",
        "job_id,arrival_s,min_devices,max_devices,work_s\n",
        1,
        "tenant",
        "required column missing",
    ),
    BadFile("column twice", "job_id,job_id\n", 1, "job_id", "column named twice"),
    BadFile(
        "not a number",
        HEADER + "0,0,t,1,1,10,,,\n1,0,t,1,1,ten,,,\n",
        3,
        "work_s",
        "expected a number, got 'ten'",
    ),
    BadFile(
        "empty required cell",
        HEADER + "0,,t,1,1,10,,,\n",
        2,
        "arrival_s",
        "is required, got an empty cell",
    ),
    BadFile("infinite", HEADER + "0,inf,t,1,1,10,,,\n", 2, "arrival_s", "finite"),
    BadFile("too few cells", HEADER + "0,0,t,1\n", 2, "row", "expected 9 cells"),
    BadFile("bad kind", HEADER + "0,0,t,1,1,10,train,,\n", 2, "kind", "expected one of pretrain"),
    BadFile("bad speeds", HEADER + "0,0,t,1,1,10,,T4:2,\n", 2, "speeds", "TYPE=SPEED"),
    BadFile("speed twice", HEADER + "0,0,t,1,1,10,,T4=2|T4=3,\n", 2, "speeds", "listed twice"),
    BadFile("empty accelerator", HEADER + "0,0,t,1,1,10,,,T4|\n", 2, "accelerators", "empty name"),
    BadFile(
        "range upside down",
        HEADER + "0,0,t,8,4,10,,,\n",
        2,
        "max_devices",
        "must be >= min_devices = 8",
    ),
    BadFile(
        "duplicate id",
        HEADER + "0,0,t,1,1,10,,,\n\n0,5,t,1,1,10,,,\n",
        4,
        "job_id",
        "appears twice",
    ),
]


@pytest.mark.parametrize("case", BAD_FILES, ids=lambda case: case.name)
def test_bad_trace_files_name_line_and_field(case: BadFile) -> None:
    with pytest.raises(TraceError, match=re.escape(case.fragment)) as caught:
        parse_trace(case.text, source="jobs.csv")
    error = caught.value
    assert (error.line, error.field) == (case.line, case.field)
    assert str(error).startswith(f"jobs.csv, line {case.line}, field {case.field}: ")


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [
        ("pool,accelerator,nodes\n", 1, "devices_per_node", "required column missing"),
        ("pool,accelerator,nodes,devices_per_node\na,T4,0,2\n", 2, "nodes", "needs >= 1 node"),
        ("pool,accelerator,nodes,devices_per_node\na,T4,1,x\n", 2, "devices_per_node", "integer"),
        (
            "pool,accelerator,nodes,devices_per_node\na,T4,1,2\na,A10,1,1\n",
            None,
            "pool",
            "repeated: a",
        ),
        ("pool,accelerator,nodes,devices_per_node\n", None, "pool", "at least one pool"),
    ],
)
def test_bad_cluster_files_name_the_field(
    text: str, line: int | None, field: str, fragment: str
) -> None:
    with pytest.raises(TraceError, match=re.escape(fragment)) as caught:
        parse_cluster(text, source="cluster.csv")
    assert (caught.value.line, caught.value.field) == (line, field)
    assert "cluster.csv" in str(caught.value)


def test_cluster_views_have_every_device_free() -> None:
    views = CLUSTER.pool_views()
    assert [(v.pool_id, v.name, v.accelerator, v.free_devices) for v in views] == [
        (1, "a100", "A100-80G", 128),
        (2, "h100", "H100-SXM", 32),
    ]
    node_ids = [node.node_id for view in views for node in view.nodes]
    assert node_ids == list(range(1, 21))
    assert CLUSTER.largest_gang() == 128 and CLUSTER.largest_gang(("H100-SXM",)) == 32
    assert CLUSTER.largest_gang(("T4",)) == 0


def test_the_documented_examples_parse() -> None:
    doc = (ROOT / "docs" / "simulator-trace-format.md").read_text()
    blocks = re.findall(r"```csv\n(.*?)```", doc, flags=re.DOTALL)
    assert len(blocks) == 2
    jobs = parse_trace(blocks[0], "doc")
    assert [job.job_id for job in jobs] == [0, 1, 2]
    assert jobs[0].run_time_s("H100-SXM", 64) < jobs[0].run_time_s("A100-80G", 64)
    assert parse_cluster(blocks[1], "doc").total_devices == 160


def test_the_simulator_package_reads_no_clock() -> None:
    """No wall clock, no I/O frameworks: the simulator's time is the one it is given."""
    forbidden = {"time", "datetime", "torch", "sqlalchemy"}
    for path in sorted((ROOT / "scheduler" / "sim").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
