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
from scheduler.domain.capabilities import check_backend_settings
from scheduler.domain.errors import ConflictError, NotFoundError
from scheduler.domain.state import LIVE_STATES
from scheduler.gangs.backend import NodeReport

NodeAction = Literal["cordon", "uncordon", "drain"]

TARGET_STATE: dict[NodeAction, str] = {"cordon": "cordoned", "uncordon": "ready",
                                       "drain": "draining"}

TFLOPS = 1e12


def add_pool(db: Database, name: str, backend: str, accelerator: str, nodes: int,
             devices_per_node: int, price_per_device_hour: float = 0.0,
             peak_tflops: float | None = None,
             backend_settings: dict[str, str] | None = None) -> None:
    """Register pool ``name`` with ``nodes`` nodes named ``name-0`` ... ; ConflictError if the
    pool or one of those node names exists, SpecError for settings its backend does not take
    (:func:`~scheduler.domain.capabilities.check_backend_settings`)."""
    settings = check_backend_settings(backend, backend_settings or {})
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
                          peak_flops=peak_tflops * TFLOPS if peak_tflops else None,
                          backend_settings=settings)
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


# --- pools whose machines a backend discovers (Ray) --------------------------------------------

INVENTORY_EVERY_S = 30.0
"""Seconds between two refreshes of discovered pools' nodes by the leading scheduler."""


def pool_name_for(prefix: str, accelerator: str) -> str:
    """``ray-h100`` for H100 nodes of a cluster synced with prefix ``ray``."""
    slug = "".join(c if c.isalnum() else "-" for c in accelerator.lower()).strip("-")
    return f"{prefix}-{slug or 'gpu'}"


def sync_pools(db: Database, backend: str, settings: dict[str, str],
               reports: list[NodeReport], prefix: str,
               cpu_peak_tflops: float | None = None) -> list[dict[str, Any]]:
    """Register or update one pool per accelerator type of the nodes a backend reports
    (``PREFIX-ACCELERATOR``); returns a row per node with what changed. A node no longer
    reported, or reported dead, goes ``down``; one back alive is ``ready`` again."""
    check_backend_settings(backend, settings)
    groups: dict[str, list[NodeReport]] = {}
    for report in reports:
        if report.devices >= 1:
            groups.setdefault(report.accelerator, []).append(report)
    rows: list[dict[str, Any]] = []
    with db.write() as session:
        for accelerator, nodes in sorted(groups.items()):
            name = pool_name_for(prefix, accelerator)
            pool = repo.get_pool(session, name)
            if pool is None:
                peak = cpu_peak_tflops * TFLOPS if cpu_peak_tflops and \
                    accelerator == "cpu" else None
                pool = repo.add_pool(session, name, backend, accelerator, nodes=0,
                                     devices_per_node=max(node.devices for node in nodes),
                                     node_names=[], peak_flops=peak,
                                     backend_settings=settings)
            elif pool.backend != backend or (pool.backend_settings or {}) != settings:
                raise ConflictError(f"pool {name!r} exists already for another backend or "
                                    f"cluster; sync with another --prefix")
            rows += [{"pool": name, **row} for row in _apply(session, pool, nodes)]
    return rows


def refresh(session: Any, pool: Pool, reports: list[NodeReport]) -> list[dict[str, Any]]:
    """Bring ``pool``'s nodes in line with what its backend reports now (the reports of its
    accelerator type); the rows of the nodes that changed."""
    mine = [report for report in reports
            if report.accelerator.lower() == pool.accelerator.lower() and report.devices >= 1]
    return [row for row in _apply(session, pool, mine) if row["change"] != "unchanged"]


def _apply(session: Any, pool: Pool, reports: list[NodeReport]) -> list[dict[str, Any]]:
    known = {node.name: node for node in pool.nodes}
    rows = []
    for report in reports:
        node = known.pop(report.name, None)
        state = "ready" if report.alive else "down"
        if node is None:
            if session.scalar(select(Node.id).where(Node.name == report.name)) is not None:
                raise ConflictError(f"node {report.name!r} is in another pool already")
            session.add(Node(pool_id=pool.id, name=report.name, devices=report.devices,
                             state=state))
            rows.append({"node": report.name, "devices": report.devices, "state": state,
                         "change": "added"})
            continue
        change = "unchanged"
        if node.devices != report.devices:
            node.devices, change = report.devices, "updated"
        if not report.alive and node.state != "down":
            node.state, change = "down", "down"
        elif report.alive and node.state == "down":
            node.state, change = "ready", "back"
        rows.append({"node": node.name, "devices": node.devices, "state": node.state,
                     "change": change})
    for node in known.values():  # no longer in the cluster
        if node.state != "down":
            node.state = "down"
            rows.append({"node": node.name, "devices": node.devices, "state": "down",
                         "change": "down"})
    pool.devices_per_node = max([pool.devices_per_node, *(r.devices for r in reports)])
    session.flush()
    return rows
