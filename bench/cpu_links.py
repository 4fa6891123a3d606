"""The figures of the catalog's ``cpu`` row that the time model reads besides the peak.

* memory bandwidth: the trainer's optimizer phase (clip + AdamW) on ``bench/cost_time.py``'s
  model M with one thread, as the bandwidth ``OPTIMIZER_BYTES_PER_PARAM`` · N / time;
* intra-node link: loopback gloo all-reduces between 2 and 4 ranks of one thread each (4 B:
  latency; 16 MiB: bandwidth, as ring bytes sent per rank, 2·(n−1)/n · payload, per second).

Each is timed ``REPEATS`` times; the fastest is the undisturbed machine, the median shows how
much other work on a shared machine moves it.

    .venv/bin/python bench/cpu_links.py
"""

from __future__ import annotations

import statistics
import time

from cost_time import CONFIGS, job_spec
from cost_time_runs import free_port, join_as_rank

from scheduler.cost.time import OPTIMIZER_BYTES_PER_PARAM

PAYLOADS_BYTES = (4, 16 * 2**20)
"""A latency-bound and a bandwidth-bound all-reduce (model M's gradients are 13 MB)."""
REPEATS = 15


def _timing(times_s: list[float]) -> str:
    return f"fastest {min(times_s) * 1e3:.2f} ms, median {statistics.median(times_s) * 1e3:.2f} ms"


def optimizer_bandwidth() -> None:
    """Clip + AdamW over model M's real tensors (AdamW on the CPU steps one tensor at a time
    with several passes over it, which stay in cache for layer-sized tensors)."""
    import torch

    from workers.core.grad_clip import clip_grad_norm_
    from workers.core.model import build_model, parameter_count
    from workers.core.optim import build_optimizer
    from workers.core.tokenizer import ByteTokenizer

    torch.set_num_threads(1)
    spec = job_spec(CONFIGS[0], steps=10)
    model = build_model(spec.model, ByteTokenizer(), spec.seed)
    optimizer = build_optimizer(model, spec.optimizer)
    params = parameter_count(model)
    times_s = []
    for _ in range(REPEATS + 1):
        for parameter in model.parameters():
            parameter.grad = torch.randn_like(parameter)
        start_s = time.perf_counter()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        times_s.append(time.perf_counter() - start_s)
    times_s = times_s[1:]  # the first step allocates AdamW's moments
    traffic_bytes = OPTIMIZER_BYTES_PER_PARAM * params
    print(
        f"clip + AdamW, model M ({params / 1e6:.2f} M fp32 parameters), 1 thread: "
        f"{_timing(times_s)}; {traffic_bytes / min(times_s) / 1e9:.1f} GB/s (fastest), "
        f"{traffic_bytes / statistics.median(times_s) / 1e9:.1f} GB/s (median) at "
        f"{OPTIMIZER_BYTES_PER_PARAM} bytes per parameter",
        flush=True,
    )


def links_rank(rank: int, world: int, port: int) -> None:
    """All-reduces over gloo, one thread per rank; rank 0 prints the times."""
    import torch
    import torch.distributed as dist

    from workers.core.distributed import shutdown_distributed

    ctx = join_as_rank(rank, world, port)
    torch.set_num_threads(1)
    try:
        for payload_bytes in PAYLOADS_BYTES:
            tensor = torch.ones(payload_bytes // 4)
            dist.all_reduce(tensor)
            times_s = []
            for _ in range(REPEATS):
                ctx.barrier()
                start_s = time.perf_counter()
                dist.all_reduce(tensor)
                times_s.append(time.perf_counter() - start_s)
            if ctx.is_rank_zero:
                # The time model's measure of a link (scheduler.cost.time.ring_allreduce_bytes).
                ring_bytes = 2 * (world - 1) / world * payload_bytes
                print(
                    f"gloo all-reduce, {world} ranks, {payload_bytes:>8} B: "
                    f"{_timing(times_s)}; {ring_bytes / min(times_s) / 1e9:.2f} GB/s per rank "
                    f"(ring bytes / fastest)",
                    flush=True,
                )
    finally:
        shutdown_distributed()


def main() -> None:
    import torch.multiprocessing as mp

    optimizer_bandwidth()
    for world in (2, 4):
        mp.start_processes(
            links_rank, args=(world, free_port()), nprocs=world, start_method="spawn"
        )


if __name__ == "__main__":
    main()
