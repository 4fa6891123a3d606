"""Tensor parallelism (Megatron-style, with DTensor) for Llama-style decoder blocks.

Each block's attention and MLP are split over the ``tp`` ranks of the TP mesh (Shoeybi et al.
2019, "Megatron-LM", section 3): q/k/v and gate/up projections column-wise (each rank computes
``heads / tp`` attention heads and ``intermediate / tp`` MLP channels on the full input), o and
down projections row-wise (each rank multiplies its slice, then one all-reduce sums the partial
outputs). That is two all-reduces per block in forward and two in backward. Embeddings, norms
and the output head stay replicated: every TP rank holds them whole and computes the same
gradients, so they need no collective.

Supported: blocks whose attention has ``q_proj, k_proj, v_proj, o_proj`` and whose MLP has
``gate_proj, up_proj, down_proj``, all ``nn.Linear`` (Llama, Mistral, Qwen2 …). GPT-2's fused
``c_attn`` is not split here.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    parallelize_module,
)

from scheduler.domain.errors import PlanError
from workers.core.data_parallel import transformer_blocks

__all__ = ["apply_tp", "check_tp_support"]

_COLUMN_WISE = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj",
                "mlp.up_proj")
_ROW_WISE = ("self_attn.o_proj", "mlp.down_proj")

_HEAD_COUNT_ATTRIBUTES = ("num_heads", "num_key_value_heads")
"""Per-module head counts some attention classes keep and reshape with; divided by tp."""


def check_tp_support(model: nn.Module, tp: int) -> list[nn.Module]:
    """The blocks to split ``tp`` ways; raise :class:`PlanError` saying why if it cannot be done."""
    blocks = transformer_blocks(model)
    if not blocks:
        raise PlanError(
            f"tensor parallel needs a transformers model with decoder blocks; "
            f"{type(model).__name__} names none; use ddp or fsdp_full"
        )
    for name in _COLUMN_WISE + _ROW_WISE:
        layer = blocks[0].get_submodule(name) if _has_submodule(blocks[0], name) else None
        if not isinstance(layer, nn.Linear):
            raise PlanError(
                f"tensor parallel supports Llama-style blocks (q/k/v/o_proj, gate/up/down_proj "
                f"as nn.Linear); {type(blocks[0]).__name__} has no Linear {name}; "
                f"use ddp, fsdp_full or fsdp_grad_op for this model"
            )
    config = getattr(model, "config", None)
    sizes = {
        "num_attention_heads": getattr(config, "num_attention_heads", None),
        "num_key_value_heads": getattr(config, "num_key_value_heads", None),
        "intermediate_size": getattr(config, "intermediate_size", None),
    }
    for field, size in sizes.items():
        if size is not None and size % tp:
            raise PlanError(
                f"tensor parallel degree tp={tp} must divide model.config.{field} = {size}; "
                f"use a tp that divides it or a data-parallel strategy"
            )
    return blocks


def _has_submodule(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


def apply_tp(model: nn.Module, tp_mesh: DeviceMesh) -> None:
    """Split every block's projections over ``tp_mesh`` in place (see the module docstring)."""
    tp = tp_mesh.size()
    plan: dict[str, ParallelStyle] = {name: ColwiseParallel() for name in _COLUMN_WISE}
    plan.update({name: RowwiseParallel() for name in _ROW_WISE})
    for block in check_tp_support(model, tp):
        parallelize_module(block, tp_mesh, plan)
        # Llama-style attention reshapes with -1 heads and needs nothing more; classes that
        # keep head counts as attributes must see this rank's share.
        attention = block.get_submodule("self_attn")
        for attribute in _HEAD_COUNT_ATTRIBUTES:
            count = getattr(attention, attribute, None)
            if isinstance(count, int):
                setattr(attention, attribute, count // tp)
