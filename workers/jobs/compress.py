"""Compress jobs: quantize, prune or distill the model in ``model.path``, measured before and after.

Quantize and prune run in one process (the spec allows only ``resources.devices: 1``, so
latency is timed on a machine no other rank of the job competes for):

1. tokenizer, held-out windows and the model (and a copy of it, the "before");
2. compress the model and export it to ``run_dir/export/`` (:mod:`workers.core.compress_export`);
3. measure the original against the model loaded back from the export, so the "after" numbers
   are those of what was saved (:mod:`workers.core.compress_measure`);
4. report: ``run_dir/report.json``, a ``compress`` progress event, ``done``.

A SIGTERM that arrives while step 1 loads stops the job before it compresses (it exits as
preempted and a retry starts over); after that the job finishes, which takes seconds.

Distill trains the student with the shared trainer under whatever plan the scheduler chose
(DDP over the gang), checkpointing and resuming like pretraining; then every rank joins the
export, and rank 0 measures teacher (before) against student (after) and reports as in 3–4.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from scheduler.domain.compress_spec import CompressSpec
from scheduler.domain.errors import PlanError
from scheduler.domain.plan import Plan
from scheduler.domain.spec import JobSpec
from scheduler.gangs.protocol import JobFile
from workers.core.compress_distill import DistillationTask, build_student
from workers.core.compress_export import (
    load_compressed_model,
    save_compressed_model,
    save_quantized_model,
    write_compression_info,
)
from workers.core.compress_measure import ModelMeasurement, compare_models
from workers.core.compress_prune import prune_magnitude
from workers.core.compress_quantize import quantize_int4_weight_only, quantize_int8_dynamic
from workers.core.corpus import load_documents
from workers.core.data import BatchLayout, PackedWindows, split_windows, token_stream
from workers.core.distributed import DistContext
from workers.core.export import export_model
from workers.core.metrics import StepTimer
from workers.core.model import build_model, parameter_count
from workers.core.optim import build_lr_schedule, build_optimizer
from workers.core.parallelize import check_plan, parallelize
from workers.core.preemption import StopRequest
from workers.core.progress import ProgressReporter
from workers.core.tasks import Batch, CausalLMTask
from workers.core.tokenizer import (
    ByteTokenizer,
    PretrainedTokenizer,
    TextTokenizer,
    model_tokenizer_folder,
)
from workers.core.trainer import Trainer, TrainResult
from workers.jobs.pretrain import check_batch, trainer_config

logger = logging.getLogger(__name__)

REPORT_FILE = "report.json"
SCRATCH_DIR = "compress-scratch"


def _text(spec: JobSpec) -> tuple[TextTokenizer, PackedWindows, PackedWindows]:
    """The tokenizer and the job's data as train and held-out windows."""
    folder = model_tokenizer_folder(spec)
    tokenizer: TextTokenizer = ByteTokenizer() if folder is None else PretrainedTokenizer(folder)
    tokens = token_stream(load_documents(spec.data, spec.seed), tokenizer)
    train, held_out = split_windows(tokens, spec.data.seq_len, spec.data.eval_fraction)
    # JobSpec requires eval_fraction > 0 for compress jobs, and then at least one window.
    assert held_out is not None
    return tokenizer, train, held_out


def _measuring_task(spec: JobSpec, plan: Plan, train: PackedWindows,
                    held_out: PackedWindows) -> tuple[CausalLMTask, list[Batch]]:
    """The held-out batches measured in one process: the windows the gang's eval covers."""
    layout = BatchLayout(dp_size=1, grad_accum=1, micro_batch=plan.micro_batch)
    # A trainer over dp ranks evaluates eval_batches per rank; dp × as many batches in one
    # process are the very same windows (data.eval_micro_batches), so the numbers agree.
    task = CausalLMTask(train, held_out, spec.seed, layout, spec.work.eval_batches * plan.dp)
    return task, task.eval_micro_batches(dp_rank=0)


