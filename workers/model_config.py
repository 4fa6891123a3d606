"""The full transformers config a job's model will have, without building the model.

Used by the API when a job is submitted or planned, never by the ranks: it lives beside the
training core (``workers.core``), which the API does not import.

The cost model is pure and knows no transformers defaults, so the planner asks this module for
the complete config dict (every default filled in, the vocabulary sized as the tokenizer will
size it) and hands that to :class:`scheduler.cost.flops.TransformerShape`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from scheduler.cost.flops import TransformerShape
from scheduler.cost.profile import ModelProfile, model_profile
from scheduler.domain.errors import SpecError
from scheduler.domain.locations import is_job_ref, local_path
from scheduler.domain.spec import BYTE_TOKENIZER_IDS, JobKind, JobSpec


def planned_vocab_size(spec: JobSpec) -> int | None:
    """Token ids the model will embed: exact for byte and a tokenizer folder; for BPE the
    requested size, an upper bound (training stops early on a small corpus)."""
    if spec.tokenizer.kind == "byte":
        return BYTE_TOKENIZER_IDS
    if spec.tokenizer.kind == "bpe":
        return spec.tokenizer.vocab_size
    return None


_TRANSFORMERS_IMPORT_LOCK = threading.Lock()

_PLANNING_DEFAULTS: dict[str, dict[str, Any]] = {
    # What transformers' config classes default the fields the cost model reads to
    # (``LlamaConfig``, ``MistralConfig``, ``Qwen2Config``, ``GPT2Config`` of transformers 5;
    # ``tests/unit/test_model_config.py`` checks every entry against transformers itself).
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
              "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": None,
              "head_dim": None, "tie_word_embeddings": False, "attention_bias": False,
              "mlp_bias": False, "attention_dropout": 0.0, "max_position_embeddings": 2048},
    "mistral": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "head_dim": None, "tie_word_embeddings": False, "attention_dropout": 0.0,
                "max_position_embeddings": 131072},
    "qwen2": {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
              "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
              "tie_word_embeddings": False, "attention_dropout": 0.0,
              "max_position_embeddings": 32768},
    "gpt2": {"vocab_size": 50257, "n_embd": 768, "n_inner": None, "n_layer": 12, "n_head": 12,
             "n_positions": 1024, "tie_word_embeddings": True, "attn_pdrop": 0.1},
}
"""Per architecture, every config field the planner reads, with transformers' default."""

_PLANNING_ALIASES: dict[str, dict[str, str]] = {
    "gpt2": {"hidden_size": "n_embd", "num_hidden_layers": "n_layer",
             "num_attention_heads": "n_head", "max_position_embeddings": "n_positions"},
}
"""transformers' ``attribute_map``: the standard names GPT-2's config stores under its own."""

_PLANNING_NEUTRAL = frozenset({
    "rope_theta", "rope_scaling", "rope_parameters", "rms_norm_eps", "layer_norm_epsilon",
    "initializer_range", "hidden_act", "activation_function", "use_cache", "bos_token_id",
    "eos_token_id", "pad_token_id", "dtype", "torch_dtype", "pretraining_tp", "sliding_window",
    "use_sliding_window", "resid_pdrop", "embd_pdrop", "attn_implementation",
})
"""Fields that change neither parameters, FLOPs nor activation memory."""


