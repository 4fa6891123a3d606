"""Data-parallel wrappers: DDP (replicate everything) and FSDP2 ``fully_shard`` (ZeRO-2/3-like).

Which one a plan gets is decided in :func:`workers.core.parallelize.parallelize`; this module
only knows how to apply each.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from workers.core.distributed import DistContext

__all__ = ["apply_ddp", "apply_fsdp", "transformer_blocks"]


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks (decoder layers) of a transformers model, in forward order.

    transformers names them in ``_no_split_modules`` (``LlamaDecoderLayer``, ``GPT2Block`` …),
    the same unit it keeps whole when it spreads a model over devices, so it is the natural
    unit of sharding too. A model that names none yields ``[]``.
    """
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return [module for module in model.modules() if type(module).__name__ in names]


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


def apply_fsdp(model: nn.Module, dp_mesh: DeviceMesh, reshard_after_forward: bool,
               param_dtype: torch.dtype | None) -> None:
    """Shard parameters, gradients and optimizer state over ``dp_mesh`` with FSDP2, in place.

    ``reshard_after_forward=True`` frees each block's gathered parameters after its forward and
    gathers them again in backward (ZeRO-3: least memory, one more all-gather per step);
    ``False`` keeps them gathered from forward to backward (ZeRO-2-like: gradients and
    optimizer state sharded, parameters held whole between forward and backward). A 2-D
    ``dp_mesh`` (replicate, shard) gives HSDP: shard inside a group, all-reduce across groups.

    Each block becomes one FSDP unit, so only one block's parameters are gathered at a time;
    the root unit takes the rest (embeddings, final norm, output head: tied weights stay one
    parameter because both uses live in the root).
    """
    # Gradients are reduced in fp32 whatever the compute dtype: a bf16 sum over many ranks
    # loses the small contributions (torchtitan's default, too).
    mixed_precision = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in transformer_blocks(model):
        fully_shard(block, mesh=dp_mesh, reshard_after_forward=reshard_after_forward,
                    mp_policy=mixed_precision)
    fully_shard(model, mesh=dp_mesh, reshard_after_forward=reshard_after_forward,
                mp_policy=mixed_precision)
