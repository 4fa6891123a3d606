"""Placement: which pools can serve a request, how many devices, and which exact devices.

A gang is placed whole or not at all. Within a pool we prefer one node, choosing the node that
fits the gang most tightly (best fit keeps large holes for large gangs); a gang spans several
nodes only when its backend can run multi-node gangs, and then uses as few nodes as possible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.cost.planner import auto_gang_sizes
from scheduler.domain.errors import UnschedulableError
from scheduler.domain.resources import NodeView, PendingJobView, PoolView

DeviceList = tuple[tuple[int, int], ...]
"""(node id, device index) pairs."""


def matching_pools(pools: Sequence[PoolView], pool: str | None,
                   accelerator: str | None) -> list[PoolView]:
    """Pools whose name and accelerator agree with the request (None matches anything)."""
    return [
        view for view in pools
        if (pool is None or view.name == pool)
        and (accelerator is None or view.accelerator.lower() == accelerator.lower())
    ]


def max_gang(pool: PoolView) -> int:
    """The largest gang this pool could ever run."""
    if not pool.multi_node:
        return max((node.devices for node in pool.nodes), default=0)
    return pool.total_devices


def devices_for(job: PendingJobView, pool: PoolView) -> int:
    """Gang size on ``pool``: the request, or for ``auto`` one full node trimmed so that the
    global batch splits evenly over the data-parallel ranks."""
    if job.devices is not None:
        return job.devices
    count = min(pool.devices_per_node, max_gang(pool), job.global_batch)
    while count > 1 and job.global_batch % count:
        count -= 1
    return max(count, 1)


def gang_shapes(job: PendingJobView, pool: PoolView) -> list[int]:
    """Gang sizes the job may take on ``pool``, largest first: its count; for ``auto``, the
    sizes ``corral plan`` weighs (:func:`~scheduler.cost.planner.auto_gang_sizes`) when the
    cost model can predict them, else one node; for a moldable job every count in its range
    the pool can run. Each splits the global batch (and the per-device batch by its
    micro-batch) evenly."""
    if job.device_range is None:
        if job.devices is None and predicted(job):
            sizes = [count for count in auto_gang_sizes(job.global_batch, max_gang(pool))
                     if _splits(job, count)]
            return sorted(sizes, reverse=True) or [devices_for(job, pool)]
        return [devices_for(job, pool)]
    low, high = job.device_range
    return [count for count in range(min(high, max_gang(pool)), low - 1, -1)
            if _splits(job, count)]


def predicted(job: PendingJobView) -> bool:
    """Whether the cost model plans this job (it knows its model, and the job trains)."""
    return job.model_profile is not None and bool(job.model_profile.get("trains", True))


def _splits(job: PendingJobView, count: int) -> bool:
    return job.global_batch % count == 0 and (
        job.micro_batch is None or (job.global_batch // count) % job.micro_batch == 0)


def place_gang(pool: PoolView, count: int) -> DeviceList | None:
    """Exact devices for a gang of ``count`` on ``pool`` now, or None if it does not fit."""
    ready = [node for node in pool.nodes if node.schedulable and node.free_devices]
    fitting = [node for node in ready if len(node.free_devices) >= count]
    if fitting:
        best = min(fitting, key=lambda node: (len(node.free_devices), node.node_id))
        return tuple((best.node_id, device) for device in best.free_devices[:count])
    if not pool.multi_node:
        return None
    chosen: list[tuple[int, int]] = []
    for node in sorted(ready, key=lambda node: (-len(node.free_devices), node.node_id)):
        take = min(count - len(chosen), len(node.free_devices))
        chosen.extend((node.node_id, device) for device in node.free_devices[:take])
        if len(chosen) == count:
            return tuple(chosen)
    return None


def nodes_spanned(devices: DeviceList) -> int:
    return len({node_id for node_id, _ in devices})


def check_schedulable(job: PendingJobView, pools: Sequence[PoolView]) -> None:
    """Raise :class:`UnschedulableError` if no pool could *ever* run the job, saying what to
    change. Called at submit, before anything is stored."""
    if not pools:
        raise UnschedulableError("this cluster has no pools; add one with `corral pools add`")
    if job.pool is not None and not any(p.name == job.pool for p in pools):
        names = ", ".join(sorted(p.name for p in pools))
        raise UnschedulableError(
            f"resources.pool: unknown pool {job.pool!r}; known pools: {names}"
        )
    if job.accelerator is not None and not any(
        p.accelerator.lower() == job.accelerator.lower() for p in pools
    ):
        kinds = ", ".join(sorted({p.accelerator for p in pools}))
        raise UnschedulableError(
            f"resources.accelerator: no pool has accelerator {job.accelerator!r}; "
            f"available: {kinds}"
        )
    candidates = matching_pools(pools, job.pool, job.accelerator)
    if not candidates:
        raise UnschedulableError(
            f"no pool named {job.pool!r} has accelerator {job.accelerator!r}; drop one of "
            f"resources.pool or resources.accelerator"
        )
    largest = max(candidates, key=max_gang)
    if job.device_range is not None:
        if not any(gang_shapes(job, pool) for pool in candidates):
            low, high = job.device_range
            raise UnschedulableError(
                f"resources.devices: no count from {low} to {high} splits global_batch "
                f"{job.global_batch} evenly and fits a matching pool (largest gang "
                f"{max_gang(largest)} on {largest.name!r}); widen the range or change the batch"
            )
        return
    if job.devices is not None and job.devices > max_gang(largest):
        raise UnschedulableError(
            f"resources.devices: asks for {job.devices} devices, but the largest matching pool "
            f"{largest.name!r} can run a gang of at most {max_gang(largest)}; ask for at most "
            f"{max_gang(largest)} or use devices: auto"
        )
    count = job.devices if job.devices is not None else devices_for(job, largest)
    if job.global_batch % count:
        raise UnschedulableError(
            f"batch.global_batch {job.global_batch} does not split evenly over {count} "
            f"data-parallel devices; use a multiple of {count}"
        )
    per_rank = job.global_batch // count
    if job.micro_batch is not None and per_rank % job.micro_batch:
        raise UnschedulableError(
            f"batch.micro_batch {job.micro_batch} does not divide the per-device batch "
            f"{per_rank} (= global_batch {job.global_batch} / {count} devices); pick a divisor "
            f"of {per_rank}"
        )


SUMMARY_NODES = 4
"""Pools with more nodes are summarised in pending reasons, not listed node by node."""


def free_summary(nodes: Sequence[NodeView]) -> str:
    """``"node-0: 1/8 free, node-1: 0/8 free"`` for pending reasons; a large pool in totals:
    ``"12/10000 free on 1250 nodes, at most 4 on one node"``."""
    if len(nodes) <= SUMMARY_NODES:
        return ", ".join(f"{n.name}: {len(n.free_devices)}/{n.devices} free" for n in nodes)
    ready = [node for node in nodes if node.schedulable]
    free = sum(len(node.free_devices) for node in ready)
    largest = max((len(node.free_devices) for node in ready), default=0)
    return (f"{free}/{sum(node.devices for node in nodes)} free on {len(nodes)} nodes, "
            f"at most {largest} on one node")


@dataclass(frozen=True, slots=True)
class FreeView:
    """What a pool has free, summed once (the cycle keeps one per pool and renews it only
    when it admits there): lets a gang that cannot fit be told so without a node scan."""

    total: int
    largest_on_a_node: int
    summary: str

    @classmethod
    def of(cls, pool: PoolView) -> FreeView:
        ready = [node for node in pool.nodes if node.schedulable]
        return cls(sum(len(node.free_devices) for node in ready),
                   max((len(node.free_devices) for node in ready), default=0),
                   free_summary(pool.nodes))

    def could_fit(self, pool: PoolView, count: int) -> bool:
        """False only when ``place_gang(pool, count)`` is sure to return None."""
        if not pool.multi_node:
            return count <= self.largest_on_a_node
        return count <= self.total
