"""The Alibaba 2023 GPU trace reader, on a synthetic fixture and (where present) the real trace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scheduler.sim.alibaba import read_alibaba, read_nodes
from scheduler.sim.workload import TraceError, TraceKind

TRACE = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces" / "alibaba-gpu-2023"

NODES = """sn,cpu_milli,memory_mib,gpu,model
node-0,64000,262144,2,P100
node-1,64000,262144,2,P100
node-2,96000,786432,8,V100M16
node-3,96000,393216,4,V100M16
node-4,96000,393216,0,CPU
node-5,96000,786432,8,G2
"""
POD_HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
)
PODS = (
    POD_HEADER
    + """pod-0,12000,16384,1,1000,,LS,Running,0,1000,10
pod-1,6000,12288,0,0,,BE,Running,5,100,5
pod-2,6000,12288,1,460,P100,BE,Succeeded,20,520,20
pod-3,6000,12288,8,1000,V100M16|G2|V100M16,Guaranteed,Failed,30,130,40
pod-4,6000,12288,1,1000,,Burstable,Pending,50,60,
pod-5,6000,12288,2,1000,,LS,Running,60,2000,100
"""
)


def write_fixture(folder: Path, pods: str = PODS, nodes: str = NODES) -> Path:
    (folder / "openb_node_list_gpu_node.csv").write_text(nodes)
    (folder / "openb_pod_list_default.csv").write_text(pods)
    return folder


def test_nodes_become_pools_by_model_and_gpus_per_node(tmp_path: Path) -> None:
    cluster = read_nodes(write_fixture(tmp_path) / "openb_node_list_gpu_node.csv")
    assert [(p.name, p.accelerator, p.nodes, p.devices_per_node) for p in cluster.pools] == [
        ("P100-2gpu", "P100", 2, 2),
        ("V100M16-8gpu", "V100M16", 1, 8),
        ("V100M16-4gpu", "V100M16", 1, 4),
        ("G2-8gpu", "G2", 1, 8),
    ]
    assert cluster.devices_by_accelerator() == {"P100": 4, "V100M16": 12, "G2": 8}


def test_pods_become_jobs_and_the_rest_is_counted(tmp_path: Path) -> None:
    trace = read_alibaba(write_fixture(tmp_path))
    jobs = {job.name: job for job in trace.jobs}
    assert sorted(jobs) == ["pod-0", "pod-2", "pod-3", "pod-5"]
    first = jobs["pod-0"]
    assert (first.job_id, first.arrival_s, first.work_s) == (0, 0.0, 990.0)
    assert (first.tenant, first.priority, first.kind) == ("LS", 2, TraceKind.OTHER)
    assert first.rigid and first.min_devices == 1 and first.accelerators == ()
    assert first.fails_after_s is None
    # A fractional GPU is rounded up to a whole device and keeps its type constraint.
    assert (jobs["pod-2"].min_devices, jobs["pod-2"].accelerators) == (1, ("P100",))
    # A failed gang fails after its observed duration; gpu_spec is deduplicated and sorted.
    failed = jobs["pod-3"]
    assert (failed.min_devices, failed.work_s, failed.fails_after_s) == (8, 90.0 * 8, 90.0)
    assert (failed.accelerators, failed.tenant, failed.priority) == (
        ("G2", "V100M16"),
        "Guaranteed",
        3,
    )
    report = trace.report
    assert (report.tasks, report.gpu_tasks, report.jobs) == (6, 5, 4)
    assert (report.skipped_cpu_only, report.skipped_never_scheduled) == (1, 1)
    assert (report.fractional_rounded_up, report.failed, report.censored) == (1, 1, 1)
    assert report.gang_sizes == {1: 2, 2: 1, 8: 1}
    assert report.last_deletion_s == 2000.0


def test_options_skip_fractional_and_failed_pods(tmp_path: Path) -> None:
    folder = write_fixture(tmp_path)
    trace = read_alibaba(folder, fractional="skip", failures="skip")
    assert [job.name for job in trace.jobs] == ["pod-0", "pod-5"]
    assert (trace.report.skipped_fractional, trace.report.skipped_failed) == (1, 1)
    replayed = read_alibaba(folder, failures="complete")
    assert all(job.fails_after_s is None for job in replayed.jobs)


def test_work_uses_the_expected_speed_over_allowed_types(tmp_path: Path) -> None:
    trace = read_alibaba(write_fixture(tmp_path), speeds={"V100M16": 2.0, "G2": 4.0})
    jobs = {job.name: job for job in trace.jobs}
    # pod-3 may use V100M16 (12 devices) or G2 (8): expected speed (12·2 + 8·4) / 20 = 2.8.
    assert jobs["pod-3"].work_s == pytest.approx(90 * 8 * 2.8)
    # pod-0 may use any type: P100 has 4 devices at speed 1 → (4 + 24 + 32) / 24 = 2.5.
    assert jobs["pod-0"].work_s == pytest.approx(990 * 2.5)
    assert jobs["pod-0"].speed_on("G2") == 4.0 and jobs["pod-0"].speed_on("P100") == 1.0


@pytest.mark.parametrize(
    ("pods", "line", "field", "fragment"),
    [
        (POD_HEADER + "p,1,1,1,1000,,LS,Running,0,x,0\n", 2, "deletion_time", "integer"),
        (POD_HEADER + "p,1,1,1,1000,,VIP,Running,0,9,0\n", 2, "qos", "expected one of Guaranteed"),
        (
            POD_HEADER + "p,1,1,1,1000,A100,LS,Running,0,9,0\n",
            2,
            "gpu_spec",
            "not in the node list",
        ),
        (
            POD_HEADER + "p,1,1,1,1000,,LS,Running,0,9,0\nq,1,1,1,1000,,LS,Running,5,9,3\n",
            3,
            "deletion_time",
            "creation_time <= scheduled_time < deletion_time",
        ),
        (POD_HEADER + "p,1,1,1,1500,,LS,Running,0,9,0\n", 2, "gpu_milli", "in 1..1000"),
        (
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,1,1000\n",
            1,
            "qos",
            "has no times or qos",
        ),
    ],
)
def test_bad_pod_lists_name_line_and_field(
    tmp_path: Path, pods: str, line: int, field: str, fragment: str
) -> None:
    with pytest.raises(TraceError, match=re.escape(fragment)) as caught:
        read_alibaba(write_fixture(tmp_path, pods=pods))
    assert (caught.value.line, caught.value.field) == (line, field)
    assert "openb_pod_list_default.csv" in str(caught.value)


def test_unknown_speed_types_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="types not in the cluster: H100"):
        read_alibaba(write_fixture(tmp_path), speeds={"H100": 3.0})


@pytest.mark.skipif(
    not TRACE.is_dir(),
    reason=f"the Alibaba 2023 trace is not at {TRACE} "
    "(it lives in ../shared, absent from a user's clone)",
)
def test_real_trace_counts() -> None:
    trace = read_alibaba(TRACE)
    assert sum(pool.nodes for pool in trace.cluster.pools) == 1213
    assert trace.cluster.total_devices == 6212
    assert trace.cluster.devices_by_accelerator() == {
        "P100": 265,
        "G3": 312,
        "V100M32": 204,
        "V100M16": 195,
        "G2": 4392,
        "T4": 842,
        "A10": 2,
    }
    report = trace.report
    assert (report.tasks, report.gpu_tasks) == (8152, 7064)
    assert (report.skipped_cpu_only, report.skipped_never_scheduled) == (1088, 861)
    assert report.jobs == len(trace.jobs) == 6203
    assert report.gang_sizes == {1: 6129, 2: 15, 4: 15, 8: 44}
    assert (report.fractional_rounded_up, report.failed, report.censored) == (2573, 1869, 32)
    constrained = read_alibaba(TRACE, "openb_pod_list_gpuspec33.csv")
    assert sum(1 for job in constrained.jobs if job.accelerators) == 2092