def planning_config(architecture: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    """The config the planner needs for ``architecture`` with ``fields``, without importing
    transformers (and torch with it: seconds), or None when a field is one it does not know
    (then transformers resolves the config)."""
    defaults = _PLANNING_DEFAULTS.get(architecture)
    if defaults is None:
        return None
    aliases = _PLANNING_ALIASES.get(architecture, {})
    resolved = {"model_type": architecture, **defaults}
    for name, value in fields.items():
        name = aliases.get(name, name)
        if name in defaults:
            resolved[name] = value
        elif name not in _PLANNING_NEUTRAL:
            return None
    return resolved


def resolved_model_config(spec: JobSpec) -> dict[str, Any]:
    """The model's config as ``config.to_dict()`` would give it (for an inline config of a
    common architecture, the fields the planner reads: :func:`planning_config`)."""
    if spec.model.path is not None:
        if is_job_ref(spec.model.path):
            raise SpecError(f"model.path {spec.model.path} is resolved when the job is "
                            f"submitted; plan the submitted job instead")
        config_file = Path(local_path(spec.model.path)) / "config.json"
        if not config_file.is_file():
            raise SpecError(f"model.path: {config_file} does not exist; a weights folder needs "
                            f"the config.json that save_pretrained writes")
        return dict(json.loads(config_file.read_text()))
    fields = dict(spec.model.config)
    vocab = planned_vocab_size(spec)
    if vocab is not None and "vocab_size" not in fields:  # an explicit size is kept
        fields["vocab_size"] = vocab
    assert spec.model.architecture is not None  # ModelSpec guarantees one source
    fast = planning_config(spec.model.architecture, fields)
    if fast is not None:
        return fast
    # transformers imports its model modules lazily, and two threads importing the same one at
    # once (a server's request threads) can see it half-initialized: one at a time.
    with _TRANSFORMERS_IMPORT_LOCK:
        from transformers import AutoConfig

        try:
            return dict(AutoConfig.for_model(spec.model.architecture, **fields).to_dict())
        except ValueError as err:
            raise SpecError(f"model.architecture {spec.model.architecture!r}: {err}") from None


def planning_profile(spec: JobSpec, config: dict[str, Any]) -> ModelProfile:
    """The cost model's view of what ``spec`` runs on the model whose full config is ``config``.

    pretrain and full finetune train the model as it is; LoRA trains its adapters only and runs
    replicated (single device or DDP); distillation trains the student (the teacher's config
    with the student's fields) while every rank holds the teacher and runs it forward;
    quantize and prune run the model forward on one device. Every trained parameter is stepped
    by the optimizer the spec names.
    """
    return replace(_profile_of_kind(spec, config), optimizer=spec.optimizer.name)


def _profile_of_kind(spec: JobSpec, config: dict[str, Any]) -> ModelProfile:
    seq_len = spec.data.seq_len
    if spec.kind is JobKind.FINETUNE and spec.finetune is not None \
            and spec.finetune.method == "lora":
        return lora_profile(spec, config)
    if spec.kind is JobKind.COMPRESS and spec.compress is not None:
        teacher = model_profile(config, seq_len)
        if spec.compress.method != "distill":
            return replace(teacher, trainable_params=0.0, strategies=("single",), trains=False)
        assert spec.compress.student is not None  # CompressSpec guarantees it for distill
        student = full_student_config(config, spec.compress.student)
        teacher_bytes = 2 if spec.precision in ("bf16", "fp16") else 4
        return replace(model_profile(student, seq_len),
                       resident_bytes=teacher.params * teacher_bytes,
                       extra_flops_per_token=teacher.flops_per_token / 3)
    return model_profile(config, seq_len)


def lora_profile(spec: JobSpec, config: dict[str, Any]) -> ModelProfile:
    """A LoRA finetune: adapters (and a new classification head) train, the base is frozen.

    Parameters: the adapters count r·(in + out) per adapted matrix (peft's own matching of
    target_modules; :meth:`TransformerShape.lora_parameter_count`). FLOPs per token: the frozen
    matrices skip their weight gradients, 2·N of training's 6·N, while the adapters train in
    full, 6·N_lora. Memory: frozen weights only, states for the trainable set, the activations
    the adapted layers read (:class:`scheduler.cost.memory.Adapters`). Runs replicated only."""
    finetune = spec.finetune
    assert finetune is not None
    lora = finetune.lora_settings
    shape = TransformerShape.from_config(config)
    try:
        adapters = shape.lora_parameter_count(lora.target_modules, lora.r)
        reads = tuple(layer.reads for layer in shape.adapted_layers(lora.target_modules))
    except ValueError as err:
        raise SpecError(f"finetune.lora: {err}") from None
    head = shape.hidden_size * finetune.num_labels + finetune.num_labels \
        if finetune.task == "classification" and finetune.num_labels else 0
    base = model_profile(config, spec.data.seq_len, trainable_params=adapters + head)
    frozen_weight_grads = 2 * shape.matmul_parameters
    return replace(
        base, params=base.params + adapters + head,
        flops_per_token=base.flops_per_token - frozen_weight_grads + 6 * adapters,
        recompute_flops_per_token=(base.recompute_flops_per_token or base.flops_per_token)
        - frozen_weight_grads + 6 * adapters,
        strategies=("single", "ddp"), adapter_reads=reads, adapter_dropout=lora.dropout > 0)


def full_student_config(teacher: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A distillation student's full config: the teacher's with ``changes``, by the rule
    :func:`workers.core.compress_distill.build_student` follows, reading the same vocabulary."""
    from transformers import AutoConfig

    from workers.core.compress_distill import student_config

    fields = {**student_config(teacher, changes), "vocab_size": teacher["vocab_size"]}
    return dict(AutoConfig.for_model(teacher["model_type"], **fields).to_dict())
