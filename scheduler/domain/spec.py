"""The job spec a user writes in YAML, validated into typed objects.

Every model forbids unknown fields. :func:`load_spec` turns YAML text into a :class:`JobSpec` or
raises :class:`SpecError` whose message names the field, the bad value and what is allowed.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from scheduler.domain.compress_spec import CompressSpec
from scheduler.domain.environment import check_job_env_name
from scheduler.domain.errors import SpecError
from scheduler.domain.finetune_spec import FinetuneSpec
from scheduler.domain.locations import is_job_ref, is_package_ref
from scheduler.domain.plan import PlanPins, Strategy
from scheduler.domain.roots import check_spec_files
from scheduler.domain.spec_limits import (
    MAX_DEADLINE_CHARS,
    MAX_NAME_CHARS,
    MAX_PATH_CHARS,
    check_env_sizes,
    check_free_map,
)
from scheduler.domain.spec_yaml import YamlLimitError, load_yaml, read_yaml_bytes

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_DURATION_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def deadline_after(text: str, submitted_at: datetime) -> datetime:
    """``'36h'`` after ``submitted_at``, or an ISO 8601 moment with its zone."""
    match = _DURATION.match(text)
    if match:
        try:
            return submitted_at + timedelta(seconds=float(match[1]) * _DURATION_UNIT_S[match[2]])
        except OverflowError:
            raise ValueError(f"deadline {text!r} lies beyond the year 9999; give a shorter "
                             f"duration") from None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"deadline {text!r} is neither a duration ('36h', '90m', '2d') nor an "
                         f"ISO 8601 time ('2026-12-01T18:00:00Z')") from None
    if moment.tzinfo is None:
        raise ValueError(f"deadline {text!r} has no time zone: add one, e.g. 'Z' for UTC")
    return moment


class JobKind(StrEnum):
    PRETRAIN = "pretrain"
    FINETUNE = "finetune"
    COMPRESS = "compress"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """A transformers architecture built from a config (random init), or weights on disk."""

    architecture: str | None = Field(
        default=None, max_length=MAX_NAME_CHARS,
        description="transformers model_type, e.g. 'llama' or 'gpt2'"
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="fields of the transformers config, e.g. hidden_size"
    )
    path: str | None = Field(
        default=None, max_length=MAX_PATH_CHARS,
        description="directory of pretrained weights, pkg:PACKAGE/FOLDER or job:NAME (the "
                    "export of an earlier job); see scheduler.domain.locations",
    )

    @field_validator("config")
    @classmethod
    def _config_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_free_map(value, "model.config")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.architecture is None) == (self.path is None):
            raise ValueError(
                "give exactly one of model.architecture (build from a config) or model.path "
                "(load weights from a directory)"
            )
        return self


class TokenizerSpec(_Strict):
    """``byte`` (256 symbols), ``bpe`` trained on the corpus, a directory, or ``model``'s own.

    ``model`` (the default of finetune jobs) is the tokenizer saved with the weights in
    ``model.path``.
    """

    kind: Literal["byte", "bpe", "path", "model"] = "bpe"
    vocab_size: int = Field(default=2048, ge=260, le=262_144)
    path: str | None = Field(default=None, max_length=MAX_PATH_CHARS)

    @model_validator(mode="after")
    def _path_when_needed(self) -> TokenizerSpec:
        if (self.kind == "path") != (self.path is not None):
            raise ValueError("tokenizer.path is required with kind: path and only then")
        return self


DATA_SUFFIXES = (".txt", ".jsonl")
"""The files the ranks read training text from (workers.core.corpus)."""


class DataSpec(_Strict):
    """Training text: a ``.txt`` or ``.jsonl`` file, or a corpus the project generates."""

    source: Literal["file", "generated"] = "file"
    path: str | None = Field(default=None, max_length=MAX_PATH_CHARS)
    text_field: str = Field(default="text", max_length=MAX_NAME_CHARS)
    seq_len: int = Field(default=128, ge=8, le=1_048_576)
    eval_fraction: float = Field(default=0.05, ge=0.0, lt=0.5)
    generated_documents: int = Field(default=4000, ge=10, le=10_000_000)

    @model_validator(mode="after")
    def _path_for_files(self) -> DataSpec:
        if self.source == "file" and not self.path:
            raise ValueError("data.path is required with source: file")
        if self.source == "generated" and self.path:
            raise ValueError("data.path is only for source: file; remove it or use source: file")
        # Checked here, at submit, not first in the ranks: a wrong suffix fails every retry.
        if self.path and not is_job_ref(self.path) and \
                not self.path.endswith(DATA_SUFFIXES):
            raise ValueError(f"data.path must name a {' or '.join(DATA_SUFFIXES)} file")
        return self


class WorkSpec(_Strict):
    """How much training: optimizer steps, or tokens (converted to steps)."""

    # The job row stores step counts in a 32-bit column.
    steps: int | None = Field(default=None, ge=1, le=2**31 - 1)
    tokens: int | None = Field(default=None, ge=1, le=2**62)
    eval_batches: int = Field(default=8, ge=0)

    @model_validator(mode="after")
    def _one_amount(self) -> WorkSpec:
        if (self.steps is None) == (self.tokens is None):
            raise ValueError("give exactly one of work.steps or work.tokens")
        return self


class BatchSpec(_Strict):
    global_batch: int = Field(default=8, ge=1, description="sequences per optimizer step")
    micro_batch: int | Literal["auto"] = "auto"

    @model_validator(mode="after")
    def _fits(self) -> BatchSpec:
        if isinstance(self.micro_batch, int):
            if self.micro_batch < 1:
                raise ValueError(f"batch.micro_batch must be >= 1, got {self.micro_batch}")
            if self.micro_batch > self.global_batch:
                raise ValueError(
                    f"batch.micro_batch {self.micro_batch} exceeds batch.global_batch "
                    f"{self.global_batch}"
                )
        return self


class OptimizerSpec(_Strict):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(default=3e-4, gt=0, le=10)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    grad_clip: float | None = Field(default=1.0, gt=0)


class CheckpointSpec(_Strict):
    interval_steps: int = Field(default=50, ge=1)
    keep: int = Field(default=3, ge=1)


class DeviceRange(_Strict):
    """A moldable gang: any device count from ``min`` to ``max`` that splits the batch evenly;
    the scheduler picks the one predicted to finish first (waiting included)."""

    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> DeviceRange:
        if self.min > self.max:
            raise ValueError(f"resources.devices: min {self.min} is above max {self.max}")
        return self


class ResourceSpec(_Strict):
    """Where and on how many devices: a pool or an accelerator type; a count, a range
    ``{min, max}`` or ``auto``."""

    pool: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    accelerator: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    devices: int | Literal["auto"] | DeviceRange = "auto"
    priority: int = Field(default=0, ge=-1000, le=1000)
    max_attempts: int = Field(default=3, ge=1, le=100)

    @model_validator(mode="after")
    def _positive(self) -> ResourceSpec:
        if isinstance(self.devices, int) and self.devices < 1:
            raise ValueError(
                f"resources.devices must be a positive number of devices, a range "
                f"{{min: 2, max: 8}} or 'auto', got {self.devices}"
            )
        return self

    @property
    def fixed_devices(self) -> int | None:
        """The device count when the spec names one exactly; None for ``auto`` or a range."""
        return self.devices if isinstance(self.devices, int) else None

    @property
    def device_range(self) -> tuple[int, int] | None:
        return (self.devices.min, self.devices.max) \
            if isinstance(self.devices, DeviceRange) else None


PINNABLE_STRATEGIES = ("single", "ddp", "fsdp_full", "fsdp_grad_op", "tp", "hsdp", "fsdp_tp")


class ParallelismSpec(_Strict):
    """Plan choices the user fixes; everything left out the planner chooses. The trainer runs
    the stored plan exactly, so a pinned plan that cannot fit is refused with the numbers."""

    strategy: Literal["single", "ddp", "fsdp_full", "fsdp_grad_op", "tp", "hsdp",
                      "fsdp_tp"] | None = None
    tp: int | None = Field(default=None, ge=1, le=64,
                           description="tensor-parallel degree (inside one node)")
    dp_replicate: int | None = Field(default=None, ge=1, le=65536,
                                     description="data-parallel copies of the model")
    dp_shard: int | None = Field(default=None, ge=1, le=65536,
                                 description="ranks FSDP shards the model states over")
    activation_checkpointing: Literal["none", "selective", "full"] | None = Field(
        default=None, description="none: keep activations; full: recompute each block in "
                                  "backward, keeping its input")

    @model_validator(mode="after")
    def _consistent(self) -> ParallelismSpec:
        if self.activation_checkpointing == "selective":
            raise ValueError(
                "parallelism.activation_checkpointing: selective recomputation (Korthikanti et "
                "al. 2022) drops only the attention scores, which the trainer's attention "
                "kernel (SDPA) never stores: it is what none already gives; use none or full")
        strategy = self.strategy
        conflicts = {
            "single": [("tp", 1), ("dp_replicate", 1), ("dp_shard", 1)],
            "ddp": [("tp", 1), ("dp_shard", 1)],
            "fsdp_full": [("tp", 1)], "fsdp_grad_op": [("tp", 1)], "hsdp": [("tp", 1)],
            "tp": [("dp_shard", 1)],
        }.get(strategy or "", [])
        for name, required in conflicts:
            value = getattr(self, name)
            if value is not None and value != required:
                raise ValueError(f"parallelism: strategy {strategy} needs {name} {required}, "
                                 f"got {value}; drop {name} or pick another strategy")
        needs_more = {"fsdp_tp": [("tp", "tensor parallel"), ("dp_shard", "FSDP")],
                      "hsdp": [("dp_replicate", "replicas"), ("dp_shard", "FSDP")],
                      "tp": [("tp", "tensor parallel")],
                      "fsdp_full": [("dp_shard", "FSDP")],
                      "fsdp_grad_op": [("dp_shard", "FSDP")]}.get(strategy or "", [])
        for name, what in needs_more:
            if getattr(self, name) == 1:
                raise ValueError(f"parallelism: strategy {strategy} needs {name} > 1 "
                                 f"({what}), got 1")
        return self

    def pins(self) -> PlanPins:
        return PlanPins(
            strategy=Strategy(self.strategy) if self.strategy else None, tp=self.tp,
            dp_replicate=self.dp_replicate, dp_shard=self.dp_shard,
            activation_checkpointing=None if self.activation_checkpointing is None
            else self.activation_checkpointing == "full")


SECRET_MASK = "<secret>"
"""What the API, ``corral show`` and events print instead of a secret env value."""


class EnvEntry(_Strict):
    """An environment variable given as ``{value: ..., secret: true}``: its value is handed to
    the ranks but never returned by the API, shown or logged."""

    value: str
    secret: bool = True


BYTE_TOKENIZER_IDS = 258
"""256 byte values plus end-of-text and padding (``workers.core.tokenizer.ByteTokenizer``)."""


class JobSpec(_Strict):
    """A whole job: what to train, on what data, how much, and on which resources."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    kind: JobKind
    model: ModelSpec
    tokenizer: TokenizerSpec = TokenizerSpec()
    data: DataSpec
    work: WorkSpec
    batch: BatchSpec = BatchSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    parallelism: ParallelismSpec | None = None
    checkpoint: CheckpointSpec = CheckpointSpec()
    resources: ResourceSpec = ResourceSpec()
    seed: int = 0
    tenant: str = Field(default="default", max_length=MAX_NAME_CHARS)
    deadline: str | None = Field(
        default=None, max_length=MAX_DEADLINE_CHARS,
        description="when the job must finish: an ISO 8601 time with its zone "
                    "('2026-12-01T18:00:00Z') or a duration after submission ('36h', '90m', "
                    "'2d'); the scheduler picks the cheapest plan that finishes in time")
    budget_usd: float | None = Field(
        default=None, gt=0,
        description="most the job may cost (devices × hours × price); the scheduler picks the "
                    "fastest plan within it and never one above it")
    finetune: FinetuneSpec | None = None
    compress: CompressSpec | None = None
    env: dict[str, str | EnvEntry] = Field(
        default_factory=dict,
        description="environment variables for the ranks: NAME: value, or NAME: {value: ..., "
                    "secret: true} for one the API never returns and Corral never logs")

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str | EnvEntry]) -> dict[str, str | EnvEntry]:
        for name in value:
            check_job_env_name(name)  # loader, interpreter and shell hooks are refused
        return value

    @field_validator("env")
    @classmethod
    def _env_sizes(cls, value: dict[str, str | EnvEntry]) -> dict[str, str | EnvEntry]:
        # Bounds of scheduler.domain.spec_limits: a spec's env becomes every rank's environment.
        check_env_sizes({name: entry.value if isinstance(entry, EnvEntry) else entry
                         for name, entry in value.items()})
        return value

    def env_values(self) -> dict[str, str]:
        """NAME -> value for the ranks, secrets included."""
        return {name: entry.value if isinstance(entry, EnvEntry) else entry
                for name, entry in self.env.items()}

    @field_validator("deadline")
    @classmethod
    def _deadline_format(cls, value: str | None) -> str | None:
        if value is not None:
            deadline_after(value, datetime.now(UTC))
        return value

    def deadline_at(self, submitted_at: datetime) -> datetime | None:
        """The deadline as a moment, for a job submitted at ``submitted_at``."""
        return None if self.deadline is None else deadline_after(self.deadline, submitted_at)

    @model_validator(mode="before")
    @classmethod
    def _finetune_tokenizer_default(cls, data: Any) -> Any:
        # A finetune or compress job must read text with the tokenizer its weights were
        # trained with.
        if (isinstance(data, dict) and data.get("kind") in ("finetune", "compress")
                and "tokenizer" not in data):
            return {**data, "tokenizer": {"kind": "model"}}
        return data

    @model_validator(mode="after")
    def _pins_match_the_gang(self) -> JobSpec:
        if self.parallelism is None:
            return self
        pins = self.parallelism.pins()
        world, fixed = pins.world_size, self.resources.fixed_devices
        if world is not None and fixed is not None and world != fixed:
            raise ValueError(
                f"parallelism: tp × dp_replicate × dp_shard = {world} but resources.devices is "
                f"{fixed}; make them agree or leave one of them out")
        dp = (pins.dp_replicate or 1) * (pins.dp_shard or 1)
        if self.batch.global_batch % dp:
            raise ValueError(
                f"parallelism: {dp} data-parallel ranks do not split batch.global_batch "
                f"{self.batch.global_batch} evenly; use a multiple of {dp}")
        return self

    @property
    def pins(self) -> PlanPins | None:
        """The plan choices the ``parallelism:`` section fixes (None: the planner's all)."""
        return self.parallelism.pins() if self.parallelism is not None else None

    @property
    def planned_devices(self) -> int | None:
        """The gang size: ``resources.devices`` when a count, else what the pins fix."""
        fixed = self.resources.fixed_devices
        if fixed is not None or self.parallelism is None:
            return fixed
        return self.parallelism.pins().world_size if self.resources.devices == "auto" else None

    @model_validator(mode="after")
    def _precision_the_trainer_runs(self) -> JobSpec:
        if self.precision == "fp16":
            raise ValueError("precision: fp16 needs loss scaling, which the trainer does not do "
                             "(fp16 gradients underflow without it); use bf16 (the same memory "
                             "and speed on GPUs that have it, A100 and newer) or fp32")
        return self

    @model_validator(mode="after")
    def _vocabulary_fits_the_tokenizer(self) -> JobSpec:
        requested = self.model.config.get("vocab_size")
        if requested is None or self.model.path is not None:
            return self
        ids = {"byte": BYTE_TOKENIZER_IDS, "bpe": self.tokenizer.vocab_size}.get(
            self.tokenizer.kind)
        if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
            raise ValueError(f"model.config.vocab_size must be a positive integer, "
                             f"got {requested!r}")
        if ids is not None and requested < ids:
            raise ValueError(
                f"model.config.vocab_size {requested} is smaller than the {self.tokenizer.kind} "
                f"tokenizer's {ids} ids: raise it to at least {ids} (a larger embedding, "
                f"e.g. padded to a multiple of 64, is kept as given), or remove it to embed "
                f"exactly the tokenizer's ids")
        return self

    @model_validator(mode="after")
    def _sections_match_kind(self) -> JobSpec:
        if self.finetune is not None and self.kind is not JobKind.FINETUNE:
            raise ValueError(f"the finetune section is only for kind: finetune, not "
                             f"{self.kind.value}; remove it or change the kind")
        if self.tokenizer.kind == "model" and self.kind not in (JobKind.FINETUNE,
                                                                JobKind.COMPRESS):
            raise ValueError("tokenizer.kind: model is only for kind: finetune or compress")
        if self.kind is JobKind.FINETUNE:
            if self.finetune is None:
                raise ValueError("kind: finetune needs a finetune section, e.g. finetune: "
                                 "{task: classification, num_labels: 2}")
            if self.model.path is None:
                raise ValueError("kind: finetune starts from weights: give model.path (a "
                                 "directory, pkg:PACKAGE/FOLDER or job:NAME), not "
                                 "model.architecture")
            if self.tokenizer.kind == "bpe":
                raise ValueError("a finetune job reads text with its model's tokenizer; remove "
                                 "tokenizer (or use kind: model, path or byte), not bpe")
            if self.data.path and not self.data.path.endswith(".jsonl"):
                raise ValueError("data.path: a finetune job reads labeled records from a "
                                 ".jsonl file (one object per line)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _compress_defaults(cls, data: Any) -> Any:
        # Quantize and prune train nothing and time one process: one device, no steps to ask.
        if not isinstance(data, dict) or data.get("kind") != "compress":
            return data
        section = data.get("compress")
        method = section.get("method") if isinstance(section, dict) else None
        if method not in ("quantize", "prune"):
            return data
        work = dict(data.get("work") or {})
        if work.get("steps") is None and work.get("tokens") is None:
            work["steps"] = 1
        resources = dict(data.get("resources") or {})
        resources.setdefault("devices", 1)
        return {**data, "work": work, "resources": resources}

    @model_validator(mode="after")
    def _compress_rules(self) -> JobSpec:
        if self.compress is not None and self.kind is not JobKind.COMPRESS:
            raise ValueError(f"the compress section is only for kind: compress, not "
                             f"{self.kind.value}; remove it or change the kind")
        if self.kind is not JobKind.COMPRESS:
            return self
        if self.compress is None:
            raise ValueError("kind: compress needs a compress section, e.g. compress: "
                             "{method: quantize, dtype: int8}")
        method = self.compress.method
        if self.model.path is None:
            what = "the teacher" if method == "distill" else "the model to compress"
            raise ValueError(f"kind: compress needs model.path, {what} (a directory, "
                             f"pkg:PACKAGE/FOLDER or job:NAME), not model.architecture")
        if self.tokenizer.kind == "bpe":
            raise ValueError("a compress job reads text with its model's tokenizer; remove "
                             "tokenizer (or use kind: model, path or byte), not bpe")
        if self.data.eval_fraction == 0 or self.work.eval_batches == 0:
            raise ValueError("a compress job measures quality on held-out data: set "
                             "data.eval_fraction > 0 and work.eval_batches > 0")
        if method in ("quantize", "prune"):
            if self.resources.devices != 1:
                raise ValueError(f"compress method {method} runs in one process on one device "
                                 f"(latency is timed there); set resources.devices: 1 or "
                                 f"leave it out")
            if self.work.steps != 1 or self.work.tokens is not None:
                raise ValueError(f"compress method {method} trains nothing; leave out "
                                 f"work.steps and work.tokens (work.eval_batches counts)")
        return self

    def steps_for(self, tokens_per_step: int) -> int:
        """Optimizer steps this job runs, given how many tokens one step consumes."""
        if self.work.steps is not None:
            return self.work.steps
        assert self.work.tokens is not None
        return max(1, -(-self.work.tokens // tokens_per_step))

    def tokens_per_step(self) -> int:
        return self.batch.global_batch * self.data.seq_len

    def total_steps(self) -> int:
        return self.steps_for(self.tokens_per_step())




def redact_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored spec (``JobSpec.model_dump(mode="json")``) with every secret env value masked."""
    env = spec.get("env")
    if not isinstance(env, dict) or not env:
        return spec
    masked = {name: {**entry, "value": SECRET_MASK}
              if isinstance(entry, dict) and entry.get("secret", True) else entry
              for name, entry in env.items()}
    return {**spec, "env": masked}


def env_of(spec: dict[str, Any]) -> dict[str, str]:
    """NAME -> value of a stored spec's env, secrets included (what the ranks get)."""
    env = spec.get("env")
    if not isinstance(env, dict):
        return {}
    return {name: str(entry["value"]) if isinstance(entry, dict) else str(entry)
            for name, entry in env.items()}


def secret_values(spec: dict[str, Any]) -> list[str]:
    """The secret env values of a stored spec, for scrubbing them out of text."""
    env = spec.get("env")
    if not isinstance(env, dict):
        return []
    return [str(entry["value"]) for entry in env.values()
            if isinstance(entry, dict) and entry.get("secret", True) and entry.get("value")]


def _shown(value: Any) -> str:
    """A bad value as the error shows it: a map as ``{...}``, anything long cut short."""
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:40]!r}… ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}…"


