"""Apply a plan's parallelism to a model: one ``apply_*`` function per technique.

:func:`check_plan` runs first, before the tokenizer, data or model are built: it checks the
plan's degrees against the real world size of the gang (``dp_replicate × dp_shard × tp × pp``
must equal ``WORLD_SIZE``) and that this core implements the strategy, so a wrong plan costs
seconds, not a tokenizer training and a model build.

:func:`parallelize` then applies, in torchtitan's order: tensor parallelism, activation
checkpointing, then the data-parallel wrapper (FSDP or DDP). Today ``single`` and ``ddp`` are
implemented; ``fsdp_*``, ``tp`` and ``pp`` get their ``apply_*`` function and an entry in
:data:`_IMPLEMENTED` when they come.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from scheduler.domain.errors import PlanError
from scheduler.domain.plan import Plan, Strategy
from workers.core.distributed import DistContext

logger = logging.getLogger(__name__)


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

    def dp_rank(self, rank: int) -> int:
        """Which data-parallel replica global ``rank`` belongs to (tp is the innermost dim)."""
        return (rank // self.tp) % self.dp


def apply_single(model: nn.Module, ctx: DistContext) -> nn.Module:
    """One rank: nothing to wrap."""
    return model


def apply_ddp(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Replicate the model on every rank and all-reduce gradients (gloo on CPU, NCCL on CUDA)."""
    # Buffers of causal LMs (rotary tables) are computed, not trained: identical on every rank,
    # so broadcasting them before each forward would be a wasted collective. torch 2.13 renamed
    # the switch; older releases only know the old name.
    parameters = inspect.signature(DistributedDataParallel).parameters
    no_buffer_sync: dict[str, Any] = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in parameters
        else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        model,
        device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
        gradient_as_bucket_view=True,
        **no_buffer_sync,
    )


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


_IMPLEMENTED: dict[Strategy, Callable[[nn.Module, DistContext], nn.Module]] = {
    Strategy.SINGLE: apply_single,
    Strategy.DDP: apply_ddp,
}


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
    if plan.strategy not in _IMPLEMENTED:
        ready = ", ".join(strategy.value for strategy in _IMPLEMENTED)
        raise StrategyNotImplementedError(
            f"strategy {plan.strategy.value} is not implemented in the training core yet; "
            f"implemented: {ready}"
        )
    return ParallelDims(strategy=plan.strategy, world_size=world_size,
                        dp_replicate=plan.dp_replicate, dp_shard=plan.dp_shard,
                        tp=plan.tp, pp=plan.pp)


def parallelize(model: nn.Module, plan: Plan, dims: ParallelDims, ctx: DistContext) -> nn.Module:
    """Move ``model`` to this rank's device and apply the plan; returns the module to train."""
    model.to(ctx.device)
    if plan.activation_checkpointing:
        apply_activation_checkpointing(model)
    return _IMPLEMENTED[dims.strategy](model, ctx)


def gradient_sync(model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager[None]:
    """A context in which backward all-reduces gradients only if ``enabled``.

    Gradient accumulation disables it for all micro-batches but the last, so one step costs
    one all-reduce rather than ``grad_accum`` of them.
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
