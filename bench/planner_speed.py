"""Planner speed: median time to plan one job over 5 pools with every strategy (goal < 20 ms).

    .venv/bin/python bench/planner_speed.py
"""

from __future__ import annotations

import statistics
import time

from scheduler.cost.hardware import lookup
from scheduler.cost.planner import PlanRequest, PoolOption, plan_job
from scheduler.cost.profile import ModelProfile

LLAMA_7B = ModelProfile(params=6.74e9, layer_params=2.02e8, layers=32, hidden=4096, heads=32,
                        vocab=32000, flops_per_token=6 * 6.74e9)
POOLS = [PoolOption("h100", lookup("H100-SXM"), 8, 16), PoolOption("h200", lookup("H200"), 8, 16),
         PoolOption("a100", lookup("A100-80G"), 8, 8), PoolOption("l4", lookup("L4"), 8, 8),
         PoolOption("v5p", lookup("TPU-v5p"), 4, 16)]


def main() -> None:
    request = PlanRequest(profile=LLAMA_7B, seq_len=4096, global_batch=64, total_steps=1000,
                          precision="bf16")
    times = []
    for _ in range(50):
        start = time.perf_counter()
        report = plan_job(request, POOLS)
        times.append(time.perf_counter() - start)
    times.sort()
    print(f"{'pools':>5} {'candidates':>10} {'median ms':>10} {'p90 ms':>8}")
    print(f"{len(POOLS):>5} {len(report.ranked) + len(report.rejected):>10} "
          f"{statistics.median(times) * 1e3:>10.2f} {times[int(0.9 * len(times))] * 1e3:>8.2f}")


if __name__ == "__main__":
    main()
