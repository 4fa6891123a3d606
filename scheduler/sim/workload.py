"""The simulator's neutral workload: jobs of a trace and the cluster they run on.

Every trace the simulator replays — a public one (Alibaba 2023, through ``alibaba.py``), a
generated one (``generator.py``) or a hand-written fixture — becomes a tuple of :class:`TraceJob`
and one :class:`ClusterSpec`. ``trace_csv.py`` reads and writes them as CSV; the format is
documented in ``docs/simulator-trace-format.md``.

Work is measured in *reference-device-seconds*: how long the job runs on ONE device of the
trace's reference type (speed 1.0). On ``n`` devices of a type with relative speed ``s`` the job
runs for::

    run_time_s = work_s / (n ** scaling_exponent × s)

so ``scaling_exponent = 1`` is linear (perfect) scaling, smaller values are sub-linear.

Errors::

    CorralError
    └── TraceError     a trace value or file is invalid; names the field (and line, from a file)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from scheduler.domain.errors import CorralError
from scheduler.domain.resources import NodeView, PoolView

NAME_FORBIDDEN = frozenset("|=")
"""Characters the CSV format uses to separate list items; accelerator names may not hold them."""


class TraceError(CorralError):
    """An invalid trace value; ``field`` names it and ``line`` its line in a file (1 = header)."""

    def __init__(
        self, field: str, message: str, *, line: int | None = None, source: str | None = None
    ) -> None:
        self.field = field
        self.line = line
        self.source = source
        self.reason = message
        where = ", ".join(
            part
            for part in (source, f"line {line}" if line is not None else None, f"field {field}")
            if part
        )
        super().__init__(f"{where}: {message}")

    def at(self, line: int, source: str | None = None) -> TraceError:
        """The same error, located at ``line`` of ``source``."""
        return TraceError(self.field, self.reason, line=line, source=source or self.source)


class TraceKind(StrEnum):
    """What a job does; ``other`` is for traces that do not say (Alibaba)."""

    PRETRAIN = "pretrain"
    FINETUNE = "finetune"
    COMPRESS = "compress"
    EVAL = "eval"
    OTHER = "other"


def _check_name(field_name: str, value: str) -> None:
    if not value or value != value.strip():
        raise TraceError(field_name, f"must be a non-empty name without edge spaces, got {value!r}")
    if NAME_FORBIDDEN & set(value):
        raise TraceError(field_name, f"may not contain '|' or '=', got {value!r}")


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a trace: when it arrives, what it may run on, and how much work it is."""

    job_id: int
    arrival_s: float
    """Seconds since the trace's origin."""
    tenant: str
    min_devices: int
    max_devices: int
    """The gang may be any size in ``[min_devices, max_devices]`` (moldable); equal = rigid."""
    work_s: float
    """Reference-device-seconds: the run time on ONE device of speed 1.0."""
    priority: int = 0
    kind: TraceKind = TraceKind.OTHER
    accelerators: tuple[str, ...] = ()
    """Allowed accelerator types, sorted; empty = any."""
    scaling_exponent: float = 1.0
    """``α`` in ``run_time = work / (devices^α × speed)``; 1 = linear scaling."""
    speeds: tuple[tuple[str, float], ...] = ()
    """``(accelerator, speed relative to the reference)``, sorted; unlisted types run at 1.0."""
    deadline_s: float | None = None
    """Absolute trace time by which the job should have finished; None = no deadline."""
    fails_after_s: float | None = None
    """Injected failure: an attempt that has run this many seconds fails, unless it finished
    strictly earlier."""
    name: str = ""
    """The job's name in its source trace (e.g. an Alibaba pod name); informative only."""

    def __post_init__(self) -> None:
        if self.job_id < 0:
            raise TraceError("job_id", f"must be >= 0, got {self.job_id}")
        if not self.arrival_s >= 0:
            raise TraceError("arrival_s", f"must be >= 0 seconds, got {self.arrival_s}")
        _check_name("tenant", self.tenant)
        if self.min_devices < 1:
            raise TraceError("min_devices", f"must be >= 1, got {self.min_devices}")
        if self.max_devices < self.min_devices:
            raise TraceError(
                "max_devices",
                f"must be >= min_devices = {self.min_devices}, got {self.max_devices}",
            )
        if not self.work_s > 0:
            raise TraceError("work_s", f"must be > 0 reference-device-seconds, got {self.work_s}")
        if not 0 < self.scaling_exponent <= 1.5:
            raise TraceError(
                "scaling_exponent", f"must be in (0, 1.5], got {self.scaling_exponent}"
            )
        for accelerator in self.accelerators:
            _check_name("accelerators", accelerator)
        if list(self.accelerators) != sorted(set(self.accelerators)):
            raise TraceError(
                "accelerators",
                f"must be sorted and distinct (use TraceJob.build), got {self.accelerators}",
            )
        for accelerator, speed in self.speeds:
            _check_name("speeds", accelerator)
            if not speed > 0:
                raise TraceError("speeds", f"speed of {accelerator} must be > 0, got {speed}")
        if [a for a, _ in self.speeds] != sorted({a for a, _ in self.speeds}):
            raise TraceError(
                "speeds",
                f"must be sorted by accelerator and distinct (use "
                f"TraceJob.build), got {self.speeds}",
            )
        if self.deadline_s is not None and not self.deadline_s >= self.arrival_s:
            raise TraceError(
                "deadline_s", f"must be >= arrival_s = {self.arrival_s}, got {self.deadline_s}"
            )
        if self.fails_after_s is not None and not self.fails_after_s > 0:
            raise TraceError("fails_after_s", f"must be > 0 seconds, got {self.fails_after_s}")

    @classmethod
    def build(
        cls,
        job_id: int,
        arrival_s: float,
        tenant: str,
        devices: int | tuple[int, int],
        work_s: float,
        *,
        accelerators: tuple[str, ...] | list[str] = (),
        speeds: Mapping[str, float] | None = None,
        kind: TraceKind | str = TraceKind.OTHER,
        priority: int = 0,
        scaling_exponent: float = 1.0,
        deadline_s: float | None = None,
        fails_after_s: float | None = None,
        name: str = "",
    ) -> TraceJob:
        """A job from loose values: ``devices`` is a count or a ``(min, max)`` range, and
        ``accelerators`` and ``speeds`` are normalised (sorted, deduplicated)."""
        low, high = (devices, devices) if isinstance(devices, int) else devices
        return cls(
            job_id=job_id,
            arrival_s=arrival_s,
            tenant=tenant,
            min_devices=low,
            max_devices=high,
            work_s=work_s,
            priority=priority,
            kind=TraceKind(kind),
            accelerators=tuple(sorted(set(accelerators))),
            scaling_exponent=scaling_exponent,
            speeds=tuple(sorted((speeds or {}).items())),
            deadline_s=deadline_s,
            fails_after_s=fails_after_s,
            name=name,
        )

    @property
    def rigid(self) -> bool:
        return self.min_devices == self.max_devices

    def allows(self, accelerator: str) -> bool:
        """Whether the job may run on ``accelerator``."""
        return not self.accelerators or accelerator in self.accelerators

    def speed_on(self, accelerator: str) -> float:
        """Speed of one ``accelerator`` device relative to the reference (1.0 when unlisted)."""
        return dict(self.speeds).get(accelerator, 1.0)

    def run_time_s(self, accelerator: str, devices: int) -> float:
        """The noiseless run time on ``devices`` devices of ``accelerator``, in seconds.

        ``work_s / (devices ** scaling_exponent × speed)``; ``groundtruth.py`` adds the error.
        """
        if not self.min_devices <= devices <= self.max_devices:
            raise ValueError(
                f"job {self.job_id} runs on {self.min_devices}..{self.max_devices} "
                f"devices, not {devices}"
            )
        if not self.allows(accelerator):
            raise ValueError(
                f"job {self.job_id} may run on {', '.join(self.accelerators)}, not {accelerator}"
            )
        return self.work_s / (math.pow(devices, self.scaling_exponent) * self.speed_on(accelerator))


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """One pool of identical nodes: ``nodes × devices_per_node`` devices of one accelerator."""

    name: str
    accelerator: str
    nodes: int
    devices_per_node: int

    def __post_init__(self) -> None:
        _check_name("pool", self.name)
        _check_name("accelerator", self.accelerator)
        if self.nodes < 1:
            raise TraceError("nodes", f"pool {self.name} needs >= 1 node, got {self.nodes}")
        if self.devices_per_node < 1:
            raise TraceError(
                "devices_per_node",
                f"pool {self.name} needs >= 1 device per node, got {self.devices_per_node}",
            )

    @property
    def devices(self) -> int:
        return self.nodes * self.devices_per_node


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """The simulated cluster: its pools, with distinct names."""

    pools: tuple[PoolSpec, ...]
    by_name: dict[str, PoolSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.pools:
            raise TraceError("pool", "a cluster needs at least one pool")
        names = [pool.name for pool in self.pools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise TraceError(
                "pool", f"pool names must be distinct; repeated: {', '.join(duplicates)}"
            )
        object.__setattr__(self, "by_name", {pool.name: pool for pool in self.pools})

    @property
    def total_devices(self) -> int:
        return sum(pool.devices for pool in self.pools)

    def devices_by_accelerator(self) -> dict[str, int]:
        """Total devices of each accelerator type, in first-seen order."""
        totals: dict[str, int] = {}
        for pool in self.pools:
            totals[pool.accelerator] = totals.get(pool.accelerator, 0) + pool.devices
        return totals

    def largest_gang(self, accelerators: tuple[str, ...] = ()) -> int:
        """The most devices one gang can hold (a gang lives in one pool); 0 if none allowed."""
        return max(
            (
                pool.devices
                for pool in self.pools
                if not accelerators or pool.accelerator in accelerators
            ),
            default=0,
        )

    def pool_views(self, backend: str = "sim") -> tuple[PoolView, ...]:
        """The scheduling cycle's view of this cluster with every device free.

        Pool ids count from 1 in order; node ids count from 1 across the whole cluster.
        """
        views = []
        node_id = 1
        for pool_id, pool in enumerate(self.pools, start=1):
            nodes = []
            for index in range(pool.nodes):
                nodes.append(
                    NodeView(
                        node_id=node_id,
                        name=f"{pool.name}-{index}",
                        devices=pool.devices_per_node,
                        free_devices=tuple(range(pool.devices_per_node)),
                    )
                )
                node_id += 1
            views.append(
                PoolView(
                    pool_id=pool_id,
                    name=pool.name,
                    backend=backend,
                    accelerator=pool.accelerator,
                    devices_per_node=pool.devices_per_node,
                    nodes=tuple(nodes),
                )
            )
        return tuple(views)
