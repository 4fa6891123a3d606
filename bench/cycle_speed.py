"""How long one scheduling cycle takes as the queue grows, against a same-process baseline.

Baseline: sorting the pending jobs by (priority, age) alone, the least any cycle must do. The
ratio says how much the matching, placement and planning cost on top of that.

    .venv/bin/python bench/cycle_speed.py
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import replace

from scheduler.cycle import run_cycle
from scheduler.domain.resources import NodeView, PendingJobView, PoolView, Snapshot
from scheduler.policies.ordering import priority_then_age


def build(pending: int, nodes: int, per_node: int = 8, seed: int = 0) -> Snapshot:
    rng = random.Random(seed)
    pool_nodes = tuple(
        NodeView(node_id=i, name=f"n{i}", devices=per_node,
                 free_devices=tuple(range(rng.randint(0, per_node), per_node)))
        for i in range(nodes)
    )
    pool = PoolView(pool_id=1, name="gpu", backend="ray", accelerator="H100",
                    devices_per_node=per_node, nodes=pool_nodes)
    template = PendingJobView(job_id=0, name="j", tenant="t", priority=0, submitted_seq=0,
                              pool=None, accelerator=None, devices=1, global_batch=64,
                              micro_batch=None, precision="bf16")
    jobs = tuple(
        replace(template, job_id=i, submitted_seq=i, priority=rng.choice([0, 0, 1, 5]),
                devices=rng.choice([1, 1, 2, 4, 8, 16, 32]))
        for i in range(pending)
    )
    return Snapshot(pools=(pool,), pending=jobs)


def median_seconds(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    header = ("pending", "nodes", "cycle ms", "sort ms", "ratio", "admitted")
    print("{:>8} {:>6} {:>10} {:>9} {:>7} {:>9}".format(*header))
    for pending, nodes in ((100, 16), (1000, 125), (5000, 500)):
        snap = build(pending, nodes)
        repeats = 5 if pending >= 5000 else 20
        cycle_s = median_seconds(lambda snap=snap: run_cycle(snap), repeats)
        sort_s = median_seconds(lambda snap=snap: priority_then_age(snap.pending), repeats)
        admitted = len(run_cycle(snap).admissions)
        print(f"{pending:>8} {nodes:>6} {cycle_s * 1e3:>10.2f} {sort_s * 1e3:>9.3f} "
              f"{cycle_s / sort_s:>7.1f} {admitted:>9}")


if __name__ == "__main__":
    main()
