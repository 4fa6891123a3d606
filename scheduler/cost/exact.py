"""Exact mode: measure one training step's peak memory by tracing, with no real memory.

The model is built on the meta device, given LoRA adapters by peft when asked, then handed
fake parameters and stepped under ``FakeTensorMode`` (tensors carry shapes and dtypes but no
storage) while torch's ``MemTracker`` accounts every storage by kind: parameters, gradients,
optimizer states (including foreach temporaries), activations, buffers. Tracing the full model
would cost time proportional to its depth, so we trace 1 and 2 layers and extrapolate linearly:

    peak(L) = peak(1) + (L − 1) · (peak(2) − peak(1))       per memory kind

which is exact for a stack of identical blocks. It is the check on the closed forms in
:mod:`scheduler.cost.memory`; torch is imported only when this runs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

KINDS = ("parameters", "gradients", "optimizer", "activations", "buffers", "other")


@dataclass(frozen=True, slots=True)
class TracedPeak:
    """Peak bytes of one training step on one device, split by kind."""

    total_bytes: float
    by_kind: dict[str, float]


@dataclass(frozen=True, slots=True)
class LoraSetting:
    """LoRA adapters to trace: the fields of peft's ``LoraConfig`` that change memory."""

    rank: int = 8
    target_modules: tuple[str, ...] | str | None = None
    """Module names, ``"all-linear"``, or None for peft's default (Llama: q_proj, v_proj)."""
    dropout: float = 0.0


