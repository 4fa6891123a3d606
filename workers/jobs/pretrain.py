"""Pretraining: a causal LM from scratch (or from weights) on a text corpus, next-token loss.

A finished job also writes ``run_dir/export/`` (transformers weights and tokenizer), the folder
a finetune job starts from (see :mod:`workers.core.export`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from scheduler.domain.errors import PlanError
from scheduler.domain.plan import Plan
from scheduler.domain.spec import JobSpec
from scheduler.gangs.protocol import JobFile
from workers.core.corpus import load_documents
from workers.core.data import BatchLayout, split_windows, token_stream
from workers.core.distributed import DistContext
from workers.core.export import export_model
from workers.core.model import build_model, parameter_count
from workers.core.optim import build_lr_schedule, build_optimizer
from workers.core.parallelize import ParallelDims, check_plan, compute_dtype, parallelize
from workers.core.preemption import StopRequest
from workers.core.progress import ProgressReporter
from workers.core.tasks import CausalLMTask
from workers.core.tokenizer import build_tokenizer
from workers.core.trainer import Trainer, TrainerConfig, TrainResult
from workers.core.utilization import build_utilization

logger = logging.getLogger(__name__)


def check_batch(spec: JobSpec, plan: Plan) -> None:
    """The plan must realise exactly the global batch the spec asks for."""
    if plan.global_batch != spec.batch.global_batch:
        raise PlanError(
            f"micro_batch × grad_accum × dp = {plan.micro_batch} × {plan.grad_accum} × "
            f"{plan.dp} = {plan.global_batch} ≠ batch.global_batch {spec.batch.global_batch}"
        )


def trainer_config(spec: JobSpec, plan: Plan, dims: ParallelDims, ctx: DistContext,
                   **extra: Any) -> TrainerConfig:
    """The loop's settings every job kind shares, from the spec and the plan; ``extra`` sets
    the kind-specific ones (``eval_at_start``, ``utilization``)."""
    total_steps = spec.total_steps()
    return TrainerConfig(
        total_steps=total_steps, micro_batch=plan.micro_batch, grad_accum=plan.grad_accum,
        dp_size=dims.dp, dp_rank=dims.dp_rank(ctx.rank), seq_len=spec.data.seq_len,
        grad_clip=spec.optimizer.grad_clip,
        checkpoint_interval_steps=spec.checkpoint.interval_steps,
        checkpoint_keep=spec.checkpoint.keep,
        compute_dtype=compute_dtype(plan.precision, ctx.device),
        log_every_steps=max(1, total_steps // 20),
        **extra,
    )


def build_trainer(job: JobFile, spec: JobSpec, plan: Plan, ctx: DistContext,
                  stop: StopRequest) -> Trainer:
    """Everything a pretraining rank needs, built in dependency order."""
    # 1. Check the plan against the real gang before building anything.
    dims = check_plan(plan, ctx.world_size)
    check_batch(spec, plan)
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    # 2. Data: documents, tokenizer (rank 0 trains BPE once), packed windows, the task.
    documents = load_documents(spec.data, spec.seed)
    tokenizer = build_tokenizer(spec.tokenizer, run_dir, documents, ctx.is_rank_zero, ctx.barrier)
    tokens = token_stream(documents, tokenizer)
    train_data, eval_data = split_windows(tokens, spec.data.seq_len, spec.data.eval_fraction)
    layout = BatchLayout(dp_size=dims.dp, grad_accum=plan.grad_accum,
                         micro_batch=plan.micro_batch)
    task = CausalLMTask(train_data, eval_data, spec.seed, layout, spec.work.eval_batches)

    # 3. Model, then parallelism.
    base_model = build_model(spec.model, tokenizer, spec.seed)
    # Different dropout masks per rank; the same per rank on every run of the job.
    torch.manual_seed(spec.seed * 1_000_003 + ctx.rank + 1)
    logger.info("model %s: %.2f M parameters, vocabulary %d, %d train / %d eval windows",
                type(base_model).__name__, parameter_count(base_model) / 1e6,
                tokenizer.vocab_size, len(train_data), len(eval_data) if eval_data else 0)
    model = parallelize(base_model, plan, dims, ctx)

    # 4. Optimizer and schedule, over the parameters of the wrapped model.
    total_steps = spec.total_steps()
    optimizer = build_optimizer(model, spec.optimizer)
    lr_schedule = build_lr_schedule(optimizer, spec.optimizer, total_steps)

    config = trainer_config(
        spec, plan, dims, ctx,
        utilization=build_utilization(base_model.config.to_dict(), spec.data.seq_len, ctx),
    )
    reporter = ProgressReporter(job.progress_path, job.attempt, enabled=ctx.is_rank_zero)
    return Trainer(config, model, optimizer, lr_schedule, task, ctx, job.checkpoint_dir,
                   reporter, stop)


def tokenizer_source(spec: JobSpec, run_dir: Path) -> Path | None:
    """The transformers tokenizer folder of a pretrain job; None for the byte tokenizer."""
    if spec.tokenizer.kind == "bpe":
        return run_dir / "tokenizer"
    if spec.tokenizer.kind == "path":
        return Path(spec.tokenizer.path) if spec.tokenizer.path else None
    return None


def run_pretrain(job: JobFile, spec: JobSpec, plan: Plan, ctx: DistContext,
                 stop: StopRequest) -> TrainResult:
    """Build the trainer, resume if the job file says so, train, and export when done."""
    trainer = build_trainer(job, spec, plan, ctx, stop)
    start_step = trainer.restore(Path(job.resume_from)) if job.resume_from else 0
    result = trainer.run(start_step)
    if result.outcome == "done":
        export_model(trainer.model, job.export_dir, tokenizer_source(spec, Path(job.run_dir)), ctx)
    return result
