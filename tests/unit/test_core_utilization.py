"""MFU on the worker: the cost model's FLOPs, the catalog's peaks on GPUs, a benchmark on CPUs."""

from __future__ import annotations

import pytest

from scheduler.cost.hardware import lookup
from workers.core.metrics import FlopsUtilization, model_flops_per_token
from workers.core.utilization import catalog_name_for_device, measure_cpu_peak

TERA = 1e12


@pytest.mark.parametrize(("device_name", "catalog_name", "peak_tflops"), [
    ("NVIDIA H100 80GB HBM3", "H100-SXM", 989.4),
    ("NVIDIA H200", "H200", 989.4),
    ("NVIDIA A100-SXM4-80GB", "A100-80G", 312),
    ("NVIDIA A100 80GB PCIe", "A100-80G", 312),
    ("NVIDIA L4", "L4", 121),
    ("NVIDIA H100 PCIe", None, None),
    ("NVIDIA H100 NVL", None, None),
    ("NVIDIA L40S", None, None),
])
def test_gpu_names_map_to_catalog_rows_and_unknown_parts_to_none(
        device_name: str, catalog_name: str | None, peak_tflops: float | None) -> None:
    assert catalog_name_for_device(device_name) == catalog_name
    if catalog_name is not None:
        assert lookup(catalog_name).peak_bf16_flops == pytest.approx(peak_tflops * TERA)


def test_mfu_is_model_flops_per_second_over_the_gangs_peak() -> None:
    meter = FlopsUtilization(flops_per_token=6_000, peak_flops_per_device_per_s=1e9, devices=2)
    # 100 000 tokens/s × 6 000 FLOPs = 6e8 FLOP/s of a 2e9 FLOP/s gang.
    assert meter.event_fields(tokens_per_s=100_000) == {"mfu": 0.3, "peak_flops": 1e9}


def test_the_worker_counts_flops_with_the_cost_models_formula() -> None:
    llama = {"model_type": "llama", "vocab_size": 258, "hidden_size": 64,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128}
    # 6·N + 12·L·H·d_h·S with N = 2·(2·64·64 + 2·64·32 + 3·64·128) + 64·258, S = 32.
    assert model_flops_per_token(llama, seq_len=32) == 6 * (2 * 36_864 + 16_512) + 12 * 2 * 64 * 32
    assert model_flops_per_token({"model_type": "t5"}, seq_len=32) is None


def test_the_cpu_peak_is_a_plausible_measured_rate() -> None:
    peak_flops_per_s = measure_cpu_peak(size=256, repeats=2)
    # From a slow emulated core (0.1 GFLOP/s) to a large server (100 TFLOP/s).
    assert 1e8 < peak_flops_per_s < 1e14
