"""The cluster: pools (list, add) and nodes (list, cordon, uncordon, drain)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.admin_schemas import (
    NodeList,
    NodePublic,
    PoolCreate,
    PoolList,
    PoolPublic,
    PoolSync,
    SyncedNodeList,
)
from api.deps import AdminDep, PrincipalDep, ServiceDep
from api.routes import AUTHED, errors
from api.schemas import NAME_PATTERN, project
from scheduler import inventory

router = APIRouter(prefix="/v1", tags=["cluster"])

NodeName = Annotated[str, Path(min_length=1, max_length=128, pattern=NAME_PATTERN)]


@router.get("/pools", response_model=PoolList, responses=errors(*AUTHED))
def list_pools(_principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    """Every pool with its free and total devices and the peak FLOP/s the cost model uses."""
    return {"items": [project(PoolPublic, row) for row in service.pools()]}


@router.post("/pools", status_code=201, response_model=PoolPublic,
             responses=errors(*AUTHED, 403, 409))
def add_pool(body: PoolCreate, _admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Register a pool of like nodes (admin)."""
    service.add_pool(body.name, body.backend, body.accelerator, body.nodes,
                     body.devices_per_node, body.price_per_device_hour, body.peak_tflops,
                     body.backend_settings)
    row = next(row for row in service.pools() if row["name"] == body.name)
    return project(PoolPublic, row)


@router.post("/pools/sync", response_model=SyncedNodeList,
             responses=errors(*AUTHED, 403, 409, 503))
def sync_pools(body: PoolSync, _admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Make or update a pool per accelerator type of a Ray cluster's nodes (admin): nodes that
    joined are added, nodes gone or dead go down."""
    return {"items": service.sync_pools(body.backend, body.backend_settings, body.prefix,
                                        body.cpu_peak_tflops)}


@router.get("/nodes", response_model=NodeList, responses=errors(*AUTHED, 404))
def list_nodes(
    _principal: PrincipalDep, service: ServiceDep,
    pool: Annotated[str | None, Query(max_length=128, pattern=NAME_PATTERN)] = None,
) -> dict[str, Any]:
    """Every node (of one pool) with its devices and state."""
    return {"items": inventory.list_nodes(service.db, pool)}


@router.post("/nodes/{name}/cordon", response_model=NodePublic,
             responses=errors(*AUTHED, 403, 404))
def cordon_node(name: NodeName, _admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Take no new gangs on the node; the jobs on it run on (admin)."""
    return inventory.set_node_state(service.db, name, "cordon")


@router.post("/nodes/{name}/uncordon", response_model=NodePublic,
             responses=errors(*AUTHED, 403, 404, 409))
def uncordon_node(name: NodeName, _admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Make the node schedulable again (admin)."""
    return inventory.set_node_state(service.db, name, "uncordon")


@router.post("/nodes/{name}/drain", response_model=NodePublic,
             responses=errors(*AUTHED, 403, 404))
def drain_node(name: NodeName, _admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Take no new gangs, and tell the jobs on the node to checkpoint and stop: they requeue
    on other nodes (admin)."""
    return inventory.set_node_state(service.db, name, "drain")
