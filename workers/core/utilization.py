"""Peak FLOP/s of this rank's device, for MFU: the hardware catalog on CUDA, a benchmark on CPU.

CUDA: the driver's device name picks a row of :data:`scheduler.cost.hardware.CATALOG` (dense
bf16 peak from NVIDIA's datasheets). MFU is quoted against that peak whatever the job's precision,
the usual convention, so an fp32 job on a GPU shows how much of the part it leaves unused.

CPU: there is no datasheet for "this machine's share of cores", so each rank measures once at
start (:func:`measure_cpu_peak`): the best of a few fp32 1024 × 1024 matrix products
(2·1024³ FLOPs each) with the threads the rank was given. Ranks run it at the same time, so each
measures its share of a busy machine, as it will train.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import torch

from scheduler.cost.hardware import lookup
from workers.core.distributed import DistContext
from workers.core.metrics import FlopsUtilization, model_flops_per_token

__all__ = ["build_utilization", "catalog_name_for_device", "device_peak_flops_per_s",
           "measure_cpu_peak"]

logger = logging.getLogger(__name__)

CPU_BENCHMARK_SIZE = 1024
CPU_BENCHMARK_REPEATS = 5

_CUDA_DEVICE_NAMES: tuple[tuple[str, str], ...] = (
    (r"\bH200\b", "H200"),
    # "NVIDIA H100 80GB HBM3" is the SXM part; PCIe and NVL parts are slower and have no row.
    (r"\bH100\b(?!.*\b(PCIe|NVL)\b)", "H100-SXM"),
    # Every A100 variant has the same 312 TFLOP/s bf16 peak; only the memory differs.
    (r"\bA100\b", "A100-80G"),
    (r"\bL4\b", "L4"),
)
"""Driver device name (regular expression) → catalog row."""


def measure_cpu_peak(size: int = CPU_BENCHMARK_SIZE,
                     repeats: int = CPU_BENCHMARK_REPEATS) -> float:
    """FLOP/s of the best of ``repeats`` fp32 ``size × size`` matrix products on this process."""
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(size, size, generator=generator)
    right = torch.randn(size, size, generator=generator)
    torch.mm(left, right)  # warm-up: thread pool start and first-touch of the output
    best_s = float("inf")
    for _ in range(repeats):
        start_s = time.perf_counter()
        torch.mm(left, right)
        best_s = min(best_s, time.perf_counter() - start_s)
    return 2 * size**3 / best_s


def catalog_name_for_device(device_name: str) -> str | None:
    """The hardware catalog's row for a CUDA driver device name, or None if it has none."""
    for pattern, catalog_name in _CUDA_DEVICE_NAMES:
        if re.search(pattern, device_name):
            return catalog_name
    return None


def device_peak_flops_per_s(device: torch.device) -> float | None:
    """Peak FLOP/s of ``device``: the catalog's for a known GPU, measured for the CPU."""
    if device.type == "cpu":
        return measure_cpu_peak()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        catalog_name = catalog_name_for_device(name)
        if catalog_name is not None:
            return lookup(catalog_name).peak_bf16_flops
        logger.warning("no peak FLOP/s known for %r; MFU is not reported", name)
    return None


def build_utilization(model_config: Mapping[str, Any], seq_len: int,
                      ctx: DistContext) -> FlopsUtilization | None:
    """The gang's MFU meter, or None where the model or device has no known figures.

    Every rank must call it: the per-device peak is the mean over ranks (one collective).
    """
    flops_per_token = model_flops_per_token(model_config, seq_len)
    peak = device_peak_flops_per_s(ctx.device)
    # Agree on whether MFU is reported and on one peak: the mean of the ranks' measurements.
    total_peak, ranks_without = ctx.all_reduce_sum([peak or 0.0, 0.0 if peak else 1.0])
    if flops_per_token is None or ranks_without > 0:
        if flops_per_token is None:
            logger.info("model_type %s has no FLOPs formula; MFU is not reported",
                        model_config.get("model_type"))
        return None
    peak_per_device = total_peak / ctx.world_size
    logger.info("peak %.3g FLOP/s per device (%s), %.4g FLOPs per token", peak_per_device,
                "measured" if ctx.device.type == "cpu" else "catalog", flops_per_token)
    return FlopsUtilization(flops_per_token=flops_per_token,
                            peak_flops_per_device_per_s=peak_per_device,
                            devices=ctx.world_size)
