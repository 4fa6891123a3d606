"""Predicted vs measured on one device: the trainer on a ~1B Llama in bf16, each plan that fits.

For every plan the planner ranks feasible on one device (micro-batch × activation
checkpointing), the real trainer runs a few steps as a rank does (``python -m workers.jobs.run``
with a job file, in its own process), and its progress events give the truth: the step time
(median after warm-up), ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` (on a CPU
the process's peak RSS), tokens/s and MFU. Printed beside the cost model's prediction, then one
JSON record per plan.

    .venv/bin/python bench/gpu_truth.py                  # a GPU machine: under 8 minutes
    .venv/bin/python bench/gpu_truth.py --device cpu --model tiny   # the same path on a CPU

The 1B model is Llama 3.2 1B's shape (Meta's model card: d 2048, 16 layers, 32 heads, 8 KV
heads, MLP 8192, vocabulary 128256, tied embeddings), random weights, generated data, the byte
tokenizer (the embedding keeps the 128256 rows the spec asks for).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.cost.hardware import Accelerator, lookup  # noqa: E402
from scheduler.cost.planner import Candidate, PlanRequest, PoolOption, plan_job  # noqa: E402
from scheduler.domain.spec import JobSpec, parse_spec  # noqa: E402
from scheduler.gangs.protocol import JobFile  # noqa: E402
from workers.model_config import planning_profile, resolved_model_config  # noqa: E402

MODELS: dict[str, dict[str, Any]] = {
    "1b": {"config": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
                      "num_key_value_heads": 8, "intermediate_size": 8192,
                      "vocab_size": 128256, "tie_word_embeddings": True},
           "seq_len": 2048, "global_batch": 8},
    "tiny": {"config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "intermediate_size": 172},
             "seq_len": 64, "global_batch": 4},
}
WARM_UP_STEPS = 2
"""Steps left out of the step time: the first ones allocate, compile kernels, warm caches."""


def job_spec(model: str, steps: int, precision: str) -> JobSpec:
    chosen = MODELS[model]
    return parse_spec({
        "name": f"truth-{model}", "kind": "pretrain",
        "model": {"architecture": "llama", "config": chosen["config"]},
        "tokenizer": {"kind": "byte"},
        "data": {"source": "generated", "seq_len": chosen["seq_len"],
                 "generated_documents": 400},
        "work": {"steps": steps, "eval_batches": 1},
        "batch": {"global_batch": chosen["global_batch"]},
        "precision": precision,
        "checkpoint": {"interval_steps": steps, "keep": 1},
    })


def accelerator(device: str) -> tuple[str, Accelerator]:
    """The catalog row of this machine's device: the GPU by its driver name, else the CPU
    with its measured matmul peak."""
    import torch

    from workers.core.utilization import catalog_name_for_device, measure_cpu_peak

    if device == "cuda":
        name = catalog_name_for_device(torch.cuda.get_device_name(0))
        if name is None:
            raise SystemExit(f"no catalog row for {torch.cuda.get_device_name(0)}")
        return name, lookup(name)
    return "cpu", lookup("cpu", {"peak_bf16_flops": measure_cpu_peak()})


def plans_to_run(spec: JobSpec, row: Accelerator, name: str, limit: int) -> list[Candidate]:
    profile = planning_profile(spec, resolved_model_config(spec))
    request = PlanRequest(profile=profile, seq_len=spec.data.seq_len,
                          global_batch=spec.batch.global_batch, total_steps=spec.total_steps(),
                          precision=spec.precision, devices=1)
    report = plan_job(request, [PoolOption(name, row, devices_per_node=1, max_gang=1,
                                           accelerator_name=name)])
    return report.ranked[:limit]


def run_plan(spec: JobSpec, candidate: Candidate, workdir: Path, timeout_s: float,
             device: str) -> dict[str, Any]:
    """Run the trainer on ``candidate``'s plan in a fresh process; its measured figures."""
    run_dir = workdir / candidate.plan.describe().replace(" ", "_")
    run_dir.mkdir(parents=True)
    job_path = run_dir / "job.json"
    JobFile(job_id=1, attempt=1, spec=spec.model_dump(mode="json"),
            plan=candidate.plan.to_dict(), run_dir=str(run_dir)).write(job_path)
    env = dict(os.environ, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 1000))
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "workers.jobs.run", str(job_path)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    wall_s = time.monotonic() - started
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"],
                "wall_s": wall_s}
    events = [json.loads(line) for line in
              (run_dir / "progress.jsonl").read_text().splitlines() if line.strip()]
    steps = [e for e in events if e.get("event") == "step"]
    timed = steps[WARM_UP_STEPS:] or steps
    last = steps[-1]
    return {
        "step_time_s": statistics.median(e["step_time_s"] for e in timed),
        "device_peak_bytes": max((e.get("device_peak_bytes", 0) for e in steps), default=0),
        "device_reserved_bytes": max((e.get("device_reserved_bytes", 0) for e in steps),
                                     default=0),
        "peak_rss_bytes": max(e.get("peak_rss_bytes", 0) for e in steps),
        "tokens_per_s": statistics.median(e["tokens_per_s"] for e in timed),
        "mfu": last.get("mfu"), "wall_s": wall_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--model", choices=sorted(MODELS), default="1b")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--max-plans", type=int, default=6)
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="start no plan after this many seconds")
    args = parser.parse_args()
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    name, row = accelerator(device)
    spec = job_spec(args.model, args.steps, "bf16")
    candidates = plans_to_run(spec, row, name, args.max_plans)
    print(f"device {device} ({name}), model {args.model}, {len(candidates)} feasible plans, "
          f"{args.steps} steps each")
    print(f"{'plan':<34} {'pred GiB':>8} {'alloc GiB':>9} {'resv GiB':>8} {'mem err':>7} "
          f"{'pred step':>9} {'meas step':>9} {'time err':>8} {'tok/s':>8} {'MFU':>6}")
    started, records = time.monotonic(), []
    with tempfile.TemporaryDirectory(prefix="gpu-truth-") as workdir:
        for candidate in candidates:
            if time.monotonic() - started > args.budget_s:
                print(f"budget of {args.budget_s:.0f} s spent: the remaining plans were not run")
                break
            measured = run_plan(spec, candidate, Path(workdir), args.budget_s, device)
            record = {"plan": candidate.plan.describe(), "device": name,
                      "predicted_memory_bytes": candidate.memory_bytes,
                      "predicted_step_time_s": candidate.step_time_s, **measured}
            records.append(record)
            if "error" in measured:
                print(f"{record['plan']:<34} failed: {measured['error']}")
                continue
            # On a GPU the tensors' peak; on a CPU the process's (the prediction includes the
            # process's own footprint there).
            truth = measured["device_peak_bytes"] or measured["peak_rss_bytes"]
            gib = 2**30
            print(f"{record['plan']:<34} {candidate.memory_bytes / gib:>8.2f} "
                  f"{truth / gib:>9.2f} {measured['device_reserved_bytes'] / gib:>8.2f} "
                  f"{candidate.memory_bytes / truth - 1:>+7.1%} "
                  f"{candidate.step_time_s * 1e3:>7.1f}ms {measured['step_time_s'] * 1e3:>7.1f}ms "
                  f"{candidate.step_time_s / measured['step_time_s'] - 1:>+8.1%} "
                  f"{measured['tokens_per_s']:>8.0f} "
                  f"{measured['mfu'] if measured['mfu'] is not None else float('nan'):>6.1%}",
                  flush=True)
    for record in records:
        print("RECORD " + json.dumps(record))


if __name__ == "__main__":
    main()
