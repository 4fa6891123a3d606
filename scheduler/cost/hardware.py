"""The hardware catalog: what one device of each accelerator type can do, with sources.

Units: FLOP/s for compute, bytes for memory, bytes/s for bandwidth, USD per device-hour for
price. Every row cites where its figures come from. Peak compute is *dense* bf16 (the sparsity
figures in vendor datasheets are 2× these and never reached by training). Bandwidths are per
device and per direction unless the row says otherwise. Prices are on-demand list prices at the
time of writing: a default that pools override (``Pool.price_per_device_hour``), not a quote.

``cpu`` has no fixed row: a CPU pool measures its own peak once (``measure_cpu_peak`` in the
worker, a GEMM micro-benchmark) and stores it as a pool override.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from scheduler.cost.time import DP_OVERLAP

GB = 1e9
GiB = 2**30
TFLOPS = 1e12


@dataclass(frozen=True, slots=True)
class Accelerator:
    """One device type: peak dense bf16 compute, memory, links and price."""

    name: str
    peak_bf16_flops: float
    """Dense bf16 tensor FLOP/s of one device."""
    memory_bytes: float
    memory_bandwidth_bytes_per_s: float
    intra_node_bytes_per_s: float
    """Per-device, per-direction bandwidth to peers inside a node (NVLink) or slice (ICI)."""
    network_bytes_per_s: float
    """Per-device, per-direction bandwidth across nodes (InfiniBand / RoCE / DCN)."""
    price_per_device_hour: float
    devices_per_node: int
    family: str
    """``gpu``, ``tpu`` or ``cpu``: which strategies and efficiency priors apply."""
    source: str
    collective_latency_s: float
    """α of the α–β model: seconds one collective costs beyond its bytes (launch, handshake)."""
    dp_overlap: float = DP_OVERLAP
    """Fraction of data-parallel traffic hidden behind backward (DDP buckets, FSDP prefetch)."""
    host_speed: float = 1.0
    """Share of one core each rank's host (Python) thread gets; below 1 only where ranks
    outnumber cores (a pool measures it, as it does its peak)."""

    def with_overrides(self, **fields: Any) -> Accelerator:
        """A copy with a pool's own figures (price, measured peak, ...)."""
        unknown = set(fields) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown accelerator fields {sorted(unknown)}")
        return replace(self, **fields)


# fmt: off
# One row per accelerator, positional as the dataclass reads, each with its sources.
# collective_latency_s (α, seconds per collective beyond its bytes): NCCL's tuner puts a 128 B
# ring all-reduce on an H100 cluster at 25 µs (NCCL_DEBUG=INFO "128 Bytes -> Algo 0 proto 0
# time 25.2", NVIDIA/nccl issue #1453); nccl-tests all_reduce_perf reports 54 µs for 8 B over
# 8 PCIe GPUs (NVIDIA/nccl issue #1439): 25 µs for NVLink rows, 50 µs for PCIe-only L4. TPU
# collectives run inside the compiled XLA step over ICI with no published per-collective
# figure: 10 µs is a prior. dp_overlap keeps the 0.8 prior on accelerators: bucketed DDP and
# FSDP prefetch run the collectives on their own streams beside backward.
CATALOG: dict[str, Accelerator] = {
    row.name: row
    for row in (
        Accelerator(
            "A100-80G", 312 * TFLOPS, 80 * GB, 2039 * GB, 300 * GB, 25 * GB, 5.12, 8, "gpu",
            # NVIDIA A100 datasheet (2021): 312 TFLOP/s bf16 dense, 80 GB HBM2e at 2,039 GB/s,
            # NVLink3 600 GB/s bidirectional = 300 GB/s per direction. Network: one 200 Gb/s
            # HDR InfiniBand NIC per GPU (DGX A100) = 25 GB/s. Price: AWS p4de.24xlarge
            # on-demand $40.96/h for 8 GPUs (us-east-1).
            "NVIDIA A100 datasheet; DGX A100 user guide; AWS EC2 p4de pricing",
            collective_latency_s=25e-6,
        ),
        Accelerator(
            "H100-SXM", 989.4 * TFLOPS, 80 * GB, 3350 * GB, 450 * GB, 50 * GB, 12.29, 8, "gpu",
            # NVIDIA H100 datasheet: 989.4 TFLOP/s bf16 dense (1,979 with sparsity), 80 GB HBM3
            # at 3.35 TB/s, NVLink4 900 GB/s bidirectional. Network: one 400 Gb/s NDR NIC per
            # GPU (DGX H100) = 50 GB/s. Price: AWS p5.48xlarge $98.32/h for 8 GPUs.
            "NVIDIA H100 Tensor Core GPU datasheet; DGX H100 user guide; AWS EC2 p5 pricing",
            collective_latency_s=25e-6,
        ),
        Accelerator(
            "H200", 989.4 * TFLOPS, 141 * GB, 4800 * GB, 450 * GB, 50 * GB, 10.60, 8, "gpu",
            # NVIDIA H200 datasheet: same compute as H100 SXM, 141 GB HBM3e at 4.8 TB/s,
            # NVLink4 900 GB/s bidirectional. Price: AWS p5e.48xlarge (8 × H200), estimate from
            # public listings; override per pool.
            "NVIDIA H200 Tensor Core GPU datasheet; AWS EC2 p5e listing (estimate)",
            collective_latency_s=25e-6,
        ),
        Accelerator(
            "L4", 121 * TFLOPS, 24 * GB, 300 * GB, 32 * GB, 12.5 * GB, 0.80, 8, "gpu",
            # NVIDIA L4 datasheet: 242 TFLOP/s bf16 with sparsity = 121 dense, 24 GB GDDR6 at
            # 300 GB/s; no NVLink: PCIe Gen4 x16 = 32 GB/s per direction. Network: AWS g6.48xlarge
            # 100 Gb/s shared by 8 GPUs. Price: Google Cloud g2 list price per L4, approx.
            "NVIDIA L4 datasheet; AWS EC2 G6 specs; Google Cloud G2 pricing (approx.)",
            collective_latency_s=50e-6,
        ),
        Accelerator(
            "TPU-v4", 275 * TFLOPS, 32 * GiB, 1200 * GB, 300 * GB, 6.25 * GB, 3.22, 4, "tpu",
            # Cloud TPU v4 docs: 275 TFLOP/s bf16, 32 GiB HBM2 at 1,200 GB/s, ICI 2,400 Gbps per
            # chip = 300 GB/s. DCN: 100 Gb/s per 4-chip host. Price: $3.22 per chip-hour.
            "Google Cloud TPU v4 system architecture; Cloud TPU pricing",
            collective_latency_s=10e-6,
        ),
        Accelerator(
            "TPU-v5e", 197 * TFLOPS, 16 * GB, 819 * GB, 200 * GB, 6.25 * GB, 1.20, 4, "tpu",
            # Cloud TPU v5e docs: 197 TFLOP/s bf16, 16 GB HBM2 at 819 GB/s, ICI 1,600 Gbps =
            # 200 GB/s. Price: $1.20 per chip-hour.
            "Google Cloud TPU v5e docs; Cloud TPU pricing",
            collective_latency_s=10e-6,
        ),
        Accelerator(
            "TPU-v5p", 459 * TFLOPS, 95 * GB, 2765 * GB, 600 * GB, 6.25 * GB, 4.20, 4, "tpu",
            # Cloud TPU v5p docs: 459 TFLOP/s bf16, 95 GB HBM2e at 2,765 GB/s, ICI 4,800 Gbps =
            # 600 GB/s. Price: $4.20 per chip-hour.
            "Google Cloud TPU v5p docs; Cloud TPU pricing",
            collective_latency_s=10e-6,
        ),
        Accelerator(
            "TPU-v6e", 918 * TFLOPS, 32 * GB, 1640 * GB, 448 * GB, 6.25 * GB, 2.70, 4, "tpu",
            # Cloud TPU v6e (Trillium) docs: 918 TFLOP/s bf16, 32 GB HBM at 1,640 GB/s, ICI
            # 3,584 Gbps = 448 GB/s. Price: $2.70 per chip-hour.
            "Google Cloud TPU v6e docs; Cloud TPU pricing",
            collective_latency_s=10e-6,
        ),
    )
}

