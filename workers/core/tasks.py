"""What a job trains on and how it is scored: the seam between the shared trainer and a job kind.

The trainer (:mod:`workers.core.trainer`) runs the same numbered step for every job kind; a
:class:`Task` supplies what differs:

* the micro-batches of (step, data-parallel rank), each a :data:`Batch` (a dict of tensors on
  the CPU), a pure function of ``(seed, step, rank)`` — so a resumed run sees exactly the
  batches the uninterrupted run would have, without any saved iterator state;
* the loss of one micro-batch, which the trainer backpropagates;
* evaluation: additive sums over one held-out micro-batch (the trainer adds them over batches
  and ranks) and the metrics those totals make (``eval_loss``, ``eval_accuracy`` ...).

Every rank must get the same number of eval micro-batches: under FSDP a forward pass is a
collective, and a rank with one batch fewer would leave the others waiting forever.

Tasks: :class:`CausalLMTask` (pretraining on packed windows) here; the finetuning tasks
(classification, instruction tuning) in :mod:`workers.core.labeled_tasks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from workers.core.data import BatchLayout, PackedWindows, StepSampler, eval_micro_batches

Batch = dict[str, torch.Tensor]
"""One micro-batch: model inputs and targets by name, first dimension the examples."""


class Examples(Protocol):
    """A fixed, indexable set of examples that turns any selection of them into a batch."""

    def __len__(self) -> int: ...

    def batch(self, indices: Sequence[int]) -> Batch:
        """The examples at ``indices`` stacked into one batch."""
        ...


class Task(Protocol):
    """What the trainer needs from a job kind: batches, a loss and evaluation metrics."""

    def train_micro_batches(self, step: int, dp_rank: int) -> list[Batch]:
        """``grad_accum`` micro-batches of 1-based ``step`` for data-parallel rank ``dp_rank``."""
        ...

    def eval_micro_batches(self, dp_rank: int) -> list[Batch]:
        """This rank's held-out micro-batches; the same count on every rank."""
        ...

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Scalar training loss of one micro-batch (a mean, so accumulation can average it)."""
        ...

    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        """Additive statistics of one held-out micro-batch, e.g. summed loss and a count."""
        ...

    def eval_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        """Metrics from the sums added over all batches and ranks, e.g. ``eval_loss``."""
        ...


class CausalLMTask:
    """Next-token prediction on packed windows: pretraining, exactly as before tasks existed."""

    def __init__(self, train_data: PackedWindows, eval_data: PackedWindows | None,
                 seed: int, layout: BatchLayout, eval_batches: int) -> None:
        self.train_data = train_data
        self.eval_data = eval_data
        self.layout = layout
        self.eval_batches = eval_batches
        self.sampler = StepSampler(len(train_data), seed, layout)

    @staticmethod
    def _as_batch(data: PackedWindows, indices: Sequence[int]) -> Batch:
        inputs, targets = data.batch(indices)
        return {"input_ids": inputs, "labels": targets}

    def train_micro_batches(self, step: int, dp_rank: int) -> list[Batch]:
        return [self._as_batch(self.train_data, ids)
                for ids in self.sampler.micro_batches(step, dp_rank)]

    def eval_micro_batches(self, dp_rank: int) -> list[Batch]:
        if self.eval_data is None or self.eval_batches == 0:
            return []
        batches = eval_micro_batches(len(self.eval_data), self.eval_batches,
                                     self.layout.micro_batch, dp_rank, self.layout.dp_size)
        return [self._as_batch(self.eval_data, ids) for ids in batches]

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Mean next-token cross-entropy; windows are already shifted, so no shift here."""
        logits = model(input_ids=batch["input_ids"]).logits
        # Softmax in fp32 even under bf16 autocast: the log-sum-exp over a vocabulary loses
        # digits.
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten())

    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        # Every window holds seq_len targets, so the mean of batch means is the token mean.
        return {"loss_sum": float(self.loss(model, batch)), "batches": 1.0}

    def eval_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        return {"eval_loss": totals["loss_sum"] / totals["batches"]}
