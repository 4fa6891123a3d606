"""Every plan the scheduler may pick trains the same model as a single process does.

One gang of two gloo ranks runs the same tiny Llama job under DDP, FSDP full-shard, FSDP
shard-grad-op and tensor parallel; a gang of four runs the 2-D plans (HSDP, FSDP + TP, TP with
replicas); a gang of one runs the single-process references (with and without gradient
accumulation and activation checkpointing). All see the same global batch of 8 sequences per
step, and gradient clipping is active, so the global gradient norm must agree too.

Tolerance: losses agree to ``rtol = 1e-4`` at each of the 10 steps. The runs are deterministic
fp32 on the CPU but not bitwise equal: an all-reduce adds the two ranks' half-batch gradients
where one process sums over the whole batch, FSDP reduce-scatters in its own order, and TP's
row-wise layers add two partial matrix products. Each changes the rounding of fp32 sums
(relative error ~1e-7 per operation); AdamW then carries those differences into the weights
(its first steps are ±lr per weight, whatever a gradient's size). Measured: at most 2.3e-7
relative on the loss and 3.5e-7 on the gradient norm over the 10 steps, so 1e-4 leaves room for
other CPUs' kernels while real bugs stay far outside it: even a subtle one, clipping FSDP
gradients by each shard's own norm instead of the global one, moves the loss by 2e-3 relative
within the 10 steps (measured); a gradient not averaged or a wrong batch moves it far more.

A resumed attempt, in contrast, repeats the same arithmetic: measured bitwise equal; the test
allows ``abs = 1e-6``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import torch.multiprocessing as mp

from tests.integration.rank_programs.equivalence_ranks import GLOBAL_BATCH, RESUME_FROM, STEPS

pytestmark = pytest.mark.slow

LOSS_RTOL = 1e-4
RESUME_ABS = 1e-6

SINGLE_CASES: dict[str, dict[str, Any]] = {
    "single": {"strategy": "single", "micro_batch": 2, "grad_accum": 4},
    "single_no_accumulation": {"strategy": "single", "micro_batch": GLOBAL_BATCH},
    "single_activation_checkpointing": {"strategy": "single", "micro_batch": 2,
                                        "grad_accum": 4, "activation_checkpointing": True},
}
GANG_CASES: dict[str, dict[str, Any]] = {
    "ddp": {"strategy": "ddp", "dp_replicate": 2, "micro_batch": 2, "grad_accum": 2},
    "fsdp_full": {"strategy": "fsdp_full", "dp_shard": 2, "micro_batch": 2, "grad_accum": 2},
    "fsdp_grad_op": {"strategy": "fsdp_grad_op", "dp_shard": 2, "micro_batch": 2,
                     "grad_accum": 2},
    "fsdp_full_activation_checkpointing": {"strategy": "fsdp_full", "dp_shard": 2,
                                           "micro_batch": 4, "activation_checkpointing": True},
    "tp": {"strategy": "tp", "tp": 2, "micro_batch": 4, "grad_accum": 2},
}
GANG_OF_FOUR_CASES: dict[str, dict[str, Any]] = {
    "hsdp": {"strategy": "hsdp", "dp_replicate": 2, "dp_shard": 2, "micro_batch": 2},
    "fsdp_tp": {"strategy": "fsdp_tp", "dp_shard": 2, "tp": 2, "micro_batch": 4},
    "tp_replicas": {"strategy": "tp", "dp_replicate": 2, "tp": 2, "micro_batch": 4},
}
PARALLEL_CASES = {**GANG_CASES, **GANG_OF_FOUR_CASES}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _events(root: Path, case: str, attempt: int) -> list[dict[str, Any]]:
    lines = (root / case / "progress.jsonl").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["attempt"] == attempt]


def _steps(root: Path, case: str, attempt: int = 1) -> dict[int, dict[str, Any]]:
    return {event["step"]: event for event in _events(root, case, attempt)
            if event["event"] == "step"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train every case once: the gangs of four, two and one rank side by side."""
    from tests.integration.rank_programs.equivalence_ranks import run_rank

    root = tmp_path_factory.mktemp("equivalence")
    gangs = [
        mp.start_processes(run_rank, args=(size, _free_port(), str(root), cases), nprocs=size,
                           join=False, start_method="spawn")
        for size, cases in ((4, GANG_OF_FOUR_CASES), (2, GANG_CASES), (1, SINGLE_CASES))
    ]
    for gang in gangs:
        # join() re-raises a rank's exception and terminates the rest of its gang.
        while not gang.join(timeout=1.0):
            pass
    return root


@pytest.mark.parametrize("case", [*PARALLEL_CASES, "single_no_accumulation",
                                  "single_activation_checkpointing"])
def test_every_plan_follows_the_single_process_loss_curve(runs: Path, case: str) -> None:
    reference, steps = _steps(runs, "single"), _steps(runs, case)
    assert sorted(steps) == list(range(1, STEPS + 1))
    for step, event in steps.items():
        assert event["loss"] == pytest.approx(reference[step]["loss"], rel=LOSS_RTOL), step
        assert event["grad_norm"] == pytest.approx(reference[step]["grad_norm"], rel=LOSS_RTOL)
    # Not a trivially flat curve: the steps really trained.
    assert steps[STEPS]["loss"] < steps[1]["loss"] - 0.1


@pytest.mark.parametrize("case", [*PARALLEL_CASES, *SINGLE_CASES])
def test_every_step_reports_mfu_against_the_measured_cpu_peak(runs: Path, case: str) -> None:
    for event in _steps(runs, case).values():
        assert 0 < event["mfu"] < 1
        assert event["peak_flops"] > 1e8  # FLOP/s of one rank's share of the CPU


@pytest.mark.parametrize("case", [*PARALLEL_CASES, *SINGLE_CASES])
def test_a_resumed_attempt_repeats_the_losses_under_every_plan(runs: Path, case: str) -> None:
    first, resumed = _steps(runs, case, attempt=1), _steps(runs, case, attempt=2)
    assert sorted(resumed) == list(range(RESUME_FROM + 1, STEPS + 1))
    for step, event in resumed.items():
        assert event["loss"] == pytest.approx(first[step]["loss"], abs=RESUME_ABS), step


@pytest.mark.parametrize(("case", "ranks"), [("fsdp_full", 2), ("tp", 2), ("fsdp_tp", 4)])
def test_sharded_plans_write_one_shard_file_per_rank(runs: Path, case: str, ranks: int) -> None:
    checkpoint = runs / case / "checkpoints" / f"step-{STEPS:08d}"
    assert sorted(path.name for path in checkpoint.glob("*.distcp")) == [
        f"__{rank}_0.distcp" for rank in range(ranks)]
