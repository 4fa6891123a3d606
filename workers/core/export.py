"""The trained model as a transformers folder: ``save_pretrained`` weights plus the tokenizer.

A job that ends with ``done`` writes ``run_dir/export/`` (``JobFile.export_dir``):
``config.json``, the weights as safetensors and the tokenizer files, so
``AutoModel*.from_pretrained`` and ``AutoTokenizer`` read it as they read any hub folder, and a
finetune job can start from it (``model.path: job:NAME`` names the export of the newest
succeeded job called NAME). Checkpoints stay DCP folders for resuming; the export is the
model to use.

Like a checkpoint, the folder is written beside its final name and renamed into place, so an
interrupted export never leaves a half-written folder behind the final name.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoTokenizer, PreTrainedModel
from transformers.utils import logging as transformers_logging

from workers.core.distributed import DistContext

logger = logging.getLogger(__name__)
# Progress bars of saving and loading shards would fill every rank's log with carriage returns.
transformers_logging.disable_progress_bar()


def unwrap(model: nn.Module) -> nn.Module:
    """The module a data-parallel wrapper holds (DDP's ``.module``), or ``model`` itself."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def gather_full_state_dict(model: nn.Module) -> dict[str, Any]:
    """Unsharded weights on the CPU of rank 0 (other ranks get ``{}``); every rank must call.

    Under FSDP this is an all-gather per parameter; under DDP each rank already holds them all.
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def save_tokenizer(source: Path | None, directory: Path) -> bool:
    """Copy the transformers tokenizer at ``source`` into ``directory``; False if none exists.

    A byte-level tokenizer has no files: a finetune job of such a model names it again with
    ``tokenizer: {kind: byte}``.
    """
    if source is None:
        return False
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(directory))
    return True


def save_pretrained_folder(model: PreTrainedModel, directory: Path,
                           tokenizer_source: Path | None,
                           state_dict: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (or ``state_dict`` in its layout) and the tokenizer as ``directory``.

    Call on one rank only. Returns ``directory`` once it has its final name.
    """
    staging = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging), state_dict=state_dict, safe_serialization=True)
    if not save_tokenizer(tokenizer_source, staging):
        logger.warning("export %s has no tokenizer files (byte-level tokenizer); load it with "
                       "tokenizer kind byte", directory)
    return publish_folder(staging, directory)


def publish_folder(staging: Path, directory: Path) -> Path:
    """Give a fully written ``staging`` folder the final name ``directory``.

    A retry that writes the folder again first takes the old one's final name away, then
    deletes it, so a reader never sees a half-replaced folder under the final name."""
    if directory.exists():
        superseded = directory.with_name(f"{directory.name}.superseded")
        shutil.rmtree(superseded, ignore_errors=True)
        os.replace(directory, superseded)
        shutil.rmtree(superseded, ignore_errors=True)
    os.replace(staging, directory)
    return directory


def export_model(model: nn.Module, directory: Path, tokenizer_source: Path | None,
                 ctx: DistContext) -> Path:
    """Gather the trained weights of a (wrapped) model and save them as ``directory``.

    Every rank must call this; rank 0 writes, and nobody returns before the folder is in place.
    """
    state_dict = gather_full_state_dict(model)
    if ctx.is_rank_zero:
        inner = unwrap(model)
        if not isinstance(inner, PreTrainedModel):
            raise TypeError(f"cannot export {type(inner).__name__}: not a transformers model")
        save_pretrained_folder(inner, directory, tokenizer_source, state_dict)
        logger.info("exported the model to %s", directory)
    ctx.barrier()
    return directory
