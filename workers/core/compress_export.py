"""A compress job's model on disk (``run_dir/export/``), and how to load it back.

Every export holds ``config.json``, the tokenizer files and ``compression.json`` (method,
settings, which layers changed). The weights:

* pruned models and distilled students are ordinary models: ``model.safetensors`` as
  ``save_pretrained`` writes it, which any transformers loader reads;
* quantized models are not: their layers hold codes and scales that transformers' own loader
  does not know, so they go to ``quantized.safetensors`` (the layout is in
  :mod:`workers.core.compress_quantize`). The different name is deliberate: a plain
  ``from_pretrained`` of the folder then fails for want of weights instead of silently
  initialising random ones. :func:`load_compressed_model` reads either kind.

The folder is written beside its final name and renamed into place, as checkpoints are.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from workers.core.compress_quantize import (
    QuantizeResult,
    load_quantized_state,
    quantized_state_dict,
)
from workers.core.export import publish_folder, save_tokenizer

COMPRESSION_FILE = "compression.json"
QUANTIZED_WEIGHTS_FILE = "quantized.safetensors"


def _staging(directory: Path) -> Path:
    staging = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def write_compression_info(directory: Path, info: dict[str, Any]) -> None:
    """Write ``compression.json`` into ``directory`` whole (beside it, then renamed)."""
    staging = directory / f"{COMPRESSION_FILE}.tmp-{os.getpid()}"
    staging.write_text(json.dumps(info, indent=2))
    os.replace(staging, directory / COMPRESSION_FILE)


def _publish(staging: Path, directory: Path, info: dict[str, Any]) -> Path:
    """Write ``compression.json`` into ``staging`` and rename it to ``directory``."""
    write_compression_info(staging, info)
    return publish_folder(staging, directory)


def save_compressed_model(model: PreTrainedModel, directory: Path,
                          tokenizer_source: Path | None, info: dict[str, Any]) -> Path:
    """Save a pruned or distilled (ordinary) model with ``info`` as ``directory``."""
    staging = _staging(directory)
    model.save_pretrained(str(staging), safe_serialization=True)
    save_tokenizer(tokenizer_source, staging)
    return _publish(staging, directory, info)


def save_quantized_model(model: PreTrainedModel, result: QuantizeResult, group_size: int,
                         directory: Path, tokenizer_source: Path | None,
                         info: dict[str, Any]) -> Path:
    """Save a quantized model (plain tensors, see the module docstring) as ``directory``."""
    staging = _staging(directory)
    model.config.save_pretrained(str(staging))
    save_file(quantized_state_dict(model), str(staging / QUANTIZED_WEIGHTS_FILE),
              metadata={"format": "pt"})
    save_tokenizer(tokenizer_source, staging)
    quantization = {"dtype": result.dtype, "group_size": group_size,
                    "layers": result.quantized, "skipped": result.skipped}
    return _publish(staging, directory, {**info, "quantization": quantization})


def read_compression_info(directory: Path) -> dict[str, Any] | None:
    """The ``compression.json`` of an export, or None for a folder without one."""
    path = directory / COMPRESSION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def load_compressed_model(directory: Path) -> PreTrainedModel:
    """The model of a compress job's export (or of any transformers folder), in eval mode."""
    info = read_compression_info(directory) or {}
    quantization = info.get("quantization")
    if quantization is None:
        model = AutoModelForCausalLM.from_pretrained(str(directory)).float()
        model.config.use_cache = False
        return model.eval()
    config = AutoConfig.from_pretrained(str(directory))
    # The float weights built here are all replaced by the saved ones below.
    model = AutoModelForCausalLM.from_config(config).float()
    state = load_file(str(directory / QUANTIZED_WEIGHTS_FILE))
    load_quantized_state(model, quantization["dtype"], quantization["layers"],
                         quantization["group_size"], state)
    return model.eval()
