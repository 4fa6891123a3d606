"""The parallelism plan the scheduler chooses and the trainer obeys.

Degrees follow the torchtitan convention: ``dp_replicate × dp_shard × tp × pp = world size``.
``dp_shard > 1`` means FSDP2 (``fully_shard``): parameters are re-sharded after forward
(``fsdp_full``, ZeRO-3-like) or kept gathered (``fsdp_grad_op``, ZeRO-2-like). Two composites:

* ``hsdp``: hybrid sharding, ``dp_replicate`` copies of a model sharded ``dp_shard`` ways
  (FSDP2 on a 2-D mesh): shard within a node's fast links, all-reduce across nodes;
* ``fsdp_tp``: tensor parallel inside a node (``tp``) and FSDP over the ``dp_shard`` groups,
  the 2-D layout that large models need (torchtitan's default for Llama 3 70B).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from scheduler.domain.errors import PlanError


class Strategy(StrEnum):
    SINGLE = "single"
    DDP = "ddp"
    FSDP_FULL = "fsdp_full"
    FSDP_GRAD_OP = "fsdp_grad_op"
    TP = "tp"
    HSDP = "hsdp"
    FSDP_TP = "fsdp_tp"
    PP = "pp"


@dataclass(frozen=True, slots=True)
class PlanPins:
    """What a job's ``parallelism:`` section fixes of its plan; None leaves it to the planner."""

    strategy: Strategy | None = None
    tp: int | None = None
    dp_replicate: int | None = None
    dp_shard: int | None = None
    activation_checkpointing: bool | None = None

    @property
    def world_size(self) -> int | None:
        """The gang size the pinned degrees fix, when all three are pinned."""
        degrees = (self.tp, self.dp_replicate, self.dp_shard)
        if any(degree is None for degree in degrees):
            return None
        return (self.tp or 1) * (self.dp_replicate or 1) * (self.dp_shard or 1)

    def admits(self, plan: Plan) -> bool:
        """Whether ``plan`` keeps every pinned choice."""
        return all(want is None or have == want for want, have in (
            (self.strategy, plan.strategy), (self.tp, plan.tp),
            (self.dp_replicate, plan.dp_replicate), (self.dp_shard, plan.dp_shard),
            (self.activation_checkpointing, plan.activation_checkpointing)))

    def describe(self) -> str:
        """``strategy=fsdp_tp tp=8`` for messages."""
        parts = [f"{name}={value.value if isinstance(value, Strategy) else value}"
                 for name, value in (("strategy", self.strategy), ("tp", self.tp),
                                     ("dp_replicate", self.dp_replicate),
                                     ("dp_shard", self.dp_shard),
                                     ("activation_checkpointing",
                                      self.activation_checkpointing))
                 if value is not None]
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["strategy"] = self.strategy.value if self.strategy else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanPins:
        fields = dict(data)
        fields["strategy"] = Strategy(fields["strategy"]) if fields.get("strategy") else None
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Plan:
    """How one job runs on its gang: parallel degrees, batch split and memory savers."""

    strategy: Strategy
    world_size: int
    dp_replicate: int = 1
    dp_shard: int = 1
    tp: int = 1
    pp: int = 1
    micro_batch: int = 1
    grad_accum: int = 1
    activation_checkpointing: bool = False
    precision: str = "fp32"
    nodes: int = 1

    @property
    def dp(self) -> int:
        """Data-parallel degree: how many different micro-batches one step sees at once."""
        return self.dp_replicate * self.dp_shard

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step over the whole gang."""
        return self.micro_batch * self.grad_accum * self.dp

    def validate(self, world_size: int | None = None) -> Plan:
        """Raise :class:`PlanError` unless the degrees are positive and multiply to the world."""
        world = self.world_size if world_size is None else world_size
        for name in ("world_size", "dp_replicate", "dp_shard", "tp", "pp", "micro_batch",
                     "grad_accum", "nodes"):
            if getattr(self, name) < 1:
                raise PlanError(f"plan.{name} must be >= 1, got {getattr(self, name)}")
        product = self.dp_replicate * self.dp_shard * self.tp * self.pp
        if product != world:
            raise PlanError(
                f"dp_replicate × dp_shard × tp × pp = {self.dp_replicate} × {self.dp_shard} × "
                f"{self.tp} × {self.pp} = {product} ≠ world size {world}"
            )
        expected = {
            Strategy.SINGLE: world == 1,
            Strategy.DDP: self.dp_shard == 1 and self.tp == 1 and self.pp == 1,
            Strategy.FSDP_FULL: self.dp_shard > 1,
            Strategy.FSDP_GRAD_OP: self.dp_shard > 1,
            Strategy.TP: self.tp > 1 and self.dp_shard == 1,
            Strategy.HSDP: self.dp_replicate > 1 and self.dp_shard > 1 and self.tp == 1,
            Strategy.FSDP_TP: self.dp_shard > 1 and self.tp > 1,
            Strategy.PP: self.pp > 1,
        }[self.strategy]
        if not expected:
            raise PlanError(
                f"strategy {self.strategy.value} does not match degrees dp_replicate="
                f"{self.dp_replicate} dp_shard={self.dp_shard} tp={self.tp} pp={self.pp}"
            )
        return self

    @classmethod
    def data_parallel(cls, world_size: int, global_batch: int, micro_batch: int | None = None,
                      precision: str = "fp32") -> Plan:
        """DDP over ``world_size`` ranks that realises ``global_batch`` sequences per step."""
        if global_batch % world_size:
            raise PlanError(
                f"global batch {global_batch} is not divisible by {world_size} data-parallel "
                f"ranks; use a global batch that is a multiple of {world_size}"
            )
        per_rank = global_batch // world_size
        mb = micro_batch or per_rank
        if per_rank % mb:
            raise PlanError(
                f"per-rank batch {per_rank} is not divisible by micro_batch {mb}"
            )
        strategy = Strategy.SINGLE if world_size == 1 else Strategy.DDP
        return cls(strategy=strategy, world_size=world_size, dp_replicate=world_size,
                   micro_batch=mb, grad_accum=per_rank // mb, precision=precision).validate()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["strategy"] = self.strategy.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        fields = dict(data)
        fields["strategy"] = Strategy(fields["strategy"])
        return cls(**fields).validate()

    def describe(self) -> str:
        """One line for tables: ``ddp dp=2 mb=4 ga=2``."""
        parts = [self.strategy.value, f"world={self.world_size}"]
        for name, value in (("dp_rep", self.dp_replicate), ("dp_shard", self.dp_shard),
                            ("tp", self.tp), ("pp", self.pp)):
            if value > 1:
                parts.append(f"{name}={value}")
        parts.append(f"mb={self.micro_batch}")
        if self.grad_accum > 1:
            parts.append(f"ga={self.grad_accum}")
        if self.activation_checkpointing:
            parts.append("ckpt-act")
        return " ".join(parts)
