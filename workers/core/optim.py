"""Optimizer and learning-rate schedule from the job's optimizer spec."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from scheduler.domain.spec import OptimizerSpec

MIN_LR_RATIO = 0.1
"""Cosine decay ends at 10 % of the peak rate rather than 0 (Chinchilla, Hoffmann et al. 2022)."""


def build_optimizer(model: nn.Module, spec: OptimizerSpec) -> torch.optim.Optimizer:
    """AdamW or plain SGD; weight decay only on matrices, never on biases or norm gains.

    Decaying the 1-D parameters pulls layer norms towards zero for no regularising benefit
    (the nanoGPT / GPT-3 convention).
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": spec.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # Tensor parallel without FSDP leaves the embeddings and norms plain tensors beside the
    # blocks' DTensors, and a foreach kernel refuses such a mix ("got mixed torch.Tensor and
    # DTensor"): step them one tensor at a time there. None keeps torch's own choice (foreach
    # on GPUs).
    foreach = False if mixes_dtensors(decay + no_decay) else None
    if spec.name == "adamw":
        return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, foreach=foreach)
    return torch.optim.SGD(groups, lr=spec.lr, foreach=foreach)


def mixes_dtensors(parameters: list[torch.Tensor]) -> bool:
    """Whether ``parameters`` hold both DTensors and plain tensors."""
    from torch.distributed.tensor import DTensor

    kinds = {isinstance(parameter, DTensor) for parameter in parameters}
    return len(kinds) > 1


def lr_multiplier(step_index: int, spec: OptimizerSpec, total_steps: int) -> float:
    """Factor on the peak rate for 0-based optimizer step ``step_index``.

    Warmup: linear ``(i + 1) / warmup_steps`` for ``i < warmup_steps``. Then ``constant``
    stays at 1; ``cosine`` follows ``r + (1 − r)·½(1 + cos(π·p))`` with
    ``p = (i − warmup) / (total − warmup)`` and ``r`` = :data:`MIN_LR_RATIO`
    (Loshchilov & Hutter 2017, SGDR).
    """
    if step_index < spec.warmup_steps:
        return (step_index + 1) / spec.warmup_steps
    if spec.schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - spec.warmup_steps)
    progress = min(1.0, (step_index - spec.warmup_steps) / decay_steps)
    return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))


def build_lr_schedule(
    optimizer: torch.optim.Optimizer, spec: OptimizerSpec, total_steps: int
) -> LambdaLR:
    """A schedule whose ``step()`` follows each optimizer step; its state is one counter."""
    return LambdaLR(optimizer, lambda index: lr_multiplier(index, spec, total_steps))