def _format_error(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(part) for part in item["loc"]) or "(top level)"
        value = item.get("input")
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown field; remove it or check its spelling")
        elif item["type"] == "missing":
            lines.append(f"{loc}: required field is missing")
        elif msg.startswith(loc) and msg[len(loc):len(loc) + 1] in (":", ".", "["):
            lines.append(msg)  # our own validator named the place (env.NAME: ...)
        elif loc.startswith("env."):
            lines.append(f"{loc}: {msg}")  # an env value may be a secret: never echo it
        else:
            lines.append(f"{loc}: {msg} (got {_shown(value)})")
    return "invalid job spec:\n  " + "\n  ".join(lines)


def parse_spec(data: Any, base_dir: Path | None = None) -> JobSpec:
    """Validate a mapping into a :class:`JobSpec`; relative data paths resolve from ``base_dir``."""
    if not isinstance(data, dict):
        raise SpecError(
            f"a job spec must be a YAML mapping of fields (name, kind, model, ...), "
            f"got {type(data).__name__}"
        )
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_error(err)) from None
    return resolve_paths(spec, base_dir) if base_dir is not None else spec


def resolve_paths(spec: JobSpec, base_dir: Path) -> JobSpec:
    """Make relative file paths in the spec absolute against ``base_dir`` (the YAML's folder)."""

    def absolute(value: str | None) -> str | None:
        if value is None or is_package_ref(value) or is_job_ref(value):
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base_dir / path).resolve())

    updates: dict[str, Any] = {}
    if spec.data.path:
        updates["data"] = spec.data.model_copy(update={"path": absolute(spec.data.path)})
    if spec.model.path:
        updates["model"] = spec.model.model_copy(update={"path": absolute(spec.model.path)})
    if spec.tokenizer.path:
        updates["tokenizer"] = spec.tokenizer.model_copy(
            update={"path": absolute(spec.tokenizer.path)}
        )
    return spec.model_copy(update=updates)


