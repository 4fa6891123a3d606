"""Request and response bodies of the cluster and tenancy routes: pools, nodes, tenants, quotas,
tokens, calibration (Create / Public families, like :mod:`api.schemas`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from api.schemas import NAME_PATTERN, Role, Schema
from scheduler.domain.roots import MAX_ROOTS
from scheduler.domain.spec_limits import MAX_PATH_CHARS
from scheduler.trust import JOB_USER

ACCELERATOR_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._+-]*$"
BACKEND_PATTERN = r"^[a-z][a-z0-9_-]*$"
LABEL_PATTERN = r"^[^\x00-\x1f\x7f]*$"
"""Free text shown in listings (a token's name): anything printable."""

MAX_NODES_PER_POOL = 1000
MAX_DEVICES_PER_NODE = 256
MAX_LIMIT = 1_000_000_000
"""Upper bound of counts stored in 32-bit columns (quotas, tenant limits)."""

NodeState = Literal["ready", "cordoned", "draining", "down"]


# --- pools and nodes ---------------------------------------------------------------------------


class PoolCreate(Schema):
    """A pool of like nodes to register; nodes are named POOL-0, POOL-1, ..."""

    name: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN)
    backend: str = Field(min_length=1, max_length=32, pattern=BACKEND_PATTERN,
                         description="local, ray or kubernetes: what launches the gangs")
    accelerator: str = Field(min_length=1, max_length=64, pattern=ACCELERATOR_PATTERN,
                             description="a catalog name (H100-SXM, TPU-v5e, cpu, ...)")
    nodes: int = Field(ge=1, le=MAX_NODES_PER_POOL)
    devices_per_node: int = Field(ge=1, le=MAX_DEVICES_PER_NODE)
    price_per_device_hour: float = Field(default=0.0, ge=0, le=1e6)
    peak_tflops: float | None = Field(default=None, gt=0, le=1e9,
                                      description="peak TFLOP/s per device, overriding the "
                                                  "catalog's")
    backend_settings: dict[str, str] | None = Field(
        default=None, max_length=8,
        description="what the backend needs to reach the pool's machines: {\"address\": "
                    "\"HOST:PORT\"} of a Ray cluster (checked against an allowlist)")


class PoolPublic(Schema):
    name: str
    backend: str
    backend_settings: dict[str, str] | None = Field(
        default=None, description="where the backend reaches the pool (a Ray cluster's address)")
    accelerator: str
    nodes: int
    devices_per_node: int
    devices: int
    free: int
    price_per_device_hour: float | None = Field(
        description="the pool's own price per device-hour; 0 leaves the catalog's")
    planned_price: list[float | str | None] = Field(
        min_length=2, max_length=2,
        description="[price per device-hour the planner charges or null, where it comes from: "
                    "pool, catalog or unknown]")
    # A pair [FLOP/s or null, source]. Typed as a 2-item list rather than a tuple: schemathesis
    # 4.32 cannot validate responses against the prefixItems schema a tuple becomes.
    peak_flops: list[float | str | None] = Field(
        min_length=2, max_length=2,
        description="[peak FLOP/s per device or null, where it comes from: pool, catalog, "
                    "placeholder or unknown]")


class PoolList(Schema):
    items: list[PoolPublic]


class NodePublic(Schema):
    name: str
    pool: str
    devices: int
    state: NodeState


class NodeList(Schema):
    items: list[NodePublic]


class PoolSync(Schema):
    """A cluster whose nodes make pools: one per accelerator type, named PREFIX-TYPE."""

    backend: Literal["ray"] = "ray"
    backend_settings: dict[str, str] = Field(max_length=8, description="{\"address\": "
                                             "\"HOST:PORT\"} of the Ray cluster")
    prefix: str = Field(default="ray", min_length=1, max_length=40, pattern=NAME_PATTERN)
    cpu_peak_tflops: float | None = Field(default=None, gt=0, le=1e9,
                                          description="peak TFLOP/s per CPU device of a new "
                                                      "CPU pool")


class SyncedNode(Schema):
    pool: str
    node: str
    devices: int
    state: NodeState
    change: Literal["added", "updated", "down", "back", "unchanged"]


class SyncedNodeList(Schema):
    items: list[SyncedNode]


# --- tenants and quotas ------------------------------------------------------------------------


