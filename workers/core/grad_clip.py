"""Gradient-norm clipping that is correct for plain, FSDP-sharded and tensor-parallel gradients.

``torch.nn.utils.clip_grad_norm_`` assumes every gradient is a plain tensor or every one is a
DTensor on a single mesh. Under tensor parallelism alone the blocks' gradients are DTensors on
the TP mesh while embeddings and norms stay plain tensors (replicated: each TP rank holds the
same full gradient), and under FSDP + TP some DTensors live on the 2-D mesh and others on the
data-parallel mesh. So the norm is computed per group of gradients that share a mesh:

    ‖g‖₂ = sqrt( Σ_groups ‖g_group‖₂² )

where a DTensor group's norm is completed over its mesh (``full_tensor``: sums over shards,
counts replicas once) and a plain group's norm is local, which is right because plain
gradients are identical on every rank (DDP all-reduced them; under TP they are replicas).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.distributed.tensor import DTensor

__all__ = ["clip_grad_norm_"]


def _mesh_key(gradient: torch.Tensor) -> object:
    return gradient.device_mesh if isinstance(gradient, DTensor) else None


def clip_grad_norm_(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Scale gradients in place so their global 2-norm is at most ``max_norm``; returns the norm.

    The returned norm is the one before clipping, the same on every rank.
    """
    groups: dict[object, list[nn.Parameter]] = {}
    gradients: dict[object, list[torch.Tensor]] = {}
    for parameter in parameters:
        if parameter.grad is not None:
            key = _mesh_key(parameter.grad)
            groups.setdefault(key, []).append(parameter)
            gradients.setdefault(key, []).append(parameter.grad)
    if not groups:
        return 0.0
    group_norms: list[torch.Tensor] = []
    for key in groups:
        norm = torch.nn.utils.get_total_norm(gradients[key])
        # A DTensor norm is still partial (a shard's share); full_tensor completes it.
        group_norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    total_norm = torch.linalg.vector_norm(torch.stack([norm.float() for norm in group_norms]))
    for members in groups.values():
        torch.nn.utils.clip_grads_with_norm_(members, max_norm, total_norm)
    return float(total_norm)
