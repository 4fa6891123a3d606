"""Step time predicted by the cost model against real CPU training runs of the Corral trainer.

1. Train (``cost_time_runs.py``): gangs of 1, 2 and 4 gloo ranks on this machine run small Llama
   models under every strategy the trainer has (single, ddp, fsdp_full, fsdp_grad_op, tp), some
   with activation recomputation or gradient accumulation, each built as a pretrain rank builds
   it. Measured: the ``step_time_s`` of the trainer's step events after warm-up.
2. Peak and links: right before each run, every rank of the gang runs ``measure_cpu_peak`` at
   the same time as the others, with the threads the run uses (one per rank by default); the
   mean over ranks is one rank's share of the machine, as the workers measure it for MFU. Four
   ranks on two cores oversubscribe the CPU: each measures about half a core. The gang also
   measures its links as training meets them (``cost_time_runs.gang_links``: α of a collective
   after a burst of compute, β of a large all-reduce); the host's share of a core is the cores
   over the ranks. That is all the model is told about the machine.
3. Repeat: every configuration runs ``--passes`` times, minutes apart. Other work on a shared
   machine only takes cores away, so the lower quartile of a configuration's steps and the
   upper quartile of a world size's peaks stand for the unloaded machine
   (``cost_time_runs.least_disturbed``); rank 0 counts the CPU seconds other work takes
   meanwhile, so the table shows how far from unloaded the machine was.
4. Predict: ``scheduler.cost.planner.evaluate`` on a CPU pool (the catalog's ``cpu`` row with the
   measured peak, α, β and host share) for the very plan that ran: the planner's own code path.
5. Calibrate and check: configurations split into two halves, alternating within each strategy
   (:func:`split_by_strategy`); η per (cpu, strategy) is recalibrated on the first half as the
   service does after a job (``scheduler.cost.calibration``: observed η with the rest of the
   step as predicted, folded into a bounded weighted mean, each run at full weight), and the
   second half is predicted with the prior η and with the calibrated η. Goal: mean absolute
   error ≤ 15 % with calibration.

    .venv/bin/python bench/cost_time.py [--passes 3] [--steps 8] [--threads 1] [--verbose]
    .venv/bin/python bench/cost_time.py --save runs.json    # later: --load runs.json, no runs
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cost_time_results import WARMUP_STEPS, Summary, least_disturbed, load_runs, save_runs
from cost_time_runs import RunRequest
from cost_time_runs import train as train_runs

from scheduler.cost.calibration import FULL_WEIGHT_REPORTS, StepObservation, calibrate
from scheduler.cost.hardware import lookup
from scheduler.cost.planner import Candidate, PlanRequest, PoolOption, evaluate
from scheduler.cost.profile import model_profile
from scheduler.cost.time import efficiency
from scheduler.domain.plan import Plan, Strategy
from scheduler.domain.spec import JobSpec, parse_spec

SEQ_LEN = 128
GLOBAL_BATCH = 8

MODELS: dict[str, dict[str, int]] = {
    # 0.46 M parameters: short steps, where fixed costs and collectives weigh.
    "S": {
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "intermediate_size": 344,
    },
    # 3.3 M parameters: bench/train_overhead.py's model, 2.1·10¹⁰ FLOPs per step of 8 × 128.
    "M": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "intermediate_size": 688,
    },
}


@dataclass(frozen=True)
class BenchConfig:
    """One measured configuration: a model and the plan the trainer runs it with."""

    model: str
    plan: Plan

    @property
    def name(self) -> str:
        return f"{self.model} {self.plan.describe()}"


def _config(
    model: str,
    strategy: str,
    world: int,
    micro_batch: int,
    *,
    dp_shard: int = 1,
    tp: int = 1,
    recompute: bool = False,
) -> BenchConfig:
    """The plan over ``world`` ranks for :data:`GLOBAL_BATCH` sequences; replicas fill the rest."""
    replicate = world // (dp_shard * tp)
    grad_accum = GLOBAL_BATCH // (replicate * dp_shard * micro_batch)
    plan = Plan(
        Strategy(strategy), world, replicate, dp_shard, tp, 1, micro_batch, grad_accum, recompute
    )
    return BenchConfig(model, plan.validate())


CONFIGS: list[BenchConfig] = [
    # Within a strategy, runs alternate between the calibration half and the held-out half
    # (split_by_strategy), so each pair below differs in one thing the model claims to capture:
    # micro-batch and accumulation, recomputation, ranks on the machine, model size.
    _config("M", "single", 1, 8),
    _config("M", "single", 1, 4),
    _config("S", "single", 1, 8),
    _config("S", "single", 1, 8, recompute=True),
    _config("M", "ddp", 2, 4),
    _config("M", "ddp", 2, 2),
    _config("S", "ddp", 2, 4),
    _config("S", "ddp", 4, 2),
    _config("M", "ddp", 4, 2),
    _config("M", "ddp", 2, 4, recompute=True),
    _config("M", "fsdp_full", 2, 4, dp_shard=2),
    _config("M", "fsdp_full", 2, 2, dp_shard=2),
    _config("M", "fsdp_full", 2, 4, dp_shard=2, recompute=True),
    _config("M", "fsdp_full", 4, 2, dp_shard=4),
    _config("S", "fsdp_full", 4, 2, dp_shard=4),
    _config("S", "fsdp_full", 2, 4, dp_shard=2),
    _config("M", "fsdp_grad_op", 2, 4, dp_shard=2),
    _config("M", "fsdp_grad_op", 4, 2, dp_shard=4),
    _config("S", "fsdp_grad_op", 4, 2, dp_shard=4),
    _config("S", "fsdp_grad_op", 2, 4, dp_shard=2),
    _config("M", "tp", 2, 8, tp=2),
    _config("M", "tp", 2, 8, tp=2, recompute=True),
    _config("S", "tp", 2, 8, tp=2),
    _config("S", "tp", 4, 4, tp=2),
    _config("M", "tp", 4, 4, tp=2),
    _config("M", "tp", 2, 4, tp=2),
]


def job_spec(config: BenchConfig, steps: int) -> JobSpec:
    """The pretrain spec of one configuration: generated text, byte tokenizer, fp32, AdamW."""
    return parse_spec(
        {
            "name": "cost-time",
            "kind": "pretrain",
            "model": {
                "architecture": "llama",
                "config": {**MODELS[config.model], "max_position_embeddings": SEQ_LEN},
            },
            "tokenizer": {"kind": "byte"},
            "data": {
                "source": "generated",
                "seq_len": SEQ_LEN,
                "generated_documents": 400,
                "eval_fraction": 0.0,
            },
            "work": {"steps": steps, "eval_batches": 0},
            "batch": {"global_batch": GLOBAL_BATCH, "micro_batch": config.plan.micro_batch},
            "optimizer": {"lr": 1e-3, "warmup_steps": 0, "schedule": "constant", "grad_clip": 1.0},
            "checkpoint": {"interval_steps": steps, "keep": 1},
            "seed": 0,
        }
    )


def run_request(config: BenchConfig, steps: int) -> RunRequest:
    return RunRequest(
        config.name,
        config.plan.world_size,
        job_spec(config, steps).model_dump(mode="json"),
        config.plan.to_dict(),
    )


# --- Predict with the planner's own code path ---


def cpu_pool(result: Summary, world: int) -> PoolOption:
    """A one-node CPU pool of four ranks: the catalog's ``cpu`` row with the gang's measured
    peak, α and β per rank, and each rank's share of a core for its host thread (ranks beyond
    the cores share them; with one thread per rank, the bench's default)."""
    overrides: dict[str, float] = {"peak_bf16_flops": result.peak_flops,
                                   "host_speed": min(1.0, (os.cpu_count() or 1) / world)}
    if result.collective_latency_s is not None and result.link_bytes_per_s:
        overrides["collective_latency_s"] = result.collective_latency_s
        overrides["intra_node_bytes_per_s"] = result.link_bytes_per_s
    return PoolOption("cpu", lookup("cpu", overrides), devices_per_node=4, max_gang=4)


