"""Closed-form memory vs the measured peak of real CPU training steps.

Each configuration runs in a fresh Python process, so no run inherits another's freed-but-kept
heap. The process imports torch and the model's transformers modules (and peft for LoRA), notes
its peak resident set size (``ru_maxrss``: the baseline), builds the model with random weights
(real CPU tensors, fp32), optionally adds LoRA adapters (peft) or activation recomputation (the
trainer's own ``apply_activation_checkpointing``), and runs steps of forward, backward and
foreach AdamW. It measures

* the RSS growth: peak ``ru_maxrss`` after two steps (the first creates the optimizer states,
  the second's backward peaks with them) minus the baseline: what the operating system charged
  the process for the model and its step;
* the tensor peak: torch's ``MemTracker`` over the real tensors (parameters, gradients,
  optimizer states, activations, temporaries) during a third step, tracked apart so that the
  tracker's own bookkeeping stays out of the RSS figure: what the closed form models.

Every run is measured twice, with glibc malloc as it comes and with its mmap threshold fixed
(``ALLOCATORS``). The parent compares the closed form (``estimate_peak``, fp32, one device) with
the tensor peak, and fits the framework overhead, RSS growth − tensor peak, as a constant plus a
proportion of the tensor peak; ``--exact`` also traces each run with fake tensors
(``scheduler.cost.exact``) against the real tensor peak.

    .venv/bin/python bench/cost_memory_measured.py     # about 5 minutes on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

# The same model sizes as the closed-form vs exact bench (run from bench/, as a script).
from cost_memory import GPT2_MEDIUM, GPT2_SMALL, LLAMA_LARGE, LLAMA_MEDIUM, LLAMA_SMALL  # noqa: E402


@dataclass(frozen=True)
class Run:
    """One measured configuration."""

    name: str
    architecture: str
    config: dict[str, Any]
    seq_len: int
    micro_batch: int
    recompute: bool = False
    lora_targets: tuple[str, ...] | str | None = None
    lora_rank: int = 0


RUNS = [
    Run("llama-S", "llama", LLAMA_SMALL, 256, 1),
    Run("llama-S", "llama", LLAMA_SMALL, 256, 8),
    Run("llama-S", "llama", LLAMA_SMALL, 256, 8, recompute=True),
    Run("llama-M", "llama", LLAMA_MEDIUM, 128, 1),
    Run("llama-M", "llama", LLAMA_MEDIUM, 128, 8),
    Run("llama-M", "llama", LLAMA_MEDIUM, 128, 8, recompute=True),
    Run("llama-M", "llama", LLAMA_MEDIUM, 128, 8, lora_targets=("q_proj", "v_proj"), lora_rank=8),
    Run("llama-M", "llama", LLAMA_MEDIUM, 128, 8, lora_targets="all-linear", lora_rank=16),
    Run(
        "llama-M",
        "llama",
        LLAMA_MEDIUM,
        128,
        8,
        recompute=True,
        lora_targets=("q_proj", "v_proj"),
        lora_rank=8,
    ),
    Run("llama-L", "llama", LLAMA_LARGE, 128, 2),
    Run("llama-L", "llama", LLAMA_LARGE, 128, 4, lora_targets=("q_proj", "v_proj"), lora_rank=8),
    Run("gpt2-S", "gpt2", GPT2_SMALL, 256, 8),
    Run("gpt2-S", "gpt2", GPT2_SMALL, 256, 8, recompute=True),
    Run("gpt2-M", "gpt2", GPT2_MEDIUM, 128, 4),
    Run("gpt2-M", "gpt2", GPT2_MEDIUM, 128, 4, lora_targets=("c_attn",), lora_rank=8),
]

ALLOCATORS = {
    "glibc": {},
    "mmap": {"MALLOC_MMAP_THRESHOLD_": "131072"},
}
"""Each run twice: with glibc malloc as it comes, and with its mmap threshold fixed at 128 KiB
(mallopt(3) ``M_MMAP_THRESHOLD``), so that every tensor-sized block is its own mapping,
returned to the system when freed: what RSS then adds over the tensors is the framework's
own memory, not heap that glibc keeps after the tensors in it are freed."""


def _lora(run: Run) -> Any:
    from scheduler.cost.exact import LoraSetting

    if not run.lora_rank:
        return None
    targets = run.lora_targets  # a list once it has been through JSON to the child
    return LoraSetting(
        rank=run.lora_rank, target_modules=tuple(targets) if isinstance(targets, list) else targets
    )


def measure(run: Run, threads: int) -> dict[str, float]:
    """In this (fresh) process: build, step, and return the tensor peak and the RSS growth."""
    import importlib

    import torch
    import transformers

    # Everything the build would import lazily, imported before the baseline: modules are the
    # process's fixed cost, not the step's (the model's modeling file pulls in ~80 MiB).
    importlib.import_module(f"transformers.models.{run.architecture}.modeling_{run.architecture}")
    if run.lora_rank:
        importlib.import_module("peft")
    from scheduler.cost.exact import build_model, memory_tracker, peak_by_kind
    from workers.core.metrics import peak_rss_bytes
    from workers.core.parallelize import apply_activation_checkpointing

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renames, via peft
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    baseline_bytes = peak_rss_bytes()
    config = dict(run.config)
    if "n_positions" not in config:
        config["max_position_embeddings"] = run.seq_len
    model = build_model(run.architecture, config, _lora(run), device="cpu")
    if run.recompute:
        apply_activation_checkpointing(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, foreach=True)
    ids = torch.randint(0, model.config.vocab_size, (run.micro_batch, run.seq_len))

    def step() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    start_s = time.perf_counter()
    # The first step creates the optimizer states; the second's backward peaks with them.
    for _ in range(2):
        step()
    step_s = (time.perf_counter() - start_s) / 2
    rss_growth = peak_rss_bytes() - baseline_bytes
    # A third step, tracked, for the tensor peak; apart, so the tracker's own bookkeeping is
    # not in the RSS figure (and it adds its states and parameters as they stand).
    tracker = memory_tracker(model, optimizer, ids)
    with tracker:
        step()
        tracker.reset_mod_stats()
        peak = peak_by_kind(tracker)
    return {
        **peak,
        "rss_growth": float(rss_growth),
        "baseline_rss": float(baseline_bytes),
        "trainable": float(sum(p.numel() for p in params)),
        "step_s": step_s,
    }


def closed_form(run: Run) -> float:
    from transformers import AutoConfig

    from scheduler.cost.flops import TransformerShape
    from scheduler.cost.memory import (
        StepShape,
        estimate_peak,
        stores_attention_scores,
    )

    full = AutoConfig.for_model(run.architecture, **run.config).to_dict()
    shape = TransformerShape.from_config(full)
    step = StepShape.of_model(shape, run.seq_len, run.micro_batch, run.lora_targets,
                              run.lora_rank)
    return estimate_peak(
        step,
        "ddp",
        1,
        precision="fp32",
        recompute="full" if run.recompute else "none",
        attention_scores_stored=stores_attention_scores(full),
    ).total_bytes


def exact_trace(run: Run) -> float | None:
    """The fake-tensor trace of the same step; None where it does not apply (recomputation)."""
    if run.recompute:
        return None
    from scheduler.cost.exact import traced_peak

    return traced_peak(
        run.architecture, run.config, run.seq_len, run.micro_batch, lora=_lora(run)
    ).total_bytes


def _fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope of ys against xs."""
    mean_x, mean_y = statistics.mean(xs), statistics.mean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    return mean_y - slope * mean_x, slope


