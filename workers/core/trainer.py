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

After the last step it evaluates on the held-out windows and reports ``eval`` and ``done``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from workers.core.checkpoint import TrainState, load_checkpoint, save_checkpoint
from workers.core.data import PackedWindows, StepSampler, eval_micro_batches
from workers.core.distributed import DistContext
from workers.core.metrics import StepMetrics, StepTimer, peak_rss_bytes
from workers.core.parallelize import gradient_sync
from workers.core.preemption import StopRequest
from workers.core.progress import ProgressReporter

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
    grad_clip: float | None
    checkpoint_interval_steps: int
    checkpoint_keep: int
    eval_batches: int
    compute_dtype: torch.dtype | None = None
    log_every_steps: int = 10

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


def causal_lm_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; the windows are already shifted, so no shift here."""
    logits = model(input_ids=inputs).logits
    # Softmax in fp32 even under bf16 autocast: the log-sum-exp over a vocabulary loses digits.
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


class Trainer:
    """Runs optimizer steps ``start + 1 … total_steps`` of one attempt on one rank."""

    def __init__(self, config: TrainerConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                 lr_schedule: LRScheduler, train_data: PackedWindows, sampler: StepSampler,
                 eval_data: PackedWindows | None, ctx: DistContext, checkpoint_dir: Path,
                 reporter: ProgressReporter, stop: StopRequest) -> None:
        self.config = config
        self.model = model
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.train_data = train_data
        self.sampler = sampler
        self.eval_data = eval_data
        self.ctx = ctx
        self.checkpoint_dir = checkpoint_dir
        self.reporter = reporter
        self.stop = stop
        self.state = TrainState(model, optimizer, lr_schedule)

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

    def train_step(self, step: int) -> tuple[StepMetrics, bool]:
        """One optimizer step; returns its metrics and whether the gang agreed to stop."""
        config, timer = self.config, StepTimer()
        # 1. Fetch this rank's micro-batches.
        with timer.phase("data"):
            micro_batches = []
            for ids in self.sampler.micro_batches(step, config.dp_rank):
                inputs, targets = self.train_data.batch(ids)
                micro_batches.append((inputs.to(self.ctx.device, non_blocking=True),
                                      targets.to(self.ctx.device, non_blocking=True)))
        # 2. Forward and backward; only the last micro-batch's backward all-reduces gradients.
        with timer.phase("compute"):
            loss_sum = torch.zeros((), device=self.ctx.device)
            for index, (inputs, targets) in enumerate(micro_batches):
                with gradient_sync(self.model, enabled=index == len(micro_batches) - 1):
                    with self._autocast():
                        loss = causal_lm_loss(self.model, inputs, targets)
                    # Dividing here makes the accumulated gradient the mean over the step.
                    (loss / config.grad_accum).backward()
                loss_sum += loss.detach()
        # 3. Clip, step the optimizer and the schedule.
        with timer.phase("optimizer"):
            grad_norm = None
            if config.grad_clip is not None:
                grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(),
                                                           config.grad_clip))
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
    def evaluate(self) -> float | None:
        """Mean eval loss over ``eval_batches`` batches per rank, averaged over all ranks."""
        if self.eval_data is None or self.config.eval_batches == 0:
            return None
        self.model.eval()
        batches = eval_micro_batches(len(self.eval_data), self.config.eval_batches,
                                     self.config.micro_batch, self.config.dp_rank,
                                     self.config.dp_size)
        loss_sum = 0.0
        for ids in batches:
            inputs, targets = self.eval_data.batch(ids)
            with self._autocast():
                loss = causal_lm_loss(self.model, inputs.to(self.ctx.device),
                                      targets.to(self.ctx.device))
            loss_sum += float(loss)
        self.model.train()
        total, count = self.ctx.all_reduce_sum([loss_sum, float(len(batches))])
        return total / count

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
        return fields

    def run(self, start_step: int = 0) -> TrainResult:
        """Train from ``start_step`` (steps already done) to the end, or until told to stop."""
        config = self.config
        self.model.train()
        self.reporter.emit("start", step=start_step, total_steps=config.total_steps,
                           tokens_per_step=config.tokens_per_step)
        loss: float | None = None
        last_saved: Path | None = None
        saved_step: int | None = None
        for step in range(start_step + 1, config.total_steps + 1):
            # 1-4. One optimizer step (see train_step).
            metrics, stop_agreed = self.train_step(step)
            loss = metrics.loss
            # 5. Report the step.
            self.reporter.emit("step", **metrics.as_event(), **self._memory_fields())
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
        eval_loss = self.evaluate()
        end_step = max(start_step, config.total_steps)
        if eval_loss is not None:
            self.reporter.emit("eval", step=end_step, eval_loss=eval_loss)
        self.reporter.emit("done", step=end_step, loss=loss, eval_loss=eval_loss,
                           **self._memory_fields())
        return TrainResult("done", end_step, loss, eval_loss, last_saved)
