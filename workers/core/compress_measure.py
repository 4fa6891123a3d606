"""What a compress job measures on a model, before and after: size, parameters, latency, quality.

* **size on disk**: bytes of the weight files (``*.safetensors``) of the saved folder; config
  and tokenizer files are the same before and after and are left out;
* **parameters**: weight elements the model holds, a quantized layer counted by the elements of
  the weight it stands for (so quantization keeps the count and changes only the bytes), and
  how many of them are non-zero (what pruning changes);
* **latency**: median wall time of ``runs`` forward passes of one fixed held-out batch, after
  :data:`WARMUP_RUNS` untimed ones, on this process's threads (recorded beside it). The two
  models are timed in alternation, pass for pass: on a shared machine the load changes from
  second to second (a busy core can slow a 2-thread forward pass tenfold), and alternating
  makes such changes hit before and after alike instead of biasing whichever ran second;
* **quality**: the task's held-out metrics (``eval_loss``, and perplexity ``exp(eval_loss)``
  for language models) over the same batches before and after.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workers.core.compress_quantize import quantized_linear_weight
from workers.core.tasks import Batch, Task

WARMUP_RUNS = 3
"""Untimed passes first: the first calls allocate buffers and pick kernels."""


@dataclass(frozen=True)
class ModelMeasurement:
    """One model's numbers; the report holds one of these before and one after compressing."""

    size_bytes: int
    parameters: int
    nonzero_parameters: int
    latency_s: float
    metrics: dict[str, float]

    @property
    def eval_loss(self) -> float | None:
        return self.metrics.get("eval_loss")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with perplexity beside a language model's eval loss."""
        fields = asdict(self)
        if self.eval_loss is not None:
            # exp of a mean cross-entropy in nats; capped so a diverged model stays JSON.
            fields["metrics"]["perplexity"] = math.exp(min(self.eval_loss, 700.0))
        return fields


def weights_size_bytes(directory: Path) -> int:
    """Bytes of the ``*.safetensors`` weight files in ``directory``."""
    return sum(path.stat().st_size for path in directory.glob("*.safetensors"))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Weight elements of ``model`` and how many are non-zero, quantized layers included."""
    total = nonzero = 0
    for parameter in model.parameters():
        total += parameter.numel()
        nonzero += int(torch.count_nonzero(parameter.detach()))
    for module in model.modules():
        weight = quantized_linear_weight(module)
        if weight is None:
            continue
        bias = getattr(module, "bias", None)
        # DynamicQuantizedLinear.bias is a method, Int4WeightOnlyLinear.bias a buffer.
        bias_tensor = bias() if callable(bias) else bias
        for tensor in (weight, bias_tensor):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel()
                nonzero += int(torch.count_nonzero(tensor))
    return total, nonzero


def _device_of(model: nn.Module) -> torch.device:
    # A quantized model still has float parameters (embeddings, norms) where it computes.
    return next(model.parameters()).device


def _on(device: torch.device, batch: Batch) -> Batch:
    return {name: tensor.to(device) for name, tensor in batch.items()}


def model_inputs(batch: Batch) -> Batch:
    """The tensors of a batch the model takes as inputs (all but the targets)."""
    return {name: tensor for name, tensor in batch.items() if name != "labels"}


@torch.inference_mode()
def paired_latency_s(before: nn.Module, after: nn.Module, batch: Batch,
                     runs: int) -> tuple[float, float]:
    """Median seconds of one forward pass over ``batch`` of each model, timed in alternation."""
    models = (before.eval(), after.eval())
    inputs = [_on(_device_of(model), model_inputs(batch)) for model in models]

    def timed(index: int) -> float:
        device = _device_of(models[index])
        # CUDA kernels run asynchronously: without waiting, the clock would time the launch.
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start_s = time.perf_counter()
        models[index](**inputs[index])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start_s

    for _ in range(WARMUP_RUNS):
        for index in (0, 1):
            timed(index)
    times_s: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for index in (0, 1):
            times_s[index].append(timed(index))
    return statistics.median(times_s[0]), statistics.median(times_s[1])


@torch.inference_mode()
def evaluate(model: nn.Module, task: Task, batches: list[Batch]) -> dict[str, float]:
    """The task's held-out metrics of ``model`` over ``batches``, in this process alone."""
    model.eval()
    device = _device_of(model)
    totals: dict[str, float] = {}
    for batch in batches:
        for name, value in task.eval_sums(model, _on(device, batch)).items():
            totals[name] = totals.get(name, 0.0) + value
    return task.eval_metrics(totals) if totals else {}


def compare_models(before: nn.Module, before_saved: Path, after: nn.Module, after_saved: Path,
                   task: Task, batches: list[Batch],
                   latency_runs: int) -> tuple[ModelMeasurement, ModelMeasurement]:
    """All four measurements of two models whose weights are saved in the given folders."""
    if not batches:
        raise ValueError("measuring quality and latency needs at least one held-out batch")
    latencies_s = paired_latency_s(before, after, batches[0], latency_runs)
    measurements = []
    for model, saved, latency_s in zip((before, after), (before_saved, after_saved),
                                       latencies_s, strict=True):
        parameters, nonzero = count_parameters(model)
        measurements.append(ModelMeasurement(
            size_bytes=weights_size_bytes(saved), parameters=parameters,
            nonzero_parameters=nonzero, latency_s=latency_s,
            metrics=evaluate(model, task, batches)))
    return measurements[0], measurements[1]