@contextlib.contextmanager
def _saved_copy(model: PreTrainedModel, scratch: Path) -> Iterator[Path]:
    """``model`` saved as ``save_pretrained`` writes it, in ``scratch`` (removed afterwards)."""
    shutil.rmtree(scratch, ignore_errors=True)
    model.save_pretrained(str(scratch), safe_serialization=True)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _cpu_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` CPU threads (None: as they are); yields the count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _write_report(job: JobFile, reporter: ProgressReporter, settings: CompressSpec,
                  batches: list[Batch], threads: int, before: ModelMeasurement,
                  after: ModelMeasurement, details: dict[str, Any]) -> dict[str, Any]:
    """Write ``report.json`` and the ``compress`` progress event; returns the report."""
    report = {
        "method": settings.method,
        "settings": settings.method_settings(),
        "export": str(job.export_dir),
        "threads": threads,
        "latency_batch_shape": list(batches[0]["input_ids"].shape),
        "eval_batches": len(batches),
        "before": before.as_dict(),
        "after": after.as_dict(),
        "details": details,
    }
    path = Path(job.run_dir) / REPORT_FILE
    staging = path.with_suffix(f".tmp-{os.getpid()}")
    staging.write_text(json.dumps(report, indent=2))
    os.replace(staging, path)
    event_fields = ("method", "settings", "threads", "latency_batch_shape", "before", "after")
    reporter.emit("compress", report=str(path), **{name: report[name] for name in event_fields})
    return report


def _compress_in_place(model: PreTrainedModel, settings: CompressSpec, directory: Path,
                       tokenizer_source: Path | None) -> dict[str, Any]:
    """Quantize or prune ``model``, export it to ``directory``; returns what changed."""
    info = {"method": settings.method,
            "settings": settings.method_settings()}
    if settings.method == "quantize":
        if settings.dtype == "int8":
            result = quantize_int8_dynamic(model)
        else:
            result = quantize_int4_weight_only(model, settings.group_size)
        for name, reason in result.skipped.items():
            logger.warning("left %s in fp32: %s", name, reason)
        save_quantized_model(model, result, settings.group_size, directory, tokenizer_source,
                             info)
        return {"quantized_layers": len(result.quantized), "fp32_layers": result.skipped}
    assert settings.sparsity is not None  # CompressSpec requires it for prune
    pruned = prune_magnitude(model, settings.sparsity, settings.structure)
    save_compressed_model(model, directory, tokenizer_source,
                          {**info, "measured_sparsity": pruned.sparsity})
    return {"pruned_layers": len(pruned.layers), "measured_sparsity": pruned.sparsity,
            "pruned_weights": pruned.weights, "zero_weights": pruned.zero_weights}


def run_post_training(job: JobFile, spec: JobSpec, plan: Plan, ctx: DistContext,
                      stop: StopRequest) -> TrainResult:
    """Quantize or prune (steps 1–4 of the module docstring) in this one process."""
    settings = spec.compress
    assert settings is not None  # JobSpec guarantees the section for kind: compress
    if ctx.world_size != 1:
        raise PlanError(f"compress method {settings.method} runs in one process, but the "
                        f"gang has {ctx.world_size} ranks; submit it with resources.devices: 1")
    check_plan(plan, ctx.world_size)
    reporter = ProgressReporter(job.progress_path, job.attempt, enabled=True)
    reporter.emit("start", step=0, total_steps=1)
    timer, run_dir = StepTimer(), Path(job.run_dir)

    # 1. Tokenizer, held-out windows, the model and an untouched copy of it.
    with timer.phase("1_load"):
        tokenizer, train, held_out = _text(spec)
        task, batches = _measuring_task(spec, plan, train, held_out)
        model = build_model(spec.model, tokenizer, spec.seed).eval()
        original = copy.deepcopy(model)
    if stop.requested:
        reporter.emit("preempted", step=0, path=None)
        return TrainResult("preempted", 0, None, None, None)
    # 2. Compress and export.
    with timer.phase("2_compress_and_export"):
        details = _compress_in_place(model, settings, job.export_dir, model_tokenizer_folder(spec))
    # 3. Measure the original against what was saved.
    with (timer.phase("3_measure"), _saved_copy(original, run_dir / SCRATCH_DIR) as saved,
          _cpu_threads(settings.latency_threads) as threads):
        compressed = load_compressed_model(job.export_dir)
        before, after = compare_models(original, saved, compressed, job.export_dir, task,
                                       batches, settings.latency_runs)
    # 4. Report.
    details["phase_times_s"] = {name: round(value, 3)
                                for name, value in timer.phase_times_s.items()}
    _write_report(job, reporter, settings, batches, threads, before, after, details)
    logger.info("compress %s: before %s after %s (%s)", settings.method, before, after, details)
    reporter.emit("done", step=1, loss=None, **after.metrics)
    return TrainResult("done", 1, None, after.eval_loss, None, after.metrics)


def _move(model: nn.Module, device: torch.device) -> None:
    # Through nn.Module: transformers' own annotation of PreTrainedModel.to misleads mypy.
    model.to(device)


def build_distill_trainer(job: JobFile, spec: JobSpec, plan: Plan, ctx: DistContext,
                          stop: StopRequest) -> tuple[Trainer, PreTrainedModel, PackedWindows,
                                                      PackedWindows]:
    """The student's trainer on a distillation task; also the teacher and the data."""
    settings = spec.compress
    assert settings is not None and settings.student is not None  # CompressSpec guarantees
    # 1. Check the plan against the real gang before building anything.
    dims = check_plan(plan, ctx.world_size)
    check_batch(spec, plan)
    # 2. Data, teacher, student, then parallelism (the teacher stays a plain local module).
    tokenizer, train, held_out = _text(spec)
    teacher = build_model(spec.model, tokenizer, spec.seed)
    _move(teacher, ctx.device)
    student = build_student(teacher, settings.student, tokenizer, spec.seed)
    logger.info("distilling %s (%.2f M parameters) into a student of %.2f M", spec.model.path,
                parameter_count(teacher) / 1e6, parameter_count(student) / 1e6)
    # Different dropout masks per rank; the same per rank on every run of the job.
    torch.manual_seed(spec.seed * 1_000_003 + ctx.rank + 1)
    model = parallelize(student, plan, dims, ctx)
    layout = BatchLayout(dp_size=dims.dp, grad_accum=plan.grad_accum,
                         micro_batch=plan.micro_batch)
    base = CausalLMTask(train, held_out, spec.seed, layout, spec.work.eval_batches)
    task = DistillationTask(base, teacher, settings.temperature, settings.alpha)
    # 3. Optimizer, schedule and the loop.
    total_steps = spec.total_steps()
    optimizer = build_optimizer(model, spec.optimizer)
    lr_schedule = build_lr_schedule(optimizer, spec.optimizer, total_steps)
    config = trainer_config(spec, plan, dims, ctx)
    reporter = ProgressReporter(job.progress_path, job.attempt, enabled=ctx.is_rank_zero)
    trainer = Trainer(config, model, optimizer, lr_schedule, task, ctx, job.checkpoint_dir,
                      reporter, stop)
    return trainer, teacher, train, held_out


def run_distill(job: JobFile, spec: JobSpec, plan: Plan, ctx: DistContext,
                stop: StopRequest) -> TrainResult:
    """Train the student, export it, and report teacher (before) against student (after)."""
    settings = spec.compress
    assert settings is not None
    trainer, teacher, train, held_out = build_distill_trainer(job, spec, plan, ctx, stop)
    start_step = trainer.restore(Path(job.resume_from)) if job.resume_from else 0
    result = trainer.run(start_step)
    if result.outcome != "done":
        return result
    export_model(trainer.model, job.export_dir, model_tokenizer_folder(spec), ctx)
    if ctx.is_rank_zero:
        write_compression_info(job.export_dir, {
            "method": settings.method,
            "settings": settings.method_settings(),
            "teacher": spec.model.path})
        task, batches = _measuring_task(spec, plan, train, held_out)
        # Both on the device the gang trained on, so their latencies compare.
        student = load_compressed_model(job.export_dir)
        _move(student, ctx.device)
        with (_saved_copy(teacher, Path(job.run_dir) / SCRATCH_DIR) as saved,
              _cpu_threads(settings.latency_threads) as threads):
            before, after = compare_models(teacher, saved, student, job.export_dir, task,
                                           batches, settings.latency_runs)
        details = {"teacher": spec.model.path, "student_config": settings.student,
                   "steps": result.step, "final_train_loss": result.loss}
        _write_report(job, trainer.reporter, settings, batches, threads, before, after,
                      details)
    # The other ranks wait for the report, so the gang ends only once it is written.
    ctx.barrier()
    return result


def run_compress(job: JobFile, spec: JobSpec, plan: Plan, ctx: DistContext,
                 stop: StopRequest) -> TrainResult:
    """Run one attempt of a compress job on this rank."""
    assert spec.compress is not None  # JobSpec guarantees the section for kind: compress
    if spec.compress.method == "distill":
        return run_distill(job, spec, plan, ctx, stop)
    return run_post_training(job, spec, plan, ctx, stop)