def load_spec(text: str, base_dir: Path | None = None, source: str = "<spec>") -> JobSpec:
    """Parse YAML text into a :class:`JobSpec`, with errors that point at the problem.

    The text is read within the bounds of :mod:`scheduler.domain.spec_yaml` (1 MiB, aliases
    expanded to at most 100,000 values), so a hostile file fails fast instead of hanging.
    """
    try:
        data = load_yaml(text)
    except YamlLimitError as err:
        raise SpecError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(f"{source}: malformed YAML{where}: {problem}") from None
    try:
        return parse_spec(data, base_dir)
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from None


def load_spec_file(path: str | Path) -> JobSpec:
    """Read and validate a job YAML file; relative paths inside resolve from its folder."""
    file = Path(path)
    if not file.is_file():
        raise SpecError(f"job file {file} does not exist")
    try:
        raw = read_yaml_bytes(file)
    except OSError as err:
        raise SpecError(f"{file}: cannot be read ({err.strerror}); check its "
                        f"permissions") from None
    except YamlLimitError as err:
        raise SpecError(f"{file}: {err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"{file}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
                        f"{err.start}); a job file is YAML text, not a binary file") from None
    return load_spec(text, base_dir=file.resolve().parent, source=str(file))


def check_files_exist(spec: JobSpec) -> None:
    """Raise :class:`SpecError` for data, model or tokenizer paths that are not on disk.

    A ``pkg:`` reference must name an installed package's folder; a ``job:`` reference is left
    to the scheduler, which replaces it by the folder of that job's export at submit. With
    roots (server mode) use :func:`scheduler.domain.roots.check_spec_files`.
    """
    check_spec_files(spec, None)