RootFolder = Annotated[str, Field(min_length=1, max_length=MAX_PATH_CHARS)]
"""A folder of a tenant's allowed roots (checked further by scheduler.domain.roots)."""


class TenantUpdate(Schema):
    """Fields to change; a field left out stays as it is, ``null`` clears it (a limit then
    falls back to the server's default)."""

    cohort: str | None = Field(default=None, min_length=1, max_length=128, pattern=NAME_PATTERN)
    weight: float | None = Field(default=None, gt=0, le=1e6)
    max_pending_jobs: int | None = Field(default=None, ge=0, le=MAX_LIMIT)
    submissions_per_minute: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    max_priority: int | None = Field(default=None, ge=-1000, le=1000)
    job_user: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=JOB_USER.pattern,
        description="whom the tenant's ranks run as: a user name, UID or UID:GID; null: the "
                    "server's job_user")
    data_roots: list[RootFolder] | None = Field(
        default=None, max_length=MAX_ROOTS,
        description="absolute folders the tenant's data.path may lie in; null: the server's")
    model_roots: list[RootFolder] | None = Field(
        default=None, max_length=MAX_ROOTS,
        description="absolute folders the tenant's model.path and tokenizer.path may lie in; "
                    "null: the server's")


class TenantPublic(Schema):
    name: str
    cohort: str | None
    weight: float | None
    max_pending_jobs: int | None
    submissions_per_minute: int | None
    max_priority: int | None
    job_user: str | None = None
    data_roots: list[str] | None = None
    model_roots: list[str] | None = None


class TenantList(Schema):
    items: list[TenantPublic]


class QuotaSet(Schema):
    """A quota of a tenant, or the devices a cohort owns, for one accelerator type."""

    tenant: str | None = Field(default=None, min_length=1, max_length=128, pattern=NAME_PATTERN)
    cohort: str | None = Field(default=None, min_length=1, max_length=128, pattern=NAME_PATTERN)
    accelerator: str = Field(min_length=1, max_length=64, pattern=ACCELERATOR_PATTERN)
    nominal: int = Field(ge=0, le=MAX_LIMIT)
    borrowing_limit: int | None = Field(default=None, ge=0, le=MAX_LIMIT)
    lending_limit: int | None = Field(default=None, ge=0, le=MAX_LIMIT)

    @model_validator(mode="after")
    def _one_owner(self) -> QuotaSet:
        if (self.tenant is None) == (self.cohort is None):
            raise ValueError("give exactly one of tenant or cohort")
        return self


class QuotaPublic(Schema):
    tenant: str | None
    cohort: str | None
    accelerator: str
    nominal: int
    borrowing_limit: int | None
    lending_limit: int | None


class QuotaList(Schema):
    items: list[QuotaPublic]


class QuotaDeleted(Schema):
    tenant: str | None
    cohort: str | None
    accelerator: str
    deleted: bool


# --- tokens ------------------------------------------------------------------------------------


class TokenCreate(Schema):
    tenant: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN)
    role: Role = "member"
    name: str = Field(default="", max_length=128, pattern=LABEL_PATTERN,
                      description="what the token is for, shown in listings")


class TokenPublic(Schema):
    id: int
    tenant: str
    role: Role
    name: str
    prefix: str = Field(description="the token's first characters, to tell tokens apart")
    created_at: str
    last_used_at: str | None
    revoked: bool


class TokenIssued(TokenPublic):
    token: str = Field(description="the bearer token: shown this once, store it now")


class TokenList(Schema):
    items: list[TokenPublic]


# --- calibration -------------------------------------------------------------------------------


class CalibrationPublic(Schema):
    """The measured efficiency η of one (accelerator, strategy, job kind)."""

    accelerator: str
    strategy: str
    kind: str
    efficiency: float = Field(description="η the cost model plans with: measured model FLOPs "
                                          "utilisation of the matmul work")
    weight: int = Field(description="step reports behind η (at most 20 per attempt, 400 in all)")
    prior_efficiency: float | None = Field(
        description="η the cost model would plan with without this row (null: unknown "
                    "accelerator)")
    updated_at: str


class CalibrationList(Schema):
    items: list[CalibrationPublic]


class CalibrationReset(Schema):
    """What a reset deleted: the rows matching every filter given (null: any)."""

    accelerator: str | None
    strategy: str | None
    kind: str | None
    deleted: int = Field(description="rows deleted; plans there fall back to the prior η")
