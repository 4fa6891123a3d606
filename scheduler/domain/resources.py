"""Pools, nodes and free devices as the scheduling cycle sees them: immutable snapshot values."""

from __future__ import annotations

from dataclasses import dataclass, field

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

    @property
    def total_devices(self) -> int:
        return sum(node.devices for node in self.nodes)

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

    @classmethod
    def from_spec(cls, job_id: int, spec: JobSpec, priority: int | None = None,
                  model_profile: dict[str, float] | None = None) -> PendingJobView:
        """The cycle's view of a job with this spec (``priority`` overrides the spec's)."""
        devices = spec.resources.devices
        micro_batch = spec.batch.micro_batch
        return cls(
            job_id=job_id, name=spec.name, tenant=spec.tenant,
            priority=spec.resources.priority if priority is None else priority,
            submitted_seq=job_id, pool=spec.resources.pool,
            accelerator=spec.resources.accelerator,
            devices=None if devices == "auto" else devices,
            global_batch=spec.batch.global_batch,
            micro_batch=None if micro_batch == "auto" else micro_batch,
            precision=spec.precision, kind=spec.kind.value, seq_len=spec.data.seq_len,
            total_steps=spec.total_steps(), model_profile=model_profile,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cluster at the start of one cycle: pools with free devices, and the pending jobs."""

    pools: tuple[PoolView, ...]
    pending: tuple[PendingJobView, ...]
