"""The simulated cluster's devices: which job holds each one, and the cycle's view of them.

The simulator's stand-in for the service's Allocation table. :meth:`ClusterState.allocate`
checks every admission it applies (the database's unique constraint does that in the service);
:meth:`ClusterState.check` verifies the whole state, for the engine's ``validate`` mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from scheduler.domain.errors import CorralError
from scheduler.domain.resources import NodeView, PoolView
from scheduler.policies.placement import DeviceList
from scheduler.sim.workload import ClusterSpec, PoolSpec


class InvariantError(CorralError):
    """The simulated cluster broke a rule (a device given twice, a job pending and running):
    a bug in the cycle, a policy or the engine, never in the trace."""


@dataclass(slots=True)
class NodeState:
    """One node: its free device indexes and who holds the others (mutable, engine-owned)."""

    pool_id: int
    index: int
    """Position in its pool's node list."""
    view: NodeView
    """The cycle's view of the node, rebuilt at the next :meth:`ClusterState.pool_views`."""
    free: set[int]
    held: dict[int, int]
    """Device index -> the job holding it."""


class ClusterState:
    """Devices of ``cluster``: free or held, with the cycle's view rebuilt only where changed."""

    def __init__(self, cluster: ClusterSpec, backend: str) -> None:
        self.cluster = cluster
        views = cluster.pool_views(backend)
        self.static_pools: tuple[PoolView, ...] = views
        """Every pool with every device free: for submit-time checks."""
        self._pools = {view.pool_id: view for view in views}
        self._specs: dict[int, PoolSpec] = dict(zip(self._pools, cluster.pools, strict=True))
        self.nodes = {
            node.node_id: NodeState(view.pool_id, index, node, set(node.free_devices), {})
            for view in views
            for index, node in enumerate(view.nodes)
        }
        self._node_views = {view.pool_id: list(view.nodes) for view in views}
        self._changed: set[int] = set()
        self.free_devices = cluster.total_devices
        self.free_by_accelerator = cluster.devices_by_accelerator()

    @property
    def busy_devices(self) -> int:
        return self.cluster.total_devices - self.free_devices

    def spec(self, pool_id: int) -> PoolSpec:
        return self._specs[pool_id]

    def pool_views(self) -> tuple[PoolView, ...]:
        """Every pool with the free device indexes of each node, as ``repo.load_pool_views``
        gives them to the service (ascending)."""
        changed_pools = set()
        for node_id in self._changed:
            node = self.nodes[node_id]
            node.view = replace(node.view, free_devices=tuple(sorted(node.free)))
            self._node_views[node.pool_id][node.index] = node.view
            changed_pools.add(node.pool_id)
        self._changed.clear()
        for pool_id in changed_pools:
            nodes = tuple(self._node_views[pool_id])
            self._pools[pool_id] = replace(self._pools[pool_id], nodes=nodes)
        return tuple(self._pools.values())

    def allocate(
        self, job_id: int, gang: tuple[int, int], pool_id: int, devices: DeviceList, world: int
    ) -> None:
        """Give ``devices`` of ``pool_id`` to the job, after checking the admission: its pool
        exists, its devices are in it, free and distinct, as many as its plan's ``world`` size,
        and within its ``gang`` range (min, max)."""
        pool = self._pools.get(pool_id)
        if pool is None:
            raise InvariantError(f"job #{job_id} admitted on unknown pool id {pool_id}")
        low, high = gang
        if not (len(devices) == world and low <= world <= high):
            asked = f"{low}" if low == high else f"{low} to {high}"
            raise InvariantError(
                f"job #{job_id} asks for a gang of {asked}, admitted with {len(devices)} "
                f"devices and a plan of world size {world}"
            )
        if len(set(devices)) != len(devices):
            raise InvariantError(f"job #{job_id} admitted with a device listed twice: {devices}")
        for node_id, device in devices:
            node = self.nodes.get(node_id)
            if node is None or node.pool_id != pool_id or not 0 <= device < node.view.devices:
                raise InvariantError(
                    f"job #{job_id} admitted on device ({node_id}, {device}), which is not in "
                    f"pool {pool.name}"
                )
            if device in node.held:
                raise InvariantError(
                    f"device ({node_id}, {device}) allocated twice: to job #{job_id} while job "
                    f"#{node.held[device]} holds it"
                )
            if device not in node.free:
                raise InvariantError(
                    f"device ({node_id}, {device}) given to job #{job_id} is neither free nor held"
                )
        for node_id, device in devices:
            node = self.nodes[node_id]
            node.free.remove(device)
            node.held[device] = job_id
            self._changed.add(node_id)
        self.free_devices -= len(devices)
        self.free_by_accelerator[self._specs[pool_id].accelerator] -= len(devices)

    def release(self, pool_id: int, devices: DeviceList) -> None:
        """Free ``devices`` of ``pool_id``."""
        for node_id, device in devices:
            node = self.nodes[node_id]
            del node.held[device]
            node.free.add(device)
            self._changed.add(node_id)
        self.free_devices += len(devices)
        self.free_by_accelerator[self._specs[pool_id].accelerator] += len(devices)

    def check(self, held_by_job: Mapping[int, DeviceList]) -> None:
        """Raise :class:`InvariantError` unless ``held_by_job`` (the running jobs' devices) and
        the nodes agree: no device held twice, free + held = total on every node, the counters
        right."""
        holder: dict[tuple[int, int], int] = {}
        for job_id, devices in held_by_job.items():
            for device in devices:
                other = holder.setdefault(device, job_id)
                if other != job_id:
                    raise InvariantError(
                        f"device {device} allocated twice: jobs #{other} and #{job_id}"
                    )
                node_id, index = device
                if self.nodes[node_id].held.get(index) != job_id:
                    raise InvariantError(
                        f"job #{job_id} runs on device {device}, which the node does not record "
                        f"as held by it"
                    )
        free_total = 0
        for node_id, node in self.nodes.items():
            name, total = node.view.name, node.view.devices
            both = node.free & node.held.keys()
            if both:
                raise InvariantError(
                    f"node {name}: devices {sorted(both)} are both free and allocated"
                )
            if len(node.free) + len(node.held) != total or not (
                node.free | node.held.keys()
            ) <= set(range(total)):
                raise InvariantError(
                    f"node {name}: free {len(node.free)} + allocated {len(node.held)} != "
                    f"total {total}"
                )
            if any((node_id, index) not in holder for index in node.held):
                raise InvariantError(f"node {name} holds devices for no running job")
            free_total += len(node.free)
        if free_total != self.free_devices:
            raise InvariantError(
                f"free device count {self.free_devices} disagrees with the nodes ({free_total})"
            )
        by_accelerator: dict[str, int] = dict.fromkeys(self.free_by_accelerator, 0)
        for node in self.nodes.values():
            by_accelerator[self._specs[node.pool_id].accelerator] += len(node.free)
        if by_accelerator != self.free_by_accelerator:
            raise InvariantError(
                f"free devices by accelerator {self.free_by_accelerator} disagree with the "
                f"nodes ({by_accelerator})"
            )
