"""The full transformers config a job's model will have, without building the model.

The cost model is pure and knows no transformers defaults, so the planner asks this module for
the complete config dict (every default filled in, the vocabulary sized as the tokenizer will
size it) and hands that to :class:`scheduler.cost.flops.TransformerShape`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scheduler.domain.errors import SpecError
from scheduler.domain.locations import is_job_ref, local_path
from scheduler.domain.spec import JobSpec

BYTE_VOCAB = 258
"""256 byte values plus end-of-text and padding (workers.core.tokenizer.ByteTokenizer)."""


def planned_vocab_size(spec: JobSpec) -> int | None:
    """Token ids the model will embed: exact for byte and a tokenizer folder; for BPE the
    requested size, an upper bound (training stops early on a small corpus)."""
    if spec.tokenizer.kind == "byte":
        return BYTE_VOCAB
    if spec.tokenizer.kind == "bpe":
        return spec.tokenizer.vocab_size
    return None


def resolved_model_config(spec: JobSpec) -> dict[str, Any]:
    """The model's config as ``config.to_dict()`` would give it."""
    if spec.model.path is not None:
        if is_job_ref(spec.model.path):
            raise SpecError(f"model.path {spec.model.path} is resolved when the job is "
                            f"submitted; plan the submitted job instead")
        config_file = Path(local_path(spec.model.path)) / "config.json"
        if not config_file.is_file():
            raise SpecError(f"model.path: {config_file} does not exist; a weights folder needs "
                            f"the config.json that save_pretrained writes")
        return dict(json.loads(config_file.read_text()))
    from transformers import AutoConfig

    fields = dict(spec.model.config)
    vocab = planned_vocab_size(spec)
    if vocab is not None:
        fields["vocab_size"] = vocab
    try:
        return dict(AutoConfig.for_model(spec.model.architecture, **fields).to_dict())
    except ValueError as err:
        raise SpecError(f"model.architecture {spec.model.architecture!r}: {err}") from None
