"""Finetuning tasks over fixed examples: sequence classification and (instruction) causal LM.

Both sample training examples with the pretraining sampler (a pure function of seed, step and
rank, :class:`~workers.core.data.StepSampler`) and score the held-out examples exactly once
each: rank ``r``'s eval micro-batch ``b`` holds held-out slots ``(b·dp + r)·micro_batch + i``.
Every rank runs ``min(eval_batches, ⌈n / (dp·micro_batch)⌉)`` batches (the same count, which
FSDP needs); slots past the ``n`` examples repeat an example with ``weight`` 0, so they count
for nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workers.core.data import BatchLayout, StepSampler
from workers.core.labeled_data import IGNORE_INDEX, TensorExamples
from workers.core.tasks import Batch

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def covering_eval_slots(num_examples: int, max_batches: int, micro_batch: int, dp_rank: int,
                        dp_size: int) -> list[list[tuple[int, float]]]:
    """(example index, weight) of each eval slot of this rank; see the module docstring."""
    slots_per_round = dp_size * micro_batch
    batches = min(max_batches, math.ceil(num_examples / slots_per_round))
    return [
        [(slot % num_examples, 1.0 if slot < num_examples else 0.0)
         for slot in range((batch * dp_size + dp_rank) * micro_batch,
                           (batch * dp_size + dp_rank + 1) * micro_batch)]
        for batch in range(batches)
    ]


def model_inputs(batch: Batch) -> dict[str, torch.Tensor]:
    """The entries of ``batch`` that the model takes as keyword arguments."""
    return {name: batch[name] for name in _MODEL_INPUTS if name in batch}


class _ExampleTask:
    """Sampling and exact-once evaluation shared by the finetuning tasks."""

    def __init__(self, train: TensorExamples, held_out: TensorExamples | None, seed: int,
                 layout: BatchLayout, eval_batches: int) -> None:
        self.train = train
        self.held_out = held_out
        self.layout = layout
        self.eval_batches = eval_batches
        self.sampler = StepSampler(len(train), seed, layout)

    def train_micro_batches(self, step: int, dp_rank: int) -> list[Batch]:
        return [self.train.batch(ids) for ids in self.sampler.micro_batches(step, dp_rank)]

    def eval_micro_batches(self, dp_rank: int) -> list[Batch]:
        if self.held_out is None or self.eval_batches == 0:
            return []
        batches = []
        for slots in covering_eval_slots(len(self.held_out), self.eval_batches,
                                         self.layout.micro_batch, dp_rank, self.layout.dp_size):
            batch = self.held_out.batch([index for index, _ in slots])
            batch["weight"] = torch.tensor([weight for _, weight in slots])
            batches.append(batch)
        return batches


class ClassificationTask(_ExampleTask):
    """One label per sequence: cross-entropy on the classifier's logits; accuracy in eval."""

    def _logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        # fp32 for the softmax, as in the causal-LM loss.
        return model(**model_inputs(batch)).logits.float()

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self._logits(model, batch), batch["labels"])

    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        logits, weight = self._logits(model, batch), batch["weight"]
        losses = F.cross_entropy(logits, batch["labels"], reduction="none")
        correct = (logits.argmax(dim=-1) == batch["labels"]).float()
        return {"loss_sum": float((losses * weight).sum()),
                "correct": float((correct * weight).sum()), "examples": float(weight.sum())}

    def eval_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        examples = totals["examples"]
        return {"eval_loss": totals["loss_sum"] / examples,
                "eval_accuracy": totals["correct"] / examples, "eval_examples": examples}


class CausalLMFinetuneTask(_ExampleTask):
    """Next-token loss on the scored tokens only (the response, for instruction tuning).

    The training loss is the mean over the micro-batch's scored tokens; eval reports the mean
    over all held-out scored tokens and the share of them predicted right (greedy, teacher
    forced): ``eval_token_accuracy``.
    """

    def _logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(**model_inputs(batch)).logits.float()

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = self._logits(model, batch)
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                               ignore_index=IGNORE_INDEX)

    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        logits, labels = self._logits(model, batch), batch["labels"]
        # A padding slot (weight 0) scores none of its tokens.
        scored = (labels != IGNORE_INDEX) & (batch["weight"][:, None] > 0)
        losses = F.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                 ignore_index=IGNORE_INDEX, reduction="none").view_as(labels)
        correct = (logits.argmax(dim=-1) == labels) & scored
        return {"loss_sum": float(losses[scored].sum()), "correct": float(correct.sum()),
                "tokens": float(scored.sum())}

    def eval_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        tokens = max(totals["tokens"], 1.0)
        return {"eval_loss": totals["loss_sum"] / tokens,
                "eval_token_accuracy": totals["correct"] / tokens,
                "eval_tokens": totals["tokens"]}