def plan_request(config: BenchConfig, steps: int) -> PlanRequest:
    """The request ``corral submit`` would build: the model's full config, resolved once."""
    from workers.model_config import resolved_model_config

    profile = model_profile(resolved_model_config(job_spec(config, steps)), SEQ_LEN)
    return PlanRequest(
        profile=profile,
        seq_len=SEQ_LEN,
        global_batch=GLOBAL_BATCH,
        total_steps=steps,
        precision="fp32",
        micro_batch=config.plan.micro_batch,
        devices=config.plan.world_size,
    )


def predict(
    config: BenchConfig,
    steps: int,
    result: Summary,
    calibrated: dict[tuple[str, str], float] | None = None,
) -> Candidate:
    pool = cpu_pool(result, config.plan.world_size)
    return evaluate(plan_request(config, steps), pool, config.plan, calibrated)


def observation(config: BenchConfig, steps: int, result: Summary) -> StepObservation:
    """A run as calibration sees it: the prior prediction's parts beside the measured step."""
    prior = predict(config, steps, result)
    return StepObservation(
        (prior.accelerator, config.plan.strategy.value),
        prior.step_time_s,
        prior.time_parts_s["compute"],
        prior.efficiency,
        result.step_s,
    )


# --- Split, calibrate, report ---


def split_by_strategy(
    configs: Sequence[BenchConfig],
) -> tuple[list[BenchConfig], list[BenchConfig]]:
    """(calibration, held out): alternating within each strategy, in table order."""
    seen: dict[Strategy, int] = {}
    halves: tuple[list[BenchConfig], list[BenchConfig]] = ([], [])
    for config in configs:
        index = seen.get(config.plan.strategy, 0)
        seen[config.plan.strategy] = index + 1
        halves[index % 2].append(config)
    return halves


def _error(predicted_s: float, measured_s: float) -> float:
    return abs(predicted_s - measured_s) / measured_s


