"""Apply a plan's parallelism to a model: one ``apply_*`` function per technique.

:func:`check_plan` runs first, before the tokenizer, data or model are built: it checks the
plan's degrees against the real world size of the gang (``dp_replicate × dp_shard × tp × pp``
must equal ``WORLD_SIZE``) and that this core implements the strategy, so a wrong plan costs
seconds, not a tokenizer training and a model build.

:func:`parallelize` then applies, in torchtitan's order:

1. tensor parallelism (:func:`~workers.core.tensor_parallel.apply_tp`), first because it
   replaces the blocks' weights with DTensors that the later steps must see;
2. activation checkpointing (:func:`apply_activation_checkpointing`): transformers' per-block
   recomputation, switched on before the wrapper takes the blocks over;
3. the data-parallel wrapper: FSDP2 (:func:`~workers.core.data_parallel.apply_fsdp`) when
   parameters are sharded or already DTensors (TP), otherwise DDP
   (:func:`~workers.core.data_parallel.apply_ddp`).

Mixed precision: with ``precision: bf16`` on a device that supports it, forward passes run
under bf16 autocast (the trainer) and FSDP additionally gathers parameters in bf16 and reduces
gradients in fp32 (its ``MixedPrecisionPolicy``); master weights and optimizer state stay fp32.
On the CPU everything computes in fp32.

Ranks are laid out pp → dp_replicate → dp_shard → tp (tp innermost, so a TP group is the
closest ranks: the same node, the fastest link). Pipeline parallelism is not supported yet.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.nn.parallel import DistributedDataParallel

from scheduler.domain.errors import PlanError
from scheduler.domain.plan import Plan, Strategy
from workers.core.data_parallel import apply_ddp, apply_fsdp
from workers.core.distributed import DistContext
from workers.core.tensor_parallel import apply_tp

__all__ = ["ParallelDims", "StrategyNotImplementedError", "apply_activation_checkpointing",
           "check_plan", "compute_dtype", "gradient_sync", "parallelize"]

logger = logging.getLogger(__name__)

_IMPLEMENTED = (Strategy.SINGLE, Strategy.DDP, Strategy.FSDP_FULL, Strategy.FSDP_GRAD_OP,
                Strategy.TP, Strategy.HSDP, Strategy.FSDP_TP)

_MESH_DIMS = ("dp_replicate", "dp_shard", "tp")


class StrategyNotImplementedError(PlanError, NotImplementedError):
    """A valid plan whose strategy this training core cannot run yet."""


@dataclass(frozen=True)
class ParallelDims:
    """The plan's degrees, checked against the real gang; ranks laid out pp → dp → tp."""

    strategy: Strategy
    world_size: int
    dp_replicate: int
    dp_shard: int
    tp: int
    pp: int

    @property
    def dp(self) -> int:
        """Data-parallel degree: ranks that see different batches."""
        return self.dp_replicate * self.dp_shard

    @property
    def uses_fsdp(self) -> bool:
        """Whether the data-parallel wrapper is FSDP2 rather than DDP.

        Sharded plans need it, and so does TP with data parallelism: DDP cannot all-reduce
        DTensor gradients, FSDP2 composes with them (a replicate-only mesh makes it HSDP with
        shards of one, i.e. DDP semantics).
        """
        return self.dp_shard > 1 or (self.tp > 1 and self.dp > 1)

    @property
    def reshard_after_forward(self) -> bool:
        """ZeRO-3-like (True) unless the plan asks for shard-grad-op (ZeRO-2-like)."""
        return self.strategy is not Strategy.FSDP_GRAD_OP and self.dp_shard > 1

    def dp_rank(self, rank: int) -> int:
        """Which data-parallel replica global ``rank`` belongs to (tp is the innermost dim)."""
        return (rank // self.tp) % self.dp

    def build_mesh(self, device: torch.device) -> DeviceMesh:
        """The (dp_replicate, dp_shard, tp) device mesh of this gang; every rank must call it."""
        return init_device_mesh(device.type, (self.dp_replicate, self.dp_shard, self.tp),
                                mesh_dim_names=_MESH_DIMS)


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each layer's activations in backward instead of keeping them."""
    # Non-reentrant checkpointing is the variant that composes with DDP and FSDP.
    options = {"use_reentrant": False}
    # transformers 5 renamed the switch; older releases only have the old name.
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs=options)
        return
    legacy_enable = getattr(model, "gradient_checkpointing_enable", None)
    if legacy_enable is None:
        raise PlanError(
            f"activation checkpointing needs a transformers model; {type(model).__name__} "
            f"has no activation_checkpointing_enable()"
        )
    legacy_enable(gradient_checkpointing_kwargs=options)


def check_plan(plan: Plan, world_size: int) -> ParallelDims:
    """Raise :class:`PlanError` unless ``plan`` fits a gang of ``world_size`` and can run here."""
    if plan.world_size != world_size:
        raise PlanError(
            f"plan.world_size {plan.world_size} ≠ WORLD_SIZE {world_size} of the launched gang; "
            f"launch {plan.world_size} ranks or re-plan for {world_size}"
        )
    plan.validate(world_size)
    if plan.precision == "fp16":
        raise PlanError("precision fp16 needs loss scaling, which the core lacks; use bf16")
    if plan.pp > 1 or plan.strategy not in _IMPLEMENTED:
        ready = ", ".join(strategy.value for strategy in _IMPLEMENTED)
        raise StrategyNotImplementedError(
            f"pipeline parallel is not supported yet (plan has pp={plan.pp}); use pp=1 with "
            f"one of: {ready}"
        )
    return ParallelDims(strategy=plan.strategy, world_size=world_size,
                        dp_replicate=plan.dp_replicate, dp_shard=plan.dp_shard,
                        tp=plan.tp, pp=plan.pp)


def parallelize(model: nn.Module, plan: Plan, dims: ParallelDims, ctx: DistContext) -> nn.Module:
    """Move ``model`` to this rank's device and apply the plan; returns the module to train."""
    model.to(ctx.device)
    mesh = dims.build_mesh(ctx.device) if dims.tp > 1 or dims.uses_fsdp else None
    # 1. Tensor parallel.
    if dims.tp > 1:
        assert mesh is not None
        apply_tp(model, mesh["tp"])
    # 2. Activation checkpointing.
    if plan.activation_checkpointing:
        apply_activation_checkpointing(model)
    # 3. Data parallel: FSDP2, DDP, or nothing for one replica.
    if dims.uses_fsdp:
        assert mesh is not None
        # With replicas, a 2-D (replicate, shard) mesh: HSDP. Otherwise shard over all dp ranks.
        dp_mesh = mesh["dp_replicate", "dp_shard"] if dims.dp_replicate > 1 else mesh["dp_shard"]
        apply_fsdp(model, dp_mesh, dims.reshard_after_forward,
                   param_dtype=compute_dtype(plan.precision, ctx.device))
        return model
    if dims.dp > 1:
        return apply_ddp(model, ctx)
    return model


def gradient_sync(model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager[None]:
    """A context in which backward all-reduces gradients only if ``enabled``.

    Gradient accumulation disables it for all micro-batches but the last, so one DDP step costs
    one all-reduce rather than ``grad_accum`` of them. FSDP is left to reduce-scatter after every
    micro-batch: skipping it would keep whole, unsharded gradients between micro-batches, the
    memory that sharding exists to save. TP needs no gradient collective of its own.
    """
    if not enabled and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def compute_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of forward passes, or None to compute in fp32 (weights stay fp32)."""
    if precision == "bf16":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        logger.warning("precision bf16 is not supported on %s; computing in fp32", device)
    return None
