"""Exact mode: measure one training step's peak memory by tracing, with no real memory.

The model is built and stepped under ``FakeTensorMode`` (tensors carry shapes and dtypes but no
storage) while torch's ``MemTracker`` accounts every storage by kind: parameters, gradients,
optimizer states (including foreach temporaries), activations, buffers. Tracing the full model
would cost time proportional to its depth, so we trace 1 and 2 layers and extrapolate linearly:

    peak(L) = peak(1) + (L − 1) · (peak(2) − peak(1))       per memory kind

which is exact for a stack of identical blocks. It is the check on the closed forms in
:mod:`scheduler.cost.memory`; torch is imported only when this runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("parameters", "gradients", "optimizer", "activations", "buffers", "other")


@dataclass(frozen=True, slots=True)
class TracedPeak:
    """Peak bytes of one training step on one device, split by kind."""

    total_bytes: float
    by_kind: dict[str, float]


def _trace(architecture: str, config: dict[str, Any], layers: int, seq_len: int,
           micro_batch: int, optimizer: str) -> dict[str, float]:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(config, num_hidden_layers=layers)
    fields.setdefault("max_position_embeddings", seq_len)
    model_config = AutoConfig.for_model(architecture, **fields)
    with FakeTensorMode():
        model = AutoModelForCausalLM.from_config(model_config)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = (torch.optim.AdamW(params, lr=1e-3, foreach=True) if optimizer == "adamw"
               else torch.optim.SGD(params, lr=1e-3, foreach=True))
        ids = torch.randint(0, model_config.vocab_size, (micro_batch, seq_len))
        tracker = MemTracker()
        tracker.track_external(model, opt, ids)
        with tracker:
            # Two steps: the first creates the optimizer states the second's peak includes.
            for _ in range(2):
                model(input_ids=ids, labels=ids).loss.backward()
                opt.step()
                opt.zero_grad()
                tracker.reset_mod_stats()
            snapshot = tracker.get_tracker_snapshot("peak")
    (per_device,) = snapshot.values()
    names = {"PARAM": "parameters", "GRAD": "gradients", "OPT": "optimizer", "ACT": "activations",
             "BUFFER": "buffers", "TEMP": "other", "OTH": "other"}
    out = dict.fromkeys(KINDS, 0.0)
    for key, value in per_device.items():
        label = str(key).rsplit(".", 1)[-1]
        if label in names:
            out[names[label]] += float(value)
    out["total"] = float(per_device["Total"])
    return out


def traced_peak(architecture: str, config: dict[str, Any], seq_len: int, micro_batch: int,
                optimizer: str = "adamw") -> TracedPeak:
    """Peak memory of a whole model (fp32, one device) from 1- and 2-layer traces."""
    layers = int(config.get("num_hidden_layers", config.get("n_layer", 1)))
    one = _trace(architecture, config, 1, seq_len, micro_batch, optimizer)
    two = _trace(architecture, config, 2, seq_len, micro_batch, optimizer)
    by_kind = {k: one[k] + (layers - 1) * (two[k] - one[k]) for k in (*KINDS, "total")}
    total = by_kind.pop("total")
    return TracedPeak(total, by_kind)
