"""Magnitude pruning of a model's linear layers to a target sparsity, made permanent.

``unstructured``: in each layer, the ``sparsity`` fraction of weights with the smallest absolute
value become zero (``torch.nn.utils.prune.l1_unstructured``). ``structured``: the ``sparsity``
fraction of whole output rows (one output channel each) with the smallest L2 norm become zero
(``ln_structured(n=2, dim=0)``); a zero row is a neuron that can be cut out of the layer.

Every ``nn.Linear`` is pruned except the output embedding: each of its rows is one token of the
vocabulary, and a zeroed row would make that token unpredictable rather than the model smaller.
``prune.remove`` then folds each mask into the weight, so the zeros are ordinary values of an
ordinary ``nn.Linear`` that ``save_pretrained`` writes and any loader reads back. Stored densely,
the file keeps its size; sparse kernels or compression are what turn zeros into bytes saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune


@dataclass
class PruneResult:
    """Which layers were pruned and the sparsity measured on them afterwards."""

    structure: str
    target_sparsity: float
    layers: list[str] = field(default_factory=list)
    weights: int = 0
    zero_weights: int = 0

    @property
    def sparsity(self) -> float:
        """Measured fraction of zeros over the pruned layers' weights."""
        return self.zero_weights / self.weights if self.weights else 0.0


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every ``nn.Linear`` of ``model`` but its output embedding (see the module docstring)."""
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and module is not output]


def prune_magnitude(model: nn.Module, sparsity: float, structure: str) -> PruneResult:
    """Prune ``model`` in place to ``sparsity`` per layer and make the zeros permanent."""
    result = PruneResult(structure, sparsity)
    for name, linear in prunable_layers(model):
        if structure == "unstructured":
            prune.l1_unstructured(linear, name="weight", amount=sparsity)
        elif structure == "structured":
            prune.ln_structured(linear, name="weight", amount=sparsity, n=2, dim=0)
        else:
            raise ValueError(f"unknown pruning structure {structure!r}")
        prune.remove(linear, "weight")
        result.layers.append(name)
        result.weights += linear.weight.numel()
        result.zero_weights += linear.weight.numel() - int(torch.count_nonzero(linear.weight))
    return result
