"""Reader for the Alibaba 2023 heterogeneous GPU trace (``cluster-trace-gpu-v2023``).

Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation
Gradient Descent", USENIX ATC 2023; alibaba/clusterdata. The trace is read in place, never
copied. How its columns become our neutral format (docs/simulator-trace-format.md):

Nodes (``openb_node_list_gpu_node.csv``: ``sn, cpu_milli, memory_mib, gpu, model``)
    One pool per ``(model, gpu)`` pair, named ``{model}-{gpu}gpu``: our pools hold identical
    nodes, and a model's nodes differ in GPU count (V100M16 nodes hold 1, 4 or 8). CPU and host
    memory are not scheduled by Corral and are dropped; nodes with 0 GPUs are skipped.

Pods (``openb_pod_list_*.csv``: ``name, cpu_milli, memory_mib, num_gpu, gpu_milli, gpu_spec,
qos, pod_phase, creation_time, deletion_time, scheduled_time``), one :class:`TraceJob` each:

- ``arrival_s = creation_time`` (the trace's clock starts at 0).
- ``num_gpu`` is the rigid gang size (``min = max``). 0-GPU (CPU-only) pods are skipped and
  counted. A fractional pod (``num_gpu = 1`` and ``gpu_milli < 1000``: it shares one GPU) is
  rounded up to one whole device (``fractional="round_up"``: Corral never shares a device), or
  skipped (``fractional="skip"``); either way it is counted.
- Duration: ``deletion_time - scheduled_time`` seconds. Pods never scheduled (``Pending``, empty
  ``scheduled_time``) have no duration and are skipped and counted. Pods still running when the
  trace ends (``deletion_time`` = the last deletion time) are kept; their duration is a lower
  bound, counted as ``censored``.
- Work: the pod list does not say which node (hence GPU type) a pod ran on. We take the
  expected speed of its device if it was placed in proportion to each allowed type's device
  count: ``work_s = duration × num_gpu × Σ_t share_t × speed_t`` over the allowed types ``t``.
  With the default speeds (every type 1.0, because the trace's undisclosed G1/G2/G3 types
  cannot be ranked) this is simply ``duration × num_gpu``: the pod's GPU-seconds.
- ``gpu_spec`` (``|``-separated allowed models, empty = any) becomes ``accelerators``.
- ``qos`` becomes both the tenant (the class's own name) and the priority: Guaranteed 3,
  LS (latency-sensitive) 2, Burstable 1, BE (best-effort) 0.
- ``pod_phase = Failed``: with ``failures="inject"`` the job fails after its observed duration
  (``fails_after_s = duration``); ``"complete"`` replays it as a success; ``"skip"`` drops it.
- ``kind = other``: the trace does not say what a pod does.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from scheduler.sim.workload import ClusterSpec, PoolSpec, TraceError, TraceJob, TraceKind

NODE_FILE = "openb_node_list_gpu_node.csv"
POD_FILE = "openb_pod_list_default.csv"
NODE_COLUMNS = ("sn", "gpu", "model")
POD_COLUMNS = (
    "name",
    "num_gpu",
    "gpu_milli",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)
"""Pod columns the reader needs; ``gpu_spec`` is optional (absent = no constraint)."""
QOS_PRIORITY = {"Guaranteed": 3, "LS": 2, "Burstable": 1, "BE": 0}
MILLI_PER_GPU = 1000


@dataclass(frozen=True, slots=True)
class AlibabaReport:
    """What the reader kept, skipped and changed, so a replay can be judged against the trace."""

    tasks: int
    """Pods in the file."""
    jobs: int
    """Pods that became jobs."""
    skipped_cpu_only: int
    skipped_never_scheduled: int
    skipped_fractional: int
    skipped_failed: int
    fractional_rounded_up: int
    failed: int
    """Jobs from pods that failed (fail injected, or replayed as successes)."""
    censored: int
    """Jobs still running when the trace ends: their duration is a lower bound."""
    first_arrival_s: float
    last_arrival_s: float
    last_deletion_s: float
    gang_sizes: dict[int, int] = field(default_factory=dict)
    """Jobs per gang size."""
    by_qos: dict[str, int] = field(default_factory=dict)
    """Jobs per qos class."""

    @property
    def gpu_tasks(self) -> int:
        return self.tasks - self.skipped_cpu_only


@dataclass(frozen=True, slots=True)
class AlibabaTrace:
    cluster: ClusterSpec
    jobs: tuple[TraceJob, ...]
    report: AlibabaReport


def _rows(path: Path, needed: tuple[str, ...], hint: str) -> list[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        header = reader.fieldnames or []
        missing = [column for column in needed if column not in header]
        if missing:
            raise TraceError(
                missing[0],
                f"column missing (missing: {', '.join(missing)}; "
                f"found: {', '.join(header) or 'nothing'}){hint}",
                line=1,
                source=str(path),
            )
        return [(reader.line_num, row) for row in reader]


def _int(row: dict[str, str], column: str) -> int:
    text = (row.get(column) or "").strip()
    try:
        return int(text)
    except ValueError:
        raise TraceError(column, f"expected an integer, got {text!r}") from None


def read_nodes(path: Path | str) -> ClusterSpec:
    """Pools of the node list: one per ``(model, gpu count)``, in first-seen order."""
    path = Path(path)
    counts: Counter[tuple[str, int]] = Counter()
    for line, row in _rows(path, NODE_COLUMNS, ""):
        try:
            gpus = _int(row, "gpu")
            model = (row["model"] or "").strip()
            if not model:
                raise TraceError("model", "GPU model is empty")
            if gpus < 0:
                raise TraceError("gpu", f"GPU count must be >= 0, got {gpus}")
        except TraceError as error:
            raise error.at(line, str(path)) from None
        if gpus > 0:
            counts[(model, gpus)] += 1
    if not counts:
        raise TraceError("gpu", "no node with GPUs", source=str(path))
    return ClusterSpec(
        tuple(
            PoolSpec(f"{model}-{gpus}gpu", model, nodes, gpus)
            for (model, gpus), nodes in counts.items()
        )
    )


def _expected_speed(
    allowed: tuple[str, ...], capacity: Mapping[str, int], speeds: Mapping[str, float]
) -> float:
    """Speed of the device a pod ran on, averaged over its allowed types by device count."""
    types = allowed or tuple(capacity)
    total = sum(capacity[t] for t in types)
    return sum(capacity[t] * speeds.get(t, 1.0) for t in types) / total


@dataclass(frozen=True, slots=True)
class _PodRules:
    """How pods become jobs (see the module docstring); ``convert`` applies them to one row."""

    capacity: Mapping[str, int]
    speeds: Mapping[str, float]
    fractional: Literal["round_up", "skip"]
    failures: Literal["inject", "complete", "skip"]
    last_deletion: int

    def convert(self, index: int, row: dict[str, str]) -> tuple[TraceJob | None, tuple[str, ...]]:
        """The job of one pod (None when skipped) and tags saying what was done to it."""
        gpus, milli = _int(row, "num_gpu"), _int(row, "gpu_milli")
        if gpus == 0:
            return None, ("skipped_cpu_only",)
        if gpus < 0 or not 0 < milli <= MILLI_PER_GPU:
            raise TraceError(
                "gpu_milli",
                f"expected num_gpu >= 1 with gpu_milli in 1..1000, got {gpus} and {milli}",
            )
        if not (row.get("scheduled_time") or "").strip():
            return None, ("skipped_never_scheduled",)
        tags: list[str] = []
        if milli < MILLI_PER_GPU:
            if self.fractional == "skip":
                return None, ("skipped_fractional",)
            tags.append("fractional_rounded_up")
        phase = (row.get("pod_phase") or "").strip()
        if phase == "Failed":
            if self.failures == "skip":
                return None, ("skipped_failed",)
            tags.append("failed")
        created, scheduled = _int(row, "creation_time"), _int(row, "scheduled_time")
        deletion = _int(row, "deletion_time")
        if not created <= scheduled < deletion:
            raise TraceError(
                "deletion_time",
                f"expected creation_time <= scheduled_time < deletion_time, "
                f"got {created}, {scheduled}, {deletion}",
            )
        if deletion == self.last_deletion:
            tags.append("censored")
        qos = (row.get("qos") or "").strip()
        if qos not in QOS_PRIORITY:
            raise TraceError("qos", f"expected one of {', '.join(QOS_PRIORITY)}, got {qos!r}")
        spec = row.get("gpu_spec") or ""
        allowed = tuple(sorted({name.strip() for name in spec.split("|") if name.strip()}))
        absent = [name for name in allowed if name not in self.capacity]
        if absent:
            raise TraceError("gpu_spec", f"GPU types not in the node list: {', '.join(absent)}")
        duration = deletion - scheduled
        work = duration * gpus * _expected_speed(allowed, self.capacity, self.speeds)
        job = TraceJob(
            job_id=index,
            name=row["name"],
            arrival_s=float(created),
            tenant=qos,
            priority=QOS_PRIORITY[qos],
            kind=TraceKind.OTHER,
            min_devices=gpus,
            max_devices=gpus,
            accelerators=allowed,
            work_s=float(work),
            speeds=tuple(sorted(self.speeds.items())),
            fails_after_s=float(duration)
            if "failed" in tags and self.failures == "inject"
            else None,
        )
        return job, tuple(tags)


def read_pods(
    path: Path | str,
    cluster: ClusterSpec,
    *,
    speeds: Mapping[str, float] | None = None,
    fractional: Literal["round_up", "skip"] = "round_up",
    failures: Literal["inject", "complete", "skip"] = "inject",
) -> tuple[tuple[TraceJob, ...], AlibabaReport]:
    """Jobs of a pod list and a report of what was skipped; see the module docstring."""
    path = Path(path)
    rows = _rows(
        path,
        POD_COLUMNS,
        "; openb_pod_list_multigpu50.csv has no times or qos, "
        "read openb_pod_list_default.csv or _gpuspec33.csv",
    )
    capacity = cluster.devices_by_accelerator()
    unknown_speeds = sorted(set(speeds or {}) - set(capacity))
    if unknown_speeds:
        raise TraceError("speeds", f"types not in the cluster: {', '.join(unknown_speeds)}")
    last_deletion = 0
    for line, row in rows:
        if (row.get("deletion_time") or "").strip():
            try:
                last_deletion = max(last_deletion, _int(row, "deletion_time"))
            except TraceError as error:
                raise error.at(line, str(path)) from None
    rules = _PodRules(capacity, dict(speeds or {}), fractional, failures, last_deletion)
    tags: Counter[str] = Counter()
    jobs: list[TraceJob] = []
    for index, (line, row) in enumerate(rows):
        try:
            job, done = rules.convert(index, row)
        except TraceError as error:
            raise error.at(line, str(path)) from None
        tags.update(done)
        if job is not None:
            jobs.append(job)
    arrivals = [job.arrival_s for job in jobs] or [0.0]
    report = AlibabaReport(
        tasks=len(rows),
        jobs=len(jobs),
        skipped_cpu_only=tags["skipped_cpu_only"],
        skipped_never_scheduled=tags["skipped_never_scheduled"],
        skipped_fractional=tags["skipped_fractional"],
        skipped_failed=tags["skipped_failed"],
        fractional_rounded_up=tags["fractional_rounded_up"],
        failed=tags["failed"],
        censored=tags["censored"],
        first_arrival_s=min(arrivals),
        last_arrival_s=max(arrivals),
        last_deletion_s=float(last_deletion),
        gang_sizes=dict(sorted(Counter(job.min_devices for job in jobs).items())),
        by_qos=dict(Counter(job.tenant for job in jobs).most_common()),
    )
    return tuple(jobs), report


def read_alibaba(
    folder: Path | str,
    pods: str = POD_FILE,
    *,
    speeds: Mapping[str, float] | None = None,
    fractional: Literal["round_up", "skip"] = "round_up",
    failures: Literal["inject", "complete", "skip"] = "inject",
) -> AlibabaTrace:
    """The cluster and jobs of the trace in ``folder`` (``pods`` names the pod list)."""
    folder = Path(folder)
    cluster = read_nodes(folder / NODE_FILE)
    jobs, report = read_pods(
        folder / pods, cluster, speeds=speeds, fractional=fractional, failures=failures
    )
    return AlibabaTrace(cluster, jobs, report)