def _label(run: Run) -> str:
    if not run.lora_rank:
        return "-"
    targets = run.lora_targets
    names = (
        targets
        if isinstance(targets, str)
        else "/".join(name.removesuffix("_proj") for name in targets or ())
    )
    return f"{names} r{run.lora_rank}"


def _measure_all(threads: int, jobs: int) -> list[dict[str, dict[str, float]]]:
    """Every run under every allocator, each in its own process, ``jobs`` at a time."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    def child(run: Run, allocator: str) -> dict[str, float]:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--threads",
                str(threads),
                "--child",
                json.dumps(asdict(run)),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **ALLOCATORS[allocator]},
        )
        if done.returncode:
            raise RuntimeError(f"{run}: {done.stderr[-2000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    with ThreadPoolExecutor(jobs) as pool:
        futures = [{name: pool.submit(child, run, name) for name in ALLOCATORS} for run in RUNS]
        return [{name: future.result() for name, future in row.items()} for row in futures]


def _overhead_summary(name: str, tensors: list[float], growths: list[float]) -> None:
    mib = 2**20
    overheads = [g - t for g, t in zip(growths, tensors, strict=True)]
    shares = [o / t for o, t in zip(overheads, tensors, strict=True)]
    intercept, slope = _fit_line(tensors, overheads)
    residuals = [o - (intercept + slope * t) for t, o in zip(tensors, overheads, strict=True)]
    print(
        f"{name:>6}: overhead = RSS growth - tensor peak {min(overheads) / mib:.1f} .. "
        f"{max(overheads) / mib:.1f} MiB (median {statistics.median(overheads) / mib:.1f}), "
        f"{min(shares):.0%} .. {max(shares):.0%} of the tensor peak; least squares "
        f"{intercept / mib:.1f} MiB + {slope:.3f} x tensors, residuals "
        f"{min(residuals) / mib:+.1f} .. {max(residuals) / mib:+.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs measured at a time")
    parser.add_argument(
        "--exact",
        action="store_true",
        help="also trace each run's exact (fake-tensor) peak; +3 s per run",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(Run(**json.loads(args.child)), args.threads)))
        return

    import transformers

    from scheduler.cost.memory import CPU_FRAMEWORK_OVERHEAD_BYTES

    transformers.logging.set_verbosity_error()  # for the exact traces, in this process
    warnings.filterwarnings("ignore", category=FutureWarning)
    mib = 2**20
    start_s = time.perf_counter()
    measured = _measure_all(args.threads, args.jobs)
    print(
        f"{'model':>8} {'seq':>4} {'mb':>3} {'recomp':>6} {'lora':>14} {'closed':>8} "
        f"{'tensors':>8} {'error':>7} {'RSS+ glibc':>10} {'overhead':>8} {'RSS+ mmap':>9} "
        f"{'overhead':>8}" + (f" {'exact':>8}" if args.exact else "") + "   (MiB)"
    )
    closed_errors: dict[bool, list[float]] = {False: [], True: []}
    exact_errors = []
    for run, result in zip(RUNS, measured, strict=True):
        closed = closed_form(run)
        tensors = result["glibc"]["total"]
        if result["mmap"]["total"] != tensors:
            raise RuntimeError(f"{run}: tensor peak differs between allocators")
        error = closed / tensors - 1
        closed_errors[run.recompute].append(abs(error))
        growth = {name: result[name]["rss_growth"] for name in ALLOCATORS}
        line = (
            f"{run.name:>8} {run.seq_len:>4} {run.micro_batch:>3} "
            f"{'yes' if run.recompute else 'no':>6} {_label(run):>14} {closed / mib:>8.1f} "
            f"{tensors / mib:>8.1f} {error:>+7.1%} {growth['glibc'] / mib:>10.1f} "
            f"{(growth['glibc'] - tensors) / mib:>8.1f} {growth['mmap'] / mib:>9.1f} "
            f"{(growth['mmap'] - tensors) / mib:>8.1f}"
        )
        if args.exact:
            exact = exact_trace(run)
            if exact is not None:
                exact_errors.append(abs(exact / tensors - 1))
            line += f" {exact / mib:>8.1f}" if exact is not None else f" {'n/a':>8}"
        print(line, flush=True)

    everything = closed_errors[False] + closed_errors[True]
    print(
        f"closed form vs tensor peak, {len(everything)} runs: mean |error| "
        f"{statistics.mean(everything):.1%}, max {max(everything):.1%} (without recomputation "
        f"{statistics.mean(closed_errors[False]):.1%} mean, {max(closed_errors[False]):.1%} "
        f"max; with {statistics.mean(closed_errors[True]):.1%}, "
        f"{max(closed_errors[True]):.1%})"
    )
    if exact_errors:
        print(
            f"exact trace vs tensor peak, {len(exact_errors)} runs: max |error| "
            f"{max(exact_errors):.3%}"
        )
    tensors = [result["glibc"]["total"] for result in measured]
    for name in ALLOCATORS:
        _overhead_summary(name, tensors, [result[name]["rss_growth"] for result in measured])
    for name in ALLOCATORS:
        # The closed form with the calibrated overhead against what the process really grew by.
        errors = [
            (closed_form(run) + CPU_FRAMEWORK_OVERHEAD_BYTES) / result[name]["rss_growth"] - 1
            for run, result in zip(RUNS, measured, strict=True)
        ]
        print(
            f"{name:>6}: closed form + CPU_FRAMEWORK_OVERHEAD_BYTES vs RSS growth: mean |error| "
            f"{statistics.mean(abs(e) for e in errors):.1%}, range {min(errors):+.1%} .. "
            f"{max(errors):+.1%}"
        )
    baselines = [result["glibc"]["baseline_rss"] for result in measured]
    slowdown = [result["mmap"]["step_s"] / result["glibc"]["step_s"] for result in measured]
    print(
        f"baseline RSS after imports {min(baselines) / mib:.0f} .. {max(baselines) / mib:.0f} "
        f"MiB; step time with the mmap threshold fixed / glibc as it comes: median "
        f"{statistics.median(slowdown):.2f}x ({min(slowdown):.2f} .. {max(slowdown):.2f}); "
        f"{args.jobs} runs at a time, {args.threads} thread(s) each; wall "
        f"{time.perf_counter() - start_s:.0f} s"
    )


if __name__ == "__main__":
    main()
