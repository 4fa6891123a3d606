"""Throughput of the Corral trainer against a minimal hand-written torch loop, same process.

Both train the same model (same config, seed, batches, AdamW, gradient clipping) in one
process. Corral: the trainer ``build_trainer`` assembles for a real pretrain rank, run through
``Trainer.run`` with its step phases, stop vote (a gloo all-reduce, world size 1), progress
events and gradient clipping. Baseline: ``forward → cross-entropy → backward → clip → AdamW``
over batches prepared in memory beforehand. Both are timed over the same window, from the end
of the warm-up steps to the end of the last step (Corral's final checkpoint comes after it).

Two clocks: wall time, and this process's CPU time (all threads). CPU time is what to read on
a machine shared with other work: their load stretches wall time, but hardly the CPU seconds
this process spends. The loops alternate ``--repeats`` times; each back-to-back pair gives a
ratio, and the median of those ratios cancels most drift in the machine's load. Overhead =
1 − Corral / baseline tokens per second; the target is ≤ 5 %.

    .venv/bin/python bench/train_overhead.py [--steps 12] [--repeats 9] [--threads N]

One thread per loop gives the steadiest figures on a busy machine: fewer threads to wait for.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from scheduler.domain.plan import Plan
from scheduler.domain.spec import JobSpec, parse_spec
from scheduler.gangs.protocol import JobFile, ProgressKind
from workers.core.distributed import DistContext, init_distributed, shutdown_distributed
from workers.core.model import build_model
from workers.core.preemption import StopRequest
from workers.core.progress import ProgressReporter
from workers.core.tasks import Batch
from workers.core.tokenizer import ByteTokenizer
from workers.jobs.pretrain import build_trainer

WARMUP_STEPS = 3
SEQ_LEN = 128
MICRO_BATCH = 8
TOKENS_PER_STEP = SEQ_LEN * MICRO_BATCH


@dataclass(frozen=True)
class Clock:
    """Wall and CPU seconds at one instant."""

    wall_s: float
    cpu_s: float

    @classmethod
    def now(cls) -> Clock:
        return cls(time.perf_counter(), time.process_time())


@dataclass(frozen=True)
class Rates:
    """Tokens per wall second and per CPU second over the timed window."""

    wall: float
    cpu: float

    @classmethod
    def between(cls, start: Clock, end: Clock, tokens: int) -> Rates:
        return cls(tokens / (end.wall_s - start.wall_s), tokens / (end.cpu_s - start.cpu_s))


class StepClockReporter(ProgressReporter):
    """The trainer's reporter, also noting the clocks when each step's event is emitted."""

    def __init__(self, inner: ProgressReporter) -> None:
        super().__init__(inner.path, inner.attempt, inner.enabled)
        self.step_clocks: dict[int, Clock] = {}
        self.mfu: dict[int, float] = {}

    def emit(self, kind: ProgressKind, **fields: Any) -> None:
        if kind == "step":
            self.step_clocks[int(fields["step"])] = Clock.now()
            self.mfu[int(fields["step"])] = float(fields.get("mfu", 0.0))
        super().emit(kind, **fields)


def job_spec(steps: int) -> JobSpec:
    """A small Llama on generated text: large enough that a step is real work (2·10¹⁰ FLOPs)."""
    return parse_spec({
        "name": "overhead", "kind": "pretrain",
        "model": {"architecture": "llama",
                  "config": {"hidden_size": 256, "num_hidden_layers": 4,
                             "num_attention_heads": 4, "num_key_value_heads": 4,
                             "intermediate_size": 688, "max_position_embeddings": SEQ_LEN}},
        "tokenizer": {"kind": "byte"},
        "data": {"source": "generated", "seq_len": SEQ_LEN, "generated_documents": 400,
                 "eval_fraction": 0.0},
        "work": {"steps": steps, "eval_batches": 0},
        "batch": {"global_batch": MICRO_BATCH, "micro_batch": MICRO_BATCH},
        "optimizer": {"lr": 1e-3, "warmup_steps": 0, "schedule": "constant", "grad_clip": 1.0},
        "checkpoint": {"interval_steps": steps, "keep": 1},
        "seed": 0,
    })


def run_corral(spec: JobSpec, ctx: DistContext, run_dir: Path
               ) -> tuple[Rates, float, list[Batch]]:
    """Rates of ``Trainer.run`` after warm-up, its median reported MFU, and its batches."""
    plan = Plan.data_parallel(1, MICRO_BATCH, micro_batch=MICRO_BATCH)
    job = JobFile(job_id=1, attempt=1, spec=spec.model_dump(mode="json"), plan=plan.to_dict(),
                  run_dir=str(run_dir))
    trainer = build_trainer(job, spec, plan, ctx, StopRequest())
    reporter = trainer.reporter = StepClockReporter(trainer.reporter)
    trainer.run()
    last = max(reporter.step_clocks)
    rates = Rates.between(reporter.step_clocks[WARMUP_STEPS], reporter.step_clocks[last],
                          (last - WARMUP_STEPS) * TOKENS_PER_STEP)
    batches = [trainer.task.train_micro_batches(step, 0)[0] for step in range(1, last + 1)]
    mfu = statistics.median(reporter.mfu[step] for step in range(WARMUP_STEPS + 1, last + 1))
    return rates, mfu, batches


def run_baseline(spec: JobSpec, batches: list[Batch]) -> Rates:
    """Rates of the hand-written loop after warm-up."""
    model = build_model(spec.model, ByteTokenizer(), spec.seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.optimizer.lr,
                                  betas=spec.optimizer.betas, weight_decay=0.0)
    start = Clock.now()
    for index, batch in enumerate(batches):
        if index == WARMUP_STEPS:
            start = Clock.now()
        logits = model(input_ids=batch["input_ids"]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the host sync that reporting a loss costs in any loop
    return Rates.between(start, Clock.now(), (len(batches) - WARMUP_STEPS) * TOKENS_PER_STEP)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both loops (default: all cores, as a rank of one)")
    args = parser.parse_args(argv)
    spec = job_spec(args.steps)
    ctx = init_distributed()  # a gang of one, as a single-device rank runs
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results: dict[str, list[Rates]] = {"corral": [], "baseline": []}
    mfus: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="corral-overhead-") as scratch:
            for repeat in range(args.repeats):
                corral, mfu, batches = run_corral(spec, ctx, Path(scratch) / f"run-{repeat}")
                results["corral"].append(corral)
                mfus.append(mfu)
                results["baseline"].append(run_baseline(spec, batches))
    finally:
        shutdown_distributed()
    print_table(results, args.steps, torch.get_num_threads())
    print(f"MFU reported by the trainer (median over runs): {statistics.median(mfus):.3f} of "
          f"the measured CPU peak")


def print_table(results: dict[str, list[Rates]], steps: int, threads: int) -> None:
    """Median tokens/s per loop and clock, and Corral/baseline ratios of each alternating pair."""
    corral_runs, baseline_runs = results["corral"], results["baseline"]
    print(f"llama d=256 L=4 (3.3 M parameters), seq {SEQ_LEN}, batch {MICRO_BATCH}, fp32 CPU, "
          f"{threads} threads; {steps} steps ({WARMUP_STEPS} warm-up) x {len(corral_runs)} "
          f"alternating pairs")
    print(f"{'loop':<9} {'tokens/s wall':>14} {'tokens/CPU-s':>13}")
    for name, runs in results.items():
        wall = statistics.median(r.wall for r in runs)
        cpu = statistics.median(r.cpu for r in runs)
        print(f"{name:<9} {wall:>14.0f} {cpu:>13.0f}")
    # Each pair ran back to back, so its ratio cancels most of the machine's drift.
    wall_ratios = [c.wall / b.wall for c, b in zip(corral_runs, baseline_runs, strict=True)]
    cpu_ratios = [c.cpu / b.cpu for c, b in zip(corral_runs, baseline_runs, strict=True)]
    print("pair ratios (CPU): " + " ".join(f"{ratio:.3f}" for ratio in cpu_ratios))
    wall_ratio, cpu_ratio = statistics.median(wall_ratios), statistics.median(cpu_ratios)
    print(f"corral / baseline, median of pairs: wall {wall_ratio:.3f} "
          f"(overhead {1 - wall_ratio:+.1%}), CPU {cpu_ratio:.3f} (overhead {1 - cpu_ratio:+.1%}); "
          f"target <= 5 %")


if __name__ == "__main__":
    main()
