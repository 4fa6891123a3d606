"""Save and restore training state with ``torch.distributed.checkpoint`` (DCP), atomically.

A checkpoint holds the model, the optimizer, the LR schedule (all through DCP, so every rank
writes only its own shards and a later FSDP run can reshard them), each rank's random-number
state (``rng-rank-N.pt``) and ``meta.json`` (step and metrics, written last by rank 0).
The data position needs no state: batches are a pure function of (seed, step, rank), see
:mod:`workers.core.data`. Folder names and completeness rules: :mod:`checkpoint_layout`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful
from torch.optim.lr_scheduler import LRScheduler

from workers.core.checkpoint_layout import (
    COMPLETE_MARKER,
    checkpoint_name,
    latest_checkpoint,
    prune_checkpoints,
    staging_path,
)
from workers.core.distributed import DistContext

__all__ = ["TrainState", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)


class TrainState(Stateful):
    """Model, optimizer and LR schedule as one DCP entry; works for plain and wrapped models.

    With ``trainable_only`` the model part holds only parameters that require gradients (LoRA
    adapters and heads): frozen weights are reloaded from the job's ``model.path`` instead of
    being written again at every checkpoint.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 lr_schedule: LRScheduler, trainable_only: bool = False) -> None:
        self.model = model
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.trainable_only = trainable_only

    def state_dict(self) -> dict[str, Any]:
        # get_state_dict strips wrapper prefixes (DDP's "module.") and gathers nothing: each
        # rank hands DCP its local shards.
        options = StateDictOptions(ignore_frozen_params=self.trainable_only)
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer, options=options)
        return {"model": model_state, "optimizer": optimizer_state,
                "lr_schedule": self.lr_schedule.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The frozen weights are absent by design, so loading cannot be strict about them; the
        # check below keeps it strict about everything else.
        options = StateDictOptions(ignore_frozen_params=self.trainable_only,
                                   strict=not self.trainable_only)
        incompatible = set_state_dict(self.model, self.optimizer,
                                      model_state_dict=state_dict["model"],
                                      optim_state_dict=state_dict["optimizer"], options=options)
        if self.trainable_only:
            trainable = {name for name, parameter in self.model.named_parameters()
                         if parameter.requires_grad}
            missing = [name for name in incompatible.missing_keys if name in trainable]
            if missing or incompatible.unexpected_keys:
                raise RuntimeError(f"checkpoint does not match the trainable parameters: "
                                   f"missing {missing[:5]}, unexpected "
                                   f"{list(incompatible.unexpected_keys)[:5]}")
        self.lr_schedule.load_state_dict(state_dict["lr_schedule"])


def _rng_file(folder: Path, rank: int) -> Path:
    return folder / f"rng-rank-{rank}.pt"


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _publish(staging: Path, final: Path) -> None:
    """Rename ``staging`` to ``final``; an older folder of the same step is replaced."""
    if final.exists():
        # A later attempt re-reached a step an earlier one saved; the newest state wins. The old
        # folder loses its final name first so the complete one is never deleted in place.
        superseded = final.with_name(f"{final.name}.superseded")
        shutil.rmtree(superseded, ignore_errors=True)
        os.replace(final, superseded)
        shutil.rmtree(superseded, ignore_errors=True)
    os.replace(staging, final)
    _fsync_path(final.parent)


def save_checkpoint(checkpoint_dir: Path, step: int, state: TrainState, ctx: DistContext,
                    keep: int, meta: dict[str, Any]) -> Path:
    """Write the checkpoint of ``step`` on every rank and publish it; returns its final path.

    Every rank must call this. It returns only once the folder has its final name, so no rank
    exits (or is counted as preempted) while the checkpoint is still incomplete.
    """
    staging = staging_path(checkpoint_dir, step)
    final = checkpoint_dir / checkpoint_name(step)
    # 1. Rank 0 clears a staging folder an interrupted attempt may have left at this step.
    if ctx.is_rank_zero:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    ctx.barrier()
    # 2. Every rank writes its shards and its random-number state.
    dcp.save({"train": state}, checkpoint_id=str(staging))
    torch.save(_rng_state(ctx.device), _rng_file(staging, ctx.rank))
    _fsync_path(_rng_file(staging, ctx.rank))  # DCP syncs its own files; ours likewise
    # 3. Wait for all ranks' files before the folder may be called complete.
    ctx.barrier()
    # 4. Rank 0 writes the completeness marker, publishes the folder and prunes old ones.
    if ctx.is_rank_zero:
        marker = staging / COMPLETE_MARKER
        marker.write_text(json.dumps({"step": step, "world_size": ctx.world_size, **meta}))
        _fsync_path(marker)
        _publish(staging, final)
        prune_checkpoints(checkpoint_dir, keep)
    # 5. Nobody goes on until the checkpoint is published.
    ctx.barrier()
    return final


def load_checkpoint(path: Path, state: TrainState, ctx: DistContext) -> dict[str, Any]:
    """Restore ``state`` and this rank's random-number state; returns the checkpoint's meta."""
    marker = path / COMPLETE_MARKER
    if not marker.is_file():
        raise FileNotFoundError(
            f"{path} is not a complete checkpoint (no {COMPLETE_MARKER}); resume from "
            f"a folder named step-NNNNNNNN, e.g. latest_checkpoint() of the checkpoints dir"
        )
    meta: dict[str, Any] = json.loads(marker.read_text())
    dcp.load({"train": state}, checkpoint_id=str(path))
    rng_file = _rng_file(path, ctx.rank)
    if meta.get("world_size") == ctx.world_size and rng_file.is_file():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and ctx.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], ctx.device)
    else:
        # A different gang size has no rank-to-rank correspondence of random streams.
        logger.info("checkpoint %s: random-number state not restored (world size changed)", path)
    return meta
