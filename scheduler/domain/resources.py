"""Pools, nodes and free devices as the scheduling cycle sees them: immutable snapshot values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from scheduler.domain.capabilities import capabilities_of
from scheduler.domain.plan import PlanPins
from scheduler.domain.spec import JobSpec


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node of a pool and which of its device indexes are free right now."""

    node_id: int
    name: str
    devices: int
    free_devices: tuple[int, ...]
    schedulable: bool = True


@dataclass(frozen=True, slots=True)
class PoolView:
    """One pool: a set of like nodes behind one backend and one accelerator type."""

    pool_id: int
    name: str
    backend: str
    accelerator: str
    devices_per_node: int
    price_per_device_hour: float = 0.0
    nodes: tuple[NodeView, ...] = field(default_factory=tuple)
    peak_flops: float | None = None
    """Peak FLOP/s per device overriding the catalog's (measured for CPU pools)."""

    @property
    def total_devices(self) -> int:
        return sum(node.devices for node in self.nodes)

    @property
    def multi_node(self) -> bool:
        """Whether a gang on this pool may span nodes (its backend's capability)."""
        return capabilities_of(self.backend).multi_node

    @property
    def free_devices(self) -> int:
        return sum(len(node.free_devices) for node in self.nodes if node.schedulable)


@dataclass(frozen=True, slots=True)
class PendingJobView:
    """What the cycle needs to know about one pending job."""

    job_id: int
    name: str
    tenant: str
    priority: int
    submitted_seq: int
    """Monotone submission order (the job id); ties in priority go to the older job."""
    pool: str | None
    accelerator: str | None
    devices: int | None
    """None means ``auto``: the cycle chooses."""
    global_batch: int
    micro_batch: int | None
    precision: str
    kind: str = "pretrain"
    seq_len: int = 0
    total_steps: int = 0
    model_profile: dict[str, float] | None = None
    """Fields of the cost model's ModelProfile; None plans data parallel without prediction."""
    deadline_s: float | None = None
    """Seconds from this snapshot to the job's deadline (negative once passed)."""
    budget_usd: float | None = None
    device_range: tuple[int, int] | None = None
    """A moldable job's (min, max) devices; ``devices`` is None then."""
    waited_s: float = 0.0
    """Seconds since it was submitted or last requeued (fair share ages it)."""
    attained_device_s: float = 0.0
    """Device-seconds its earlier attempts ran (least-attained-service order)."""
    last_run_s: float = 0.0
    """Seconds its last attempt ran (0 if none)."""
    pins: PlanPins | None = None
    """What its ``parallelism:`` section fixes of the plan."""

    @classmethod
    def from_spec(cls, job_id: int, spec: JobSpec, priority: int | None = None,
                  model_profile: dict[str, float] | None = None,
                  deadline_s: float | None = None, **history: float) -> PendingJobView:
        """The cycle's view of a job with this spec (``priority`` overrides the spec's;
        ``history``: waited_s, attained_device_s, last_run_s)."""
        micro_batch = spec.batch.micro_batch
        return cls(
            job_id=job_id, name=spec.name, tenant=spec.tenant,
            priority=spec.resources.priority if priority is None else priority,
            submitted_seq=job_id, pool=spec.resources.pool,
            accelerator=spec.resources.accelerator,
            devices=spec.planned_devices,
            global_batch=spec.batch.global_batch,
            micro_batch=None if micro_batch == "auto" else micro_batch,
            precision=spec.precision, kind=spec.kind.value, seq_len=spec.data.seq_len,
            total_steps=spec.total_steps(), model_profile=model_profile,
            deadline_s=deadline_s, budget_usd=spec.budget_usd,
            device_range=spec.resources.device_range, pins=spec.pins, **history,
        )


@dataclass(frozen=True, slots=True)
class RunningJobView:
    """What preemption needs to know about one job that holds devices."""

    job_id: int
    tenant: str
    priority: int
    pool_id: int
    accelerator: str
    devices_by_node: tuple[tuple[int, int], ...]
    """(node id, devices held on it)."""
    seconds_since_checkpoint: float
    """Seconds of work lost if stopped now: since its last checkpoint, or since it started."""
    borrowed: bool = False
    """Its tenant holds more than its nominal quota of this accelerator
    (:func:`scheduler.policies.quota.borrowing_flags`)."""
    name: str = ""
    predicted_end_s: float | None = None
    """Seconds from the snapshot until the cost model expects it to end (None: unknown)."""
    device_ids: tuple[tuple[int, int], ...] = ()
    """The exact (node id, device index) pairs it holds."""
    preempting: bool = False
    """Already told to checkpoint and stop: its devices are about to be free."""

    @property
    def devices(self) -> int:
        return sum(count for _, count in self.devices_by_node)

    @property
    def work_lost_device_s(self) -> float:
        return self.devices * self.seconds_since_checkpoint

    def with_borrowed(self, borrowed: bool) -> RunningJobView:
        return replace(self, borrowed=borrowed)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cluster at the start of one cycle: pools with free devices, and the pending jobs."""

    pools: tuple[PoolView, ...]
    pending: tuple[PendingJobView, ...]
    calibration: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    """Measured efficiency η by (accelerator, strategy, job kind): the cost model's input."""
    running: tuple[RunningJobView, ...] = ()
    """Every job that holds devices: quota usage, preemption victims, backfill's shadow time."""
    tenant_shares: Mapping[str, float] = field(default_factory=dict)
    """Each tenant's weighted dominant share of decayed usage (fair-share order)."""

    def calibrated_for(self, kind: str) -> dict[tuple[str, str], float]:
        """η by (accelerator, strategy) measured on jobs of ``kind``."""
        return calibrated_for(self.calibration, kind)


def calibrated_for(table: Mapping[tuple[str, str, str], float], kind: str
                   ) -> dict[tuple[str, str], float]:
    """The rows of a calibration table measured on jobs of ``kind``, by (accelerator, strategy)."""
    return {(accelerator, strategy): eta
            for (accelerator, strategy, of_kind), eta in table.items() if of_kind == kind}
