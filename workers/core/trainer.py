"""The training loop shared by every job kind: numbered steps, checkpoints, clean preemption.

A step (see :meth:`Trainer.train_step`) is:

1. fetch this rank's micro-batches (a pure function of seed, step and data-parallel rank);
2. forward and backward each micro-batch, gradients all-reduced only with the last one;
3. clip gradients, step the optimizer and the LR schedule;
4. agree across ranks, in one collective, on the mean loss and whether any rank must stop.

Then :meth:`Trainer.run` goes on with

5. report the step (rank 0 appends to ``progress.jsonl``);
6. checkpoint every ``checkpoint_interval_steps`` and after the last step;
7. on an agreed stop (SIGTERM on any rank) checkpoint, report ``preempted`` and return, so the
   entry point exits with ``EXIT_PREEMPTED``.

After the last step it evaluates on the held-out data and reports ``eval`` and ``done`` (with
``eval_at_start``, a fresh run also reports an ``eval`` at step 0, before training).

What is trained on and how it is scored comes from a :class:`~workers.core.tasks.Task`
(causal LM, classification, instruction tuning), so every job kind runs through this loop.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from workers.core.checkpoint import TrainState, load_checkpoint, save_checkpoint
from workers.core.distributed import DistContext
from workers.core.grad_clip import clip_grad_norm_
from workers.core.metrics import FlopsUtilization, StepMetrics, StepTimer, peak_rss_bytes
from workers.core.parallelize import gradient_sync
from workers.core.preemption import StopRequest
from workers.core.progress import ProgressReporter
from workers.core.tasks import Batch, Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerConfig:
    """How long to train and how the loop batches, clips, saves and evaluates."""

    total_steps: int
    micro_batch: int
    grad_accum: int
    dp_size: int
    dp_rank: int
    seq_len: int
    """Tokens per sequence (padded length for finetuning tasks): the unit of tokens/s."""
    grad_clip: float | None
    checkpoint_interval_steps: int
    checkpoint_keep: int
    compute_dtype: torch.dtype | None = None
    log_every_steps: int = 10
    eval_at_start: bool = False
    """Also evaluate before the first step, so a finetune reports its metrics before and after."""
    utilization: FlopsUtilization | None = None
    """Adds ``mfu`` and ``peak_flops`` to step events; None where FLOPs or peak are unknown."""

    @property
    def tokens_per_step(self) -> int:
        """Tokens the whole gang trains on in one optimizer step."""
        return self.dp_size * self.grad_accum * self.micro_batch * self.seq_len


@dataclass(frozen=True)
class TrainResult:
    """How an attempt ended on this rank: every rank returns the same outcome and step."""

    outcome: Literal["done", "preempted"]
    step: int
    loss: float | None
    eval_loss: float | None
    checkpoint: Path | None
    eval_metrics: dict[str, float] | None = None


class Trainer:
    """Runs optimizer steps ``start + 1 … total_steps`` of one attempt on one rank."""

    def __init__(self, config: TrainerConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                 lr_schedule: LRScheduler, task: Task, ctx: DistContext, checkpoint_dir: Path,
                 reporter: ProgressReporter, stop: StopRequest,
                 state: TrainState | None = None) -> None:
        self.config = config
        self.model = model
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.task = task
        self.ctx = ctx
        self.checkpoint_dir = checkpoint_dir
        self.reporter = reporter
        self.stop = stop
        # A job may checkpoint less than everything (LoRA: only the trainable adapters).
        self.state = state or TrainState(model, optimizer, lr_schedule)

    def restore(self, path: Path) -> int:
        """Load the checkpoint at ``path``; returns the step it was taken after."""
        meta = load_checkpoint(path, self.state, self.ctx)
        logger.info("resumed from %s at step %d", path, meta["step"])
        return int(meta["step"])

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        dtype = self.config.compute_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.ctx.device.type, dtype=dtype)

    def _to_device(self, batch: Batch) -> Batch:
        return {name: tensor.to(self.ctx.device, non_blocking=True)
                for name, tensor in batch.items()}

    def train_step(self, step: int) -> tuple[StepMetrics, bool]:
        """One optimizer step; returns its metrics and whether the gang agreed to stop."""
        config, timer = self.config, StepTimer()
        # 1. Fetch this rank's micro-batches.
        with timer.phase("data"):
            micro_batches = [self._to_device(batch)
                             for batch in self.task.train_micro_batches(step, config.dp_rank)]
        # 2. Forward and backward; only the last micro-batch's backward all-reduces gradients.
        with timer.phase("compute"):
            loss_sum = torch.zeros((), device=self.ctx.device)
            for index, batch in enumerate(micro_batches):
                with gradient_sync(self.model, enabled=index == len(micro_batches) - 1):
                    with self._autocast():
                        loss = self.task.loss(self.model, batch)
                    # Dividing here makes the accumulated gradient the mean over the step.
                    (loss / config.grad_accum).backward()
                loss_sum += loss.detach()
        # 3. Clip, step the optimizer and the schedule.
        with timer.phase("optimizer"):
            grad_norm = None
            if config.grad_clip is not None:
                # Sharded and tensor-parallel gradients need a norm completed over their mesh.
                grad_norm = clip_grad_norm_(self.model.parameters(), config.grad_clip)
            lr = float(self.optimizer.param_groups[0]["lr"])
            self.optimizer.step()
            self.lr_schedule.step()
            self.optimizer.zero_grad(set_to_none=True)
        # 4. Agree on the mean loss and on stopping: one collective for both.
        with timer.phase("agree"):
            local_loss = float(loss_sum.item()) / config.grad_accum
            stop_vote = 1.0 if self.stop.requested else 0.0
            loss_total, stop_votes = self.ctx.all_reduce_sum([local_loss, stop_vote])
        metrics = StepMetrics(step=step, loss=loss_total / self.ctx.world_size, lr=lr,
                              grad_norm=grad_norm, tokens=config.tokens_per_step,
                              step_time_s=timer.elapsed_s(), phase_times_s=timer.phase_times_s)
        return metrics, stop_votes > 0

    @torch.no_grad()
    def evaluate(self) -> dict[str, float] | None:
        """The task's eval metrics (``eval_loss`` ...) over every rank's held-out batches."""
        batches = self.task.eval_micro_batches(self.config.dp_rank)
        # Every rank gets the same number of batches (Task contract), so all agree on skipping.
        if not batches:
            return None
        self.model.eval()
        sums: dict[str, float] = {}
        for batch in batches:
            with self._autocast():
                batch_sums = self.task.eval_sums(self.model, self._to_device(batch))
            for name, value in batch_sums.items():
                sums[name] = sums.get(name, 0.0) + value
        self.model.train()
        names = sorted(sums)  # the same order on every rank, for one collective
        totals = self.ctx.all_reduce_sum([sums[name] for name in names])
        return self.task.eval_metrics(dict(zip(names, totals, strict=True)))

    def save(self, step: int, loss: float | None) -> Path:
        """Checkpoint after ``step`` on all ranks and report it."""
        start_s = time.perf_counter()
        meta = {"loss": loss, "tokens_seen": step * self.config.tokens_per_step,
                "attempt": self.reporter.attempt}
        path = save_checkpoint(self.checkpoint_dir, step, self.state, self.ctx,
                               self.config.checkpoint_keep, meta)
        save_time_s = time.perf_counter() - start_s
        self.reporter.emit("checkpoint", step=step, path=str(path), save_time_s=save_time_s)
        return path

    def _memory_fields(self) -> dict[str, int]:
        fields = {"peak_rss_bytes": peak_rss_bytes()}
        if self.ctx.device.type == "cuda":
            fields["device_peak_bytes"] = int(torch.cuda.max_memory_allocated(self.ctx.device))
            fields["device_reserved_bytes"] = int(
                torch.cuda.max_memory_reserved(self.ctx.device))
        return fields

    def run(self, start_step: int = 0) -> TrainResult:
        """Train from ``start_step`` (steps already done) to the end, or until told to stop."""
        config = self.config
        self.model.train()
        self.reporter.emit("start", step=start_step, total_steps=config.total_steps,
                           tokens_per_step=config.tokens_per_step)
        if config.eval_at_start and start_step == 0:
            before = self.evaluate()
            if before is not None:
                self.reporter.emit("eval", step=0, **before)
        loss: float | None = None
        last_saved: Path | None = None
        saved_step: int | None = None
        for step in range(start_step + 1, config.total_steps + 1):
            # 1-4. One optimizer step (see train_step).
            metrics, stop_agreed = self.train_step(step)
            loss = metrics.loss
            # 5. Report the step.
            utilization = (config.utilization.event_fields(metrics.tokens_per_s)
                           if config.utilization else {})
            self.reporter.emit("step", **metrics.as_event(), **self._memory_fields(),
                               **utilization)
            if step % config.log_every_steps == 0 or step == 1:
                logger.info("step %d/%d loss %.4f lr %.2e %.0f tok/s phases_s %s", step,
                            config.total_steps, loss, metrics.lr, metrics.tokens_per_s,
                            {k: round(v, 3) for k, v in metrics.phase_times_s.items()})
            # 6. Checkpoint on the interval and after the last step.
            if step % config.checkpoint_interval_steps == 0 or step == config.total_steps:
                last_saved, saved_step = self.save(step, loss), step
            # 7. Stop when any rank was asked to: every rank saw the same vote, so all stop here.
            if stop_agreed:
                if saved_step != step:
                    last_saved = self.save(step, loss)
                self.reporter.emit("preempted", step=step, path=str(last_saved))
                return TrainResult("preempted", step, loss, None, last_saved)
        metrics = self.evaluate()
        eval_loss = metrics.get("eval_loss") if metrics else None
        end_step = max(start_step, config.total_steps)
        if metrics is not None:
            self.reporter.emit("eval", step=end_step, **metrics)
        self.reporter.emit("done", step=end_step, loss=loss, **(metrics or {"eval_loss": None}),
                           **self._memory_fields())
        return TrainResult("done", end_step, loss, eval_loss, last_saved, metrics)
