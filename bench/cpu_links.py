"""The figures of the catalog's ``cpu`` row that the time model reads besides the peak.

* memory bandwidth: the trainer's optimizer phase (clip + AdamW) on ``bench/cost_time.py``'s
  model M with one thread, as the bandwidth ``OPTIMIZER_BYTES_PER_PARAM`` · N / time;
* intra-node link: loopback gloo all-reduces between 2 and 4 ranks of one thread each (4 B:
  latency; 16 MiB: bandwidth, as ring bytes sent per rank, 2·(n−1)/n · payload, per second),
  and α as training meets it: a 1 MiB all-reduce after a burst of matrix products, beyond
  its bytes (``cost_time_runs.gang_links``, "sync");
* host dispatch (``scheduler.cost.time.HOST_S_PER_LAYER`` and the figures after it): forward
  and backward of a Llama whose blocks have hidden size 16 (compute nil, so the time is the
  host's) with 2 and 8 blocks, plain and under each wrapper on a one-rank mesh: the slope per
  block; clip + AdamW over that model's 75 tensors, plain and as FSDP2's DTensors, per tensor;
* elementwise (``scheduler.cost.time.ELEMENTWISE_VALUES_PER_TOKEN_HIDDEN``): model M's forward
  and backward on 8 × 128 tokens, one thread, less the self time torch's profiler gives its
  matrix products and attention kernels and less the host dispatch per block: the rest is
  memory-bound elementwise work, as values per token and hidden unit per block at the cpu
  row's memory bandwidth.

Each is timed ``REPEATS`` times; the fastest is the undisturbed machine, the median shows how
much other work on a shared machine moves it.

    .venv/bin/python bench/cpu_links.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from cost_time import CONFIGS, job_spec
from cost_time_runs import free_port, gang_links, join_as_rank

from scheduler.cost.hardware import lookup
from scheduler.cost.time import HOST_S_PER_LAYER, OPTIMIZER_BYTES_PER_PARAM

if TYPE_CHECKING:
    import torch
    from torch import nn

HOST_LAYERS = (2, 8)
"""Blocks of the two host-dispatch models; the difference over 6 blocks is the per-block cost."""
HOST_STEPS = 20
PAYLOADS_BYTES = (4, 16 * 2**20)
"""A latency-bound and a bandwidth-bound all-reduce (model M's gradients are 13 MB)."""
REPEATS = 15


def _timing(times_s: list[float]) -> str:
    return f"fastest {min(times_s) * 1e3:.2f} ms, median {statistics.median(times_s) * 1e3:.2f} ms"


def _clip_and_step_s(model: nn.Module, steps: int,
                     gradient: Callable[[torch.Tensor], torch.Tensor]) -> list[float]:
    """Seconds of the trainer's optimizer phase (clip to norm 1.0, then its AdamW step) over
    ``model``, ``steps`` times, each on fresh gradients ``gradient(parameter)``; the first step
    also allocates AdamW's moments."""
    from workers.core.grad_clip import clip_grad_norm_
    from workers.core.optim import build_optimizer

    optimizer = build_optimizer(model, job_spec(CONFIGS[0], steps=10).optimizer)
    parameters = list(model.parameters())
    times_s = []
    for _ in range(steps):
        for parameter in parameters:
            parameter.grad = gradient(parameter)
        start_s = time.perf_counter()
        clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        times_s.append(time.perf_counter() - start_s)
    return times_s


def optimizer_bandwidth() -> None:
    """Clip + AdamW over model M's real tensors (AdamW on the CPU steps one tensor at a time
    with several passes over it, which stay in cache for layer-sized tensors)."""
    import torch

    from workers.core.model import build_model, parameter_count
    from workers.core.tokenizer import ByteTokenizer

    torch.set_num_threads(1)
    spec = job_spec(CONFIGS[0], steps=10)
    model = build_model(spec.model, ByteTokenizer(), spec.seed)
    params = parameter_count(model)
    times_s = _clip_and_step_s(model, REPEATS + 1, torch.randn_like)[1:]
    traffic_bytes = OPTIMIZER_BYTES_PER_PARAM * params
    print(
        f"clip + AdamW, model M ({params / 1e6:.2f} M fp32 parameters), 1 thread: "
        f"{_timing(times_s)}; {traffic_bytes / min(times_s) / 1e9:.1f} GB/s (fastest), "
        f"{traffic_bytes / statistics.median(times_s) / 1e9:.1f} GB/s (median) at "
        f"{OPTIMIZER_BYTES_PER_PARAM} bytes per parameter",
        flush=True,
    )


MATMUL_AND_ATTENTION_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product")


def elementwise_values() -> None:
    """Values the non-matmul ops of model M move per token and hidden unit per block."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from workers.core.model import build_model
    from workers.core.tokenizer import ByteTokenizer

    torch.set_num_threads(1)
    spec = job_spec(CONFIGS[0], steps=10)
    model = build_model(spec.model, ByteTokenizer(), spec.seed)
    model.train()
    tokens = torch.randint(0, 250, (8, 128))
    times_s = []
    for _ in range(REPEATS):
        start_s = time.perf_counter()
        model(input_ids=tokens, labels=tokens).loss.backward()
        times_s.append(time.perf_counter() - start_s)
    heavy = []  # the fastest of five profiled steps: the profiler's own cost varies
    for _ in range(5):
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            model(input_ids=tokens, labels=tokens).loss.backward()
        heavy.append(sum(event.self_cpu_time_total for event in profiler.key_averages()
                         if event.key.startswith(MATMUL_AND_ATTENTION_OPS)) / 1e6)
    heavy_s = min(heavy)
    layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    rest_s = min(times_s[1:]) - heavy_s - HOST_S_PER_LAYER * layers
    bandwidth = lookup("cpu").memory_bandwidth_bytes_per_s
    values = rest_s * bandwidth / 4 / (tokens.numel() * hidden * layers)
    print(f"elementwise, model M forward + backward, 1 thread: step {min(times_s[1:]) * 1e3:.1f} "
          f"ms, matrix products and attention {heavy_s * 1e3:.1f} ms, host "
          f"{HOST_S_PER_LAYER * layers * 1e3:.1f} ms; the rest {rest_s * 1e3:.1f} ms = "
          f"{values:.0f} fp32 values per token and hidden unit per block at "
          f"{bandwidth / 1e9:.0f} GB/s", flush=True)


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
        sync_s = [gang_links(ctx)[0] for _ in range(5)]
        if ctx.is_rank_zero:
            print(
                f"gloo sync, {world} ranks: α of a 1 MiB all-reduce after a burst of compute "
                f"(beyond its bytes): {_timing(sync_s)}",
                flush=True,
            )
    finally:
        shutdown_distributed()


def _host_model(layers: int, wrapper: str) -> nn.Module:
    """The tiny Llama of ``layers`` blocks, wrapped as the trainer wraps it for ``wrapper``."""
    from torch.distributed.device_mesh import init_device_mesh

    from workers.core.data_parallel import apply_fsdp
    from workers.core.model import build_model
    from workers.core.parallelize import apply_activation_checkpointing
    from workers.core.tensor_parallel import apply_tp
    from workers.core.tokenizer import ByteTokenizer

    spec = job_spec(CONFIGS[0], steps=10)
    tiny = {"hidden_size": 16, "intermediate_size": 16, "num_attention_heads": 2,
            "num_key_value_heads": 2, "num_hidden_layers": layers}
    model_spec = spec.model.model_copy(update={"config": {**spec.model.config, **tiny}})
    model = build_model(model_spec, ByteTokenizer(), spec.seed)
    mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("dp_shard", "tp"))
    if wrapper == "tp":
        apply_tp(model, mesh["tp"])
    if wrapper == "recompute":
        apply_activation_checkpointing(model)
    if wrapper.startswith("fsdp"):
        apply_fsdp(model, mesh["dp_shard"], wrapper == "fsdp_full", None)
    model.train()
    return model


def host_dispatch_rank(rank: int, world: int, port: int) -> None:
    """Host seconds per block (forward + backward) and per parameter tensor (clip + AdamW)."""
    import torch

    from workers.core.distributed import shutdown_distributed

    join_as_rank(rank, world, port)
    torch.set_num_threads(1)
    tokens = torch.randint(0, 200, (1, 16))
    try:
        fastest: dict[tuple[str, int], float] = {}
        for wrapper in ("plain", "fsdp_full", "fsdp_grad_op", "tp", "recompute"):
            for layers in HOST_LAYERS:
                model = _host_model(layers, wrapper)
                times_s = []
                for _ in range(HOST_STEPS):
                    start_s = time.perf_counter()
                    model(input_ids=tokens, labels=tokens).loss.backward()
                    times_s.append(time.perf_counter() - start_s)
                    model.zero_grad(set_to_none=True)
                fastest[wrapper, layers] = min(times_s[2:])
        blocks = HOST_LAYERS[1] - HOST_LAYERS[0]

        def per_block(wrapper: str) -> float:
            return (fastest[wrapper, HOST_LAYERS[1]] - fastest[wrapper, HOST_LAYERS[0]]) / blocks

        plain = per_block("plain")
        print(f"host dispatch, forward + backward per block, 1 thread: plain {plain * 1e3:.2f} ms; "
              + ", ".join(f"{wrapper} +{(per_block(wrapper) - plain) * 1e3:.2f} ms"
                          for wrapper in ("fsdp_full", "fsdp_grad_op", "tp", "recompute")),
              flush=True)
        for wrapper in ("plain", "fsdp_full"):
            model = _host_model(HOST_LAYERS[1], wrapper)
            tensors = len(list(model.parameters()))
            times_s = _clip_and_step_s(model, HOST_STEPS, torch.zeros_like)[2:]
            kind = "DTensor" if wrapper != "plain" else "plain"
            print(f"host dispatch, clip + AdamW per {kind} parameter tensor ({tensors} "
                  f"tensors): {min(times_s) / tensors * 1e6:.0f} us (fastest), "
                  f"{statistics.median(times_s) / tensors * 1e6:.0f} us (median)",
                  flush=True)
    finally:
        shutdown_distributed()


def main() -> None:
    import torch.multiprocessing as mp

    optimizer_bandwidth()
    elementwise_values()
    mp.start_processes(host_dispatch_rank, args=(1, free_port()), nprocs=1, start_method="spawn")
    for world in (2, 4):
        mp.start_processes(
            links_rank, args=(world, free_port()), nprocs=world, start_method="spawn"
        )


if __name__ == "__main__":
    main()