CPU_PLACEHOLDER = Accelerator(
    "cpu", 50e9, 16 * GB, 25 * GB, 1.2 * GB, 1.25 * GB, 0.0, 1, "cpu",
    # One rank with one thread. Placeholder peak until the pool's own GEMM micro-benchmark
    # replaces peak_bf16_flops: ~50 GFLOP/s is one AVX2 core doing fp32 FMA at ~3 GHz
    # (2 FMA units × 8 lanes × 2 FLOP). Memory is the node's RAM share per rank. Measured on a
    # 2-core AMD EPYC VM shared with other work, `.venv/bin/python bench/cpu_links.py`, fastest
    # of 15 in each of several invocations:
    # - memory bandwidth 25 GB/s: the trainer's clip + AdamW on a 3.3 M-parameter Llama in
    #   8.6–10 ms, at 84 B per parameter (scheduler.cost.time.OPTIMIZER_BYTES_PER_PARAM)
    #   28–32 GB/s; the medians, 11–15 ms, 18–25 GB/s;
    # - intra-node 1.2 GB/s: a loopback gloo all-reduce of 16 MiB between 2 ranks in
    #   11.5–15 ms, 2·(n−1)/n · 16 MiB sent per rank: 1.1–1.5 GB/s (4 ranks on the 2 cores:
    #   0.4–0.9 GB/s). Gloo moves the bytes through TCP loopback.
    "placeholder; measured per pool",
    # α 1.5 ms: what a 1 MiB all-reduce between 2 ranks adds after a burst of compute, as
    # collectives come in training, beyond its bytes (`bench/cpu_links.py` "sync": fastest
    # 1.2 ms, median 1.75; the same all-reduce alone takes 0.75–1.4 ms, a 4-byte one 0.17):
    # each rank's peer is busy computing and gloo's transfer waits for it to be scheduled.
    # With 4 ranks on the 2 cores it is 6 ms. Overlap 0: gloo moves the bytes through TCP
    # loopback on the same cores the compute needs; the trainer's phases show DDP's
    # all-reduce adding its full time to the step.
    collective_latency_s=1.5e-3, dp_overlap=0.0,
)
# fmt: on

ALIASES = {
    "a100": "A100-80G",
    "h100": "H100-SXM",
    "h200": "H200",
    "l4": "L4",
    "v4": "TPU-v4",
    "v5e": "TPU-v5e",
    "v5p": "TPU-v5p",
    "v6e": "TPU-v6e",
}


def lookup(name: str, overrides: dict[str, Any] | None = None) -> Accelerator:
    """The catalog row for ``name`` (case-insensitive, aliases allowed), with pool overrides."""
    key = name.strip()
    row = CATALOG.get(key) or next(
        (r for n, r in CATALOG.items() if n.lower() == key.lower()), None
    )
    if row is None and key.lower() in ALIASES:
        row = CATALOG[ALIASES[key.lower()]]
    if row is None and key.lower() == "cpu":
        row = CPU_PLACEHOLDER
    if row is None:
        known = ", ".join(sorted(CATALOG))
        raise KeyError(f"unknown accelerator {name!r}; the catalog has: {known}, cpu")
    return row.with_overrides(**overrides) if overrides else row
