"""Build the causal language model a job trains: from a transformers config, or from weights."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from scheduler.domain.errors import SpecError
from scheduler.domain.locations import local_path
from scheduler.domain.spec import ModelSpec
from workers.core.tokenizer import TextTokenizer

logger = logging.getLogger(__name__)

_CONFIG_KEYWORDS_NOT_IN_DICT = {"attn_implementation"}
"""Keywords every transformers config accepts that ``to_dict()`` does not list."""


def _check_config_fields(architecture: str, fields: dict[str, Any]) -> None:
    """Raise :class:`SpecError` if ``fields`` names a field ``architecture``'s config lacks.

    transformers silently keeps unknown keywords as attributes, so a typo such as
    ``hiden_size`` would train the default-sized model; we refuse it instead.
    """
    try:
        default = AutoConfig.for_model(architecture)
    except ValueError:
        raise SpecError(
            f"model.architecture: {architecture!r} is not a transformers model_type; "
            f"use one such as 'llama', 'qwen2', 'mistral' or 'gpt2'"
        ) from None
    known = set(default.to_dict()) | set(type(default).attribute_map) | _CONFIG_KEYWORDS_NOT_IN_DICT
    unknown = sorted(set(fields) - known)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise SpecError(
            f"model.config: {architecture} configs have no field(s) {', '.join(hints)}"
        )


def build_model(spec: ModelSpec, tokenizer: TextTokenizer, seed: int) -> PreTrainedModel:
    """A causal LM in fp32 on the CPU, its vocabulary sized to ``tokenizer``.

    Every rank builds the same initial weights (seeded by ``seed``); data parallelism would
    broadcast rank 0's weights anyway, but equal weights make a single rank's run reproducible.
    """
    if spec.path is not None:
        return _load_pretrained(local_path(spec.path), tokenizer)
    assert spec.architecture is not None  # ModelSpec guarantees one source
    _check_config_fields(spec.architecture, spec.config)
    requested_vocab = spec.config.get("vocab_size")
    if requested_vocab is not None and requested_vocab < tokenizer.vocab_size:
        raise SpecError(
            f"model.config.vocab_size {requested_vocab} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size} ids: raise it to at least {tokenizer.vocab_size} or "
            f"remove it")
    fields = {
        **spec.config,
        # An explicit size (a padded embedding) is kept; otherwise the tokenizer's ids.
        "vocab_size": requested_vocab or tokenizer.vocab_size,
        # The KV cache only serves generation; training would build and discard it every step.
        "use_cache": False,
    }
    if tokenizer.eos_id is not None:
        fields.update(eos_token_id=tokenizer.eos_id, bos_token_id=tokenizer.eos_id)
    config = AutoConfig.for_model(spec.architecture, **fields)
    torch.manual_seed(seed)
    # fp32 master weights: the torch default dtype, which from_config uses.
    return AutoModelForCausalLM.from_config(config)


def _load_pretrained(path: Path, tokenizer: TextTokenizer) -> PreTrainedModel:
    """Weights from ``path``; the tokenizer must not produce ids beyond the embedding."""
    # Checkpoints are often stored in bf16; training keeps fp32 master weights. Casting after
    # loading works on every transformers release (the dtype keyword was renamed in 4.56).
    model = AutoModelForCausalLM.from_pretrained(str(path)).float()
    embedding_rows = model.get_input_embeddings().weight.shape[0]
    if tokenizer.vocab_size > embedding_rows:
        raise SpecError(
            f"tokenizer has {tokenizer.vocab_size} ids but the model at {path} embeds only "
            f"{embedding_rows}; use the tokenizer the model was trained with (tokenizer.kind: "
            f"path, tokenizer.path: {path})"
        )
    model.config.use_cache = False
    return model


def parameter_count(model: torch.nn.Module) -> int:
    """Number of trainable parameters; ``parameters()`` already counts tied tensors once."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
