"""The cluster's inventory as an admin changes it: add a pool, list nodes, cordon, uncordon or
drain a node.

Each change is one write transaction. A node that is not ``ready`` takes no new gangs (the
snapshot marks it unschedulable); draining also tells every live job holding a device on it to
checkpoint and stop, so the leading scheduler's next tick requeues it elsewhere.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from scheduler.db import repo
from scheduler.db.models import Allocation, Job, Node, Pool
from scheduler.db.session import Database
from scheduler.domain.errors import ConflictError, NotFoundError
from scheduler.domain.state import LIVE_STATES

NodeAction = Literal["cordon", "uncordon", "drain"]

TARGET_STATE: dict[NodeAction, str] = {"cordon": "cordoned", "uncordon": "ready",
                                       "drain": "draining"}

TFLOPS = 1e12


def add_pool(db: Database, name: str, backend: str, accelerator: str, nodes: int,
             devices_per_node: int, price_per_device_hour: float = 0.0,
             peak_tflops: float | None = None) -> None:
    """Register pool ``name`` with ``nodes`` nodes named ``name-0`` ... ; ConflictError if the
    pool or one of those node names exists."""
    try:
        with db.write() as session:
            if repo.get_pool(session, name) is not None:
                raise ConflictError(f"pool {name!r} exists already; pick another name")
            names = [f"{name}-{index}" for index in range(nodes)]
            taken = list(session.scalars(select(Node.name).where(Node.name.in_(names))))
            if taken:
                raise ConflictError(f"node {taken[0]!r} exists already in another pool; pick "
                                    f"another pool name")
            repo.add_pool(session, name, backend, accelerator, nodes=nodes,
                          devices_per_node=devices_per_node,
                          price_per_device_hour=price_per_device_hour, node_names=names,
                          peak_flops=peak_tflops * TFLOPS if peak_tflops else None)
    except IntegrityError:
        # Another admin added the same pool between our check and our commit.
        raise ConflictError(f"pool {name!r} exists already; pick another name") from None


def list_nodes(db: Database, pool: str | None = None) -> list[dict[str, Any]]:
    """Every node (of ``pool`` when given) with its state; NotFoundError for an unknown pool."""
    with db.read() as session:
        query = (select(Node, Pool.name).join(Pool, Pool.id == Node.pool_id)
                 .order_by(Pool.name, Node.id))
        if pool is not None:
            if repo.get_pool(session, pool) is None:
                raise NotFoundError(f"no pool named {pool!r}; GET /v1/pools lists them")
            query = query.where(Pool.name == pool)
        return [_node_row(node, pool_name) for node, pool_name in session.execute(query)]


def set_node_state(db: Database, name: str, action: NodeAction) -> dict[str, Any]:
    """Cordon (no new gangs), uncordon (ready again) or drain (no new gangs, and the live jobs
    on it checkpoint and stop) node ``name``; returns the node as listed."""
    target = TARGET_STATE[action]
    with db.write() as session:
        found = session.execute(
            select(Node, Pool.name).join(Pool, Pool.id == Node.pool_id)
            .where(Node.name == name).with_for_update(of=Node)).first()
        if found is None:
            raise NotFoundError(f"no node named {name!r}; GET /v1/nodes lists them")
        node, pool_name = found
        if node.state == "down" and action == "uncordon":
            raise ConflictError(f"node {name} is down (no heartbeat); it becomes ready when "
                                f"its backend reports it again")
        node.state = target
        if action == "drain":
            _stop_jobs_on(session, node)
        session.flush()
        return _node_row(node, pool_name)


def _stop_jobs_on(session: Any, node: Node) -> None:
    """Ask every live job holding a device of ``node`` to checkpoint and stop (preemption)."""
    holders = select(Allocation.job_id).where(Allocation.node_id == node.id,
                                              Allocation.released_at.is_(None))
    jobs = session.scalars(
        select(Job).where(Job.id.in_(holders),
                          Job.state.in_([state.value for state in LIVE_STATES]))
        .order_by(Job.id).with_for_update())
    for job in jobs:
        if job.preempt_requested or job.cancel_requested:
            continue
        job.preempt_requested = True
        repo.note(session, job, f"node {node.name} is draining: checkpoint and stop; the job "
                                f"requeues on other nodes", {"node": node.name})


def _node_row(node: Node, pool: str) -> dict[str, Any]:
    return {"name": node.name, "pool": pool, "devices": node.devices, "state": node.state}
