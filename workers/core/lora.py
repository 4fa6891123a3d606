"""LoRA through peft: wrap a model so only low-rank adapters train, then merge them back.

:func:`apply_lora` freezes the base weights and adds ``B·A`` (rank ``r``, scaled ``alpha / r``)
beside each target linear layer (Hu et al. 2021); a classification head, new in every
finetune, trains in full (peft's ``modules_to_save`` for the sequence-classification task).
Checkpoints of a LoRA job hold only the trainable tensors (``TrainState(trainable_only=True)``);
the frozen base is read again from ``model.path`` on resume.

At the end :func:`save_adapter` writes the adapters alone (peft layout, ``run_dir/adapter/``)
and :func:`merge_lora` folds ``W + (alpha / r)·B·A`` into plain weights, so the export is an
ordinary transformers model that needs no peft to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from scheduler.domain.errors import SpecError
from scheduler.domain.finetune_spec import LoraSpec

ADAPTER_DIR_NAME = "adapter"
"""Folder in a LoRA job's run folder holding the trained adapters in peft's layout."""


def apply_lora(model: PreTrainedModel, spec: LoraSpec,
               task: Literal["causal_lm", "classification"]) -> PeftModel:
    """``model`` with frozen weights and trainable adapters on ``spec.target_modules``."""
    config = LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
        # None lets peft pick the attention projections it knows for the architecture.
        target_modules=list(spec.target_modules) if spec.target_modules else None,
        task_type=TaskType.SEQ_CLS if task == "classification" else TaskType.CAUSAL_LM,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        modules = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                          if isinstance(module, nn.Linear)})
        raise SpecError(
            f"finetune.lora: {err}. Linear layers of this {model.config.model_type} model: "
            f"{', '.join(modules)}; name some in finetune.lora.target_modules"
        ) from None


def freeze_base(model: nn.Module, dtype: torch.dtype | None) -> int:
    """Keep the frozen weights in the compute dtype (``dtype``; None: leave them in fp32).

    A frozen weight is only ever read: keeping it in fp32 under bf16 autocast would cost 4 bytes
    per parameter plus the 2-byte copy autocast makes for every matmul and autograd keeps for
    backward, three times what the bf16 weight alone needs (an 8B base: 48 GiB instead of 16).
    The adapters (and a classification head) stay fp32 master weights for the optimizer.
    Returns how many parameters were cast."""
    if dtype is None:
        return 0
    cast = 0
    for parameter in model.parameters():
        if not parameter.requires_grad and parameter.is_floating_point() \
                and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)
            cast += parameter.numel()
    return cast


def trainable_fraction(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def save_adapter(model: PeftModel, directory: Path) -> Path:
    """The adapters (and trained heads) alone, readable by ``PeftModel.from_pretrained``."""
    model.save_pretrained(str(directory))
    return directory


def merge_lora(model: PeftModel) -> PreTrainedModel:
    """The base model with every adapter folded into its weights (changes ``model``'s layers)."""
    merged = model.merge_and_unload()
    if not isinstance(merged, PreTrainedModel):
        raise TypeError(f"merging gave {type(merged).__name__}, not a transformers model")
    return merged