def build_model(
    architecture: str, config: dict[str, Any], lora: LoraSetting | None = None, device: str = "meta"
) -> Any:
    """A transformers causal LM from config fields, on ``device`` (meta: no memory), with a
    frozen base and peft adapters under LoRA."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    # No special-token ids: GPT-2's default 50256 lies outside small vocabularies.
    model_config = AutoConfig.for_model(
        architecture, **{"bos_token_id": None, "eos_token_id": None, **config}
    )
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(model_config)
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            targets = lora.target_modules
            model = get_peft_model(
                model,
                LoraConfig(
                    r=lora.rank,
                    lora_alpha=2 * lora.rank,
                    lora_dropout=lora.dropout,
                    target_modules=list(targets) if isinstance(targets, tuple) else targets,
                    fan_in_fan_out=architecture == "gpt2",  # GPT-2's Conv1D stores W transposed
                    task_type="CAUSAL_LM",
                ),
            )
    return model


def _fake_parameters(model: Any) -> None:
    """Replace every meta parameter and buffer by a fake CPU tensor of the same shape, once
    per tensor so tied weights stay tied. (peft cannot wrap a model built under
    FakeTensorMode: it moves adapters with ``Module.to``, which cannot swap fake parameters.)
    Call under ``FakeTensorMode``."""
    import torch

    fakes: dict[int, Any] = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                if id(param) not in fakes:
                    fake = torch.empty(param.shape, dtype=param.dtype)
                    fakes[id(param)] = torch.nn.Parameter(fake, param.requires_grad)
                module._parameters[name] = fakes[id(param)]
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                if id(buffer) not in fakes:
                    fakes[id(buffer)] = torch.empty(buffer.shape, dtype=buffer.dtype)
                module._buffers[name] = fakes[id(buffer)]


def memory_tracker(model: Any, optimizer: Any, *inputs: Any) -> Any:
    """A torch ``MemTracker`` over a model, its optimizer and inputs, frozen weights included.

    MemTracker hooks every parameter's gradient, and a frozen parameter refuses a hook, so the
    frozen ones are marked hooked already: they never get a gradient to account. Works on fake
    and on real tensors (``bench/cost_memory_measured.py``).
    """
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(model, optimizer, *inputs)
    mark_frozen(tracker, model)
    return tracker


def mark_frozen(tracker: Any, model: Any) -> None:
    """Mark ``model``'s frozen parameters as hooked already; again before each ``with
    tracker:``, since leaving it drops the marks with the real hooks."""
    from torch.utils.hooks import RemovableHandle

    for param in model.parameters():
        if not param.requires_grad:
            no_hooks: OrderedDict[int, Any] = OrderedDict()  # weak-referenceable, unlike dict
            tracker._param_to_grad_hook_handles[param] = (
                RemovableHandle(no_hooks),
                RemovableHandle(no_hooks),
            )


def peak_by_kind(tracker: Any) -> dict[str, float]:
    """The tracked peak per kind (``KINDS``) and its ``total``, from a ``MemTracker``."""
    (per_device,) = tracker.get_tracker_snapshot("peak").values()
    names = {
        "PARAM": "parameters",
        "GRAD": "gradients",
        "OPT": "optimizer",
        "ACT": "activations",
        "BUFFER": "buffers",
        "TEMP": "other",
        "OTH": "other",
    }
    out = dict.fromkeys(KINDS, 0.0)
    for key, value in per_device.items():
        label = str(key).rsplit(".", 1)[-1]
        if label in names:
            out[names[label]] += float(value)
    out["total"] = float(per_device["Total"])
    return out


def _autocast(precision: str) -> Any:
    """The trainer's forward context: bf16 autocast for ``bf16_mixed``. Traced on the CPU's
    autocast, whose cast lists match CUDA's for what a decoder runs (matmuls and SDPA to bf16;
    norms upcast by the model itself; the loss upcast by transformers)."""
    import contextlib

    import torch

    if precision == "bf16_mixed":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _trace(
    architecture: str,
    config: dict[str, Any],
    layers: int,
    seq_len: int,
    micro_batch: int,
    optimizer: str,
    lora: LoraSetting | None = None,
    precision: str = "fp32",
    recompute: bool = False,
) -> dict[str, dict[str, float]]:
    """Peaks by kind of each phase of one training step: forward and backward, optimizer."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    # num_hidden_layers is also GPT-2's alias of n_layer, and wins over it. The model keeps
    # transformers' default use_cache=True although the trainer turns the cache off: on fake
    # tensors transformers cannot check for padding and, without a cache, builds an explicit
    # causal mask and repeats the KV heads, which a real step does not; with the cache the trace
    # takes the real step's path (equal to real steps' tensor peaks to the byte:
    # bench/cost_memory_measured.py).
    fields = dict(config, num_hidden_layers=layers)
    if "n_positions" not in config:  # GPT-2's name for it; an alias would override it
        fields.setdefault("max_position_embeddings", seq_len)
    model = build_model(architecture, fields, lora)
    if precision == "bf16_mixed":
        # As workers.core.lora.freeze_base: frozen weights live in the compute dtype.
        for param in model.parameters():
            if not param.requires_grad:
                param.data = param.data.to(torch.bfloat16)
    if recompute:  # as workers.core.parallelize.apply_activation_checkpointing
        options = {"use_reentrant": False}
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs=options)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    with FakeTensorMode():
        _fake_parameters(model)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = (
            torch.optim.AdamW(params, lr=1e-3, foreach=True)
            if optimizer == "adamw"
            else torch.optim.SGD(params, lr=1e-3, foreach=True)
        )
        ids = torch.randint(0, model.config.vocab_size, (micro_batch, seq_len))
        tracker = memory_tracker(model, opt, ids)

        def forward_backward() -> None:
            with _autocast(precision):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()

        def optimizer_step() -> None:
            opt.step()
            opt.zero_grad()  # set_to_none, as the trainer

        # The first step creates the optimizer states the second's peaks include. Each phase
        # of the second is tracked on its own (entering resets the peak), because which one
        # peaks can change with depth: extrapolating one overall peak would mix the phases.
        with tracker:
            forward_backward()
            optimizer_step()
        phases = {}
        for name, phase in (("forward_backward", forward_backward), ("optimizer", optimizer_step)):
            tracker.reset_mod_stats()
            mark_frozen(tracker, model)
            with tracker:
                phase()
            phases[name] = peak_by_kind(tracker)
        return phases


def traced_peak(
    architecture: str,
    config: dict[str, Any],
    seq_len: int,
    micro_batch: int,
    optimizer: str = "adamw",
    lora: LoraSetting | None = None,
    precision: str = "fp32",
    recompute: bool = False,
) -> TracedPeak:
    """Peak memory of a whole model (one device) from 1- and 2-layer traces, set up as the
    trainer sets it up: fp32, or ``bf16_mixed`` (fp32 master weights, bf16 autocast, a frozen
    base in bf16); with ``lora``, of LoRA training (frozen base, peft adapters); with
    ``recompute``, of full activation checkpointing (transformers' per-block switch)."""
    layers = int(config.get("num_hidden_layers", config.get("n_layer", 1)))
    one = _trace(architecture, config, 1, seq_len, micro_batch, optimizer, lora, precision,
                 recompute)
    two = _trace(architecture, config, 2, seq_len, micro_batch, optimizer, lora, precision,
                 recompute)
    peaks = []
    for phase in one:
        by_kind = {k: one[phase][k] + (layers - 1) * (two[phase][k] - one[phase][k])
                   for k in (*KINDS, "total")}
        peaks.append((by_kind.pop("total"), by_kind))
    total, by_kind = max(peaks, key=lambda peak: peak[0])
    return TracedPeak(total, by_kind)
