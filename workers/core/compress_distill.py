"""Knowledge distillation: a smaller student of the teacher's family learns from its soft labels.

Loss of one micro-batch (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
Network", section 2), per token and averaged over tokens::

    alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − alpha) · CE(student, y)

The T² keeps the soft term's gradients on the scale of the hard term's when T changes (the
soft gradients shrink as 1/T²). The teacher is frozen and not wrapped for data parallelism:
every rank holds a full copy and only runs it forward. Held-out metrics are the student's plain
next-token loss (the task's), the quality a distilled model is judged by.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from scheduler.domain.errors import SpecError
from scheduler.domain.spec import ModelSpec
from workers.core.model import build_model
from workers.core.tasks import Batch, CausalLMTask
from workers.core.tokenizer import TextTokenizer

_NOT_INHERITED = {"architectures", "model_type", "transformers_version", "_name_or_path",
                  "dtype", "torch_dtype", "vocab_size", "use_cache", "bos_token_id",
                  "eos_token_id", "head_dim"}
"""Teacher config fields a student does not copy: bookkeeping, what :func:`build_model` sets
from the tokenizer, and ``head_dim``, which llama-family configs derive from ``hidden_size /
num_attention_heads`` and which must follow the student's own sizes unless it sets them."""


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      labels: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    """``alpha·T²·KL(teacher_T ‖ student_T) + (1 − alpha)·CE`` averaged over tokens."""
    vocab = student_logits.shape[-1]
    # fp32 softmaxes even under bf16 autocast: a log-sum-exp over a vocabulary loses digits.
    student = student_logits.float().reshape(-1, vocab)
    teacher = teacher_logits.float().reshape(-1, vocab)
    soft = F.kl_div(F.log_softmax(student / temperature, dim=-1),
                    F.log_softmax(teacher / temperature, dim=-1),
                    log_target=True, reduction="batchmean")
    hard = F.cross_entropy(student, labels.reshape(-1))
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


class DistillationTask:
    """Next-token training whose loss also pulls the student toward a frozen teacher.

    Batches and held-out metrics are those of ``base``; only the training loss differs.
    """

    def __init__(self, base: CausalLMTask, teacher: nn.Module, temperature: float,
                 alpha: float) -> None:
        self.base = base
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature = temperature
        self.alpha = alpha

    def train_micro_batches(self, step: int, dp_rank: int) -> list[Batch]:
        return self.base.train_micro_batches(step, dp_rank)

    def eval_micro_batches(self, dp_rank: int) -> list[Batch]:
        return self.base.eval_micro_batches(dp_rank)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The distillation loss of one micro-batch (module docstring)."""
        student_logits = model(input_ids=batch["input_ids"]).logits
        with torch.no_grad():
            teacher_logits = self.teacher(input_ids=batch["input_ids"]).logits
        return distillation_loss(student_logits, teacher_logits, batch["labels"],
                                 self.temperature, self.alpha)

    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        # The student's own next-token loss, not the distillation objective.
        return self.base.eval_sums(model, batch)

    def eval_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        return self.base.eval_metrics(totals)


def student_config(teacher: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The teacher's config fields (a config dict) that shape the model, with ``changes``."""
    inherited = {name: value for name, value in teacher.items() if name not in _NOT_INHERITED}
    return {**inherited, **changes}


def build_student(teacher: PreTrainedModel, changes: dict[str, Any],
                  tokenizer: TextTokenizer, seed: int) -> PreTrainedModel:
    """A freshly initialised student of the teacher's family, reading the same tokenizer."""
    spec = ModelSpec(architecture=teacher.config.model_type,
                     config=student_config(teacher.config.to_diff_dict(), changes))
    try:
        student = build_model(spec, tokenizer, seed)
    except SpecError as err:
        raise SpecError(f"compress.student: {err}") from None
    teacher_vocab = teacher.get_output_embeddings().weight.shape[0]
    student_vocab = student.get_output_embeddings().weight.shape[0]
    if student_vocab != teacher_vocab:
        raise SpecError(
            f"the teacher predicts {teacher_vocab} token ids but its tokenizer has "
            f"{student_vocab}; distillation compares the two distributions id by id, so use a "
            f"teacher whose output width equals its tokenizer's vocabulary"
        )
    return student
