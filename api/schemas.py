"""Request and response bodies of the job routes, and the shapes every route shares.

Create models (``JobSubmit``, ``PlanRequest``) are what a client sends; Public models are what
the API answers. Every model forbids unknown fields: a client that sends ``state`` or ``plan``
next to ``spec`` is told so (422) instead of being silently ignored, and the OpenAPI schema
says exactly what a response holds. Numbers must be finite (JSON has no NaN).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from scheduler.domain.state import JobState

MAX_DB_ID = 2**63 - 1
"""Largest id a BIGINT (PostgreSQL) or INTEGER (SQLite) column can hold."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
"""Names of tenants, cohorts, pools, nodes and jobs: letters, digits, '.', '_', '-'."""

Role = Literal["admin", "member"]


class Schema(BaseModel):
    """Base of every body: unknown fields are refused, numbers must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ErrorDetail(Schema):
    code: str = Field(description="machine-readable: unauthorized, forbidden, not_found, "
                                  "conflict, invalid_request, invalid_spec, unschedulable, "
                                  "rate_limited, unavailable")
    message: str = Field(description="what went wrong and what to change")


class ErrorBody(Schema):
    """Every error answer: ``{"error": {"code": ..., "message": ...}}``."""

    error: ErrorDetail


class WhoAmI(Schema):
    tenant: str
    role: Role


# --- create ------------------------------------------------------------------------------------


EXAMPLE_SPEC: dict[str, Any] = {
    "name": "pretrain-tiny", "kind": "pretrain",
    "model": {"architecture": "llama", "config": {
        "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2, "intermediate_size": 64}},
    "tokenizer": {"kind": "byte"},
    "data": {"source": "generated", "seq_len": 16, "generated_documents": 50},
    "work": {"steps": 4, "eval_batches": 1}, "batch": {"global_batch": 4},
    "env": {"HF_TOKEN": {"value": "hf_example", "secret": True}},
}
"""A small pretraining job, the example the OpenAPI schema shows (and the fuzzer submits)."""


class JobSubmit(Schema):
    """A job to submit: the job spec exactly as its YAML file would hold it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"spec": EXAMPLE_SPEC}]})

    spec: dict[str, Any] = Field(description="the job spec (name, kind, model, data, work, ...); "
                                             "file paths must be absolute or pkg:/job: "
                                             "references")


class PlanRequest(Schema):
    """A job spec to plan without submitting it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"spec": EXAMPLE_SPEC}]})

    spec: dict[str, Any]


# --- public ------------------------------------------------------------------------------------


class JobSubmitted(Schema):
    id: int
    name: str
    state: JobState
    created: bool = Field(description="false when an earlier request with the same "
                                      "Idempotency-Key made this job")


class JobPublic(Schema):
    """One row of a job listing."""

    id: int
    name: str
    kind: str
    state: JobState
    tenant: str | None
    priority: int
    pool: str | None
    plan: str | None = Field(description="the admitted plan in one line, e.g. 'ddp dp=2 mb=4'")
    attempts: int
    step: int | None
    total_steps: int | None
    first_loss: float | None
    loss: float | None
    tokens_per_s: float | None
    submitted_at: str
    started_at: str | None
    finished_at: str | None
    pending_reason: str | None


class JobList(Schema):
    items: list[JobPublic]
    next_before_id: int | None = Field(description="pass as before_id for the next page; null "
                                                   "on the last page")


class JobEventPublic(Schema):
    """One entry of a job's history: a state move (from → to) or a note (both null)."""

    model_config = ConfigDict(populate_by_name=True)

    time: str
    from_state: str | None = Field(alias="from")
    to: str | None
    reason: str
    detail: dict[str, Any] | None


class CheckpointPublic(Schema):
    step: int
    path: str
    exists: bool | None = Field(description="whether it is still there; null where the "
                                            "scheduler cannot see the ranks' disks (a Ray pool)")


class JobDetail(JobPublic):
    """Everything about one job; secret env values in ``spec`` are masked."""

    spec: dict[str, Any]
    plan_detail: dict[str, Any] | None
    run_dir: str | None
    max_attempts: int
    eval_loss: float | None
    predicted_step_time_s: float | None
    predicted_run_time_s: float | None
    measured_step_time_s: float | None
    deadline_at: str | None
    devices: dict[str, list[int]] = Field(description="node name -> device indexes held now")
    events: list[JobEventPublic]
    checkpoints: list[CheckpointPublic]


class JobCancelled(Schema):
    id: int
    state: JobState


class EventList(Schema):
    items: list[JobEventPublic]


class JobExplain(Schema):
    """Why a job is where it is: its state, why it waits, and the scheduler's last word on it."""

    id: int
    state: JobState
    pending_reason: str | None
    last_decision: JobEventPublic | None


class JobLogs(Schema):
    attempt: int | None = Field(description="the attempt asked for; null: the latest")
    latest_attempt: int = Field(description="attempts started so far (0: not started)")
    offset: int = Field(description="byte offset to ask for next")
    data: str = Field(description="log text from the requested offset; secret env values "
                                  "masked")
    finished: bool = Field(description="the job is in a final state: no more text will come")


class PlanRow(Schema):
    """One candidate plan: where, how, and what the cost model predicts for it."""

    pool: str
    accelerator: str
    devices: int
    plan: str
    plan_detail: dict[str, Any]
    fits: bool
    why_not: str
    memory_bytes: float | None
    memory_limit_bytes: float | None
    step_time_s: float | None
    run_time_s: float | None
    completion_s: float | None
    price_usd: float | None
    memory_explain: str | None = Field(description="the memory prediction in words (best only)")
    step_time_explain: str | None = Field(description="the step time in words (best only)")


class PlanPublic(Schema):
    best: PlanRow | None
    feasible: list[PlanRow]
    rejected: list[PlanRow]
    smallest_fix: str | None = Field(description="what would make the job fit, when none does")


class Health(Schema):
    status: Literal["ok"]


class Ready(Schema):
    model_config = ConfigDict(populate_by_name=True)

    status: Literal["ready"]
    database: Literal["ok"]
    schema_revision: str = Field(alias="schema", description="the database's migration revision")
    leader: bool | None = Field(description="whether this replica leads the scheduling cycle; "
                                            "null when it runs no scheduler")


def project(model: type[Schema], data: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``data`` that ``model`` declares (by alias): service answers may grow."""
    names = {field.alias or name for name, field in model.model_fields.items()}
    return {key: value for key, value in data.items() if key in names}