def report(
    configs: Sequence[BenchConfig], steps: int, results: dict[str, Summary], verbose: bool
) -> None:
    """Calibrate on one half, print the held-out half against both predictions."""
    fit, held_out = split_by_strategy(configs)
    estimates = calibrate(observation(c, steps, results[c.name]) for c in fit)
    calibrated = {key: estimate.efficiency for key, estimate in estimates.items()}

    print(
        f"\nheld-out half: {len(held_out)} of {len(configs)} configurations (η calibrated on "
        f"the other {len(fit)}); fp32, seq {SEQ_LEN}, global batch {GLOBAL_BATCH}; measured: "
        f"lower quartile of the steps after {WARMUP_STEPS} warm-up of all passes; others: cores "
        f"other work took meanwhile (median over passes)"
    )
    print(
        f"{'configuration':<40} {'measured':>9} {'others':>6} {'prior η':>9} {'error':>7} "
        f"{'calibr. η':>9} {'error':>7}"
    )
    prior_errors, calibrated_errors = [], []
    for config in held_out:
        result = results[config.name]
        prior = predict(config, steps, result)
        after = predict(config, steps, result, calibrated)
        prior_errors.append(_error(prior.step_time_s, result.step_s))
        calibrated_errors.append(_error(after.step_time_s, result.step_s))
        print(
            f"{config.name:<40} {result.step_s * 1e3:>7.1f}ms {result.other_cores:>6.2f} "
            f"{prior.step_time_s * 1e3:>7.1f}ms {prior_errors[-1]:>7.1%} "
            f"{after.step_time_s * 1e3:>7.1f}ms {calibrated_errors[-1]:>7.1%}"
        )
    print(
        f"mean / max absolute error: prior η {statistics.mean(prior_errors):.1%} / "
        f"{max(prior_errors):.1%}; calibrated η {statistics.mean(calibrated_errors):.1%} / "
        f"{max(calibrated_errors):.1%} (goal: mean <= 15 %)"
    )
    print(
        "η (cpu, strategy), prior -> calibrated: "
        + ", ".join(
            f"{strategy} {efficiency('cpu', strategy):.2f} -> {estimate.efficiency:.3f} "
            f"({estimate.weight // FULL_WEIGHT_REPORTS} runs)"
            for (_, strategy), estimate in sorted(estimates.items())
        )
    )
    worlds = sorted({config.plan.world_size for config in configs})
    print(
        "peak per rank, median over configurations (the gang's measurement; the trainer's own "
        "for MFU): "
        + ", ".join(f"{world} rank(s) {_peaks(configs, results, world)}" for world in worlds)
    )
    if verbose:
        print_details(configs, steps, results, calibrated)


def _peaks(configs: Sequence[BenchConfig], results: dict[str, Summary], world: int) -> str:
    mine = [results[c.name] for c in configs if c.plan.world_size == world]
    gang = statistics.median(result.peak_flops for result in mine)
    trainer = statistics.median(result.trainer_peak_flops for result in mine)
    return f"{gang / 1e9:.0f} G ({trainer / 1e9:.0f} G)"


def print_details(
    configs: Sequence[BenchConfig],
    steps: int,
    results: dict[str, Summary],
    calibrated: dict[tuple[str, str], float],
) -> None:
    """Every configuration: measured phases against the predicted parts (calibrated η)."""
    print(
        "\nall configurations: measured ms | its fastest run's median step = trainer phases "
        "| predicted parts with calibrated η"
    )
    for config in configs:
        result = results[config.name]
        phases = " ".join(f"{name} {value * 1e3:.1f}" for name, value in result.phases_s.items())
        candidate = predict(config, steps, result, calibrated)
        print(
            f"{config.name:<40} {result.step_s * 1e3:7.1f} | "
            f"{result.fastest_run_step_s * 1e3:7.1f} = {phases} | {candidate.time_explain}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="steps per run, warm-up included")
    parser.add_argument(
        "--passes",
        type=int,
        default=3,
        help="runs of each configuration; the least disturbed counts",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads per rank; 0: as the workers choose (cores // ranks)",
    )
    parser.add_argument("--only", default="", help="only the configurations naming this")
    parser.add_argument("--save", help="write the measurements to this JSON file")
    parser.add_argument("--load", help="predict against measurements saved by --save; no runs")
    parser.add_argument("--verbose", action="store_true", help="also print every run's parts")
    args = parser.parse_args(argv)
    configs = [config for config in CONFIGS if args.only in config.name]
    start_s = time.perf_counter()
    if args.load:
        runs = load_runs(Path(args.load), [config.name for config in configs])
    else:
        print(
            f"training {len(configs)} configurations x {args.passes} passes of {args.steps} "
            f"steps, {args.threads or 'cores // ranks'} thread(s) per rank, on "
            f"{os.cpu_count()} CPU cores",
            flush=True,
        )
        with tempfile.TemporaryDirectory(prefix="corral-cost-time-") as scratch:
            runs = train_runs(
                [run_request(config, args.steps) for config in configs],
                args.passes,
                args.threads,
                Path(scratch),
            )
    if args.save:
        save_runs(Path(args.save), runs)
    worlds = {config.name: config.plan.world_size for config in configs}
    report(configs, args.steps, least_disturbed(runs, worlds), args.verbose)
    print(f"bench took {time.perf_counter() - start_s:.0f} s")


if __name__ == "__main__":
    main()
