"""Step-time arithmetic: each term behaves as its equation says."""

from __future__ import annotations

import pytest

from scheduler.cost.time import (
    DP_OVERLAP,
    OPTIMIZER_BYTES_PER_PARAM,
    efficiency,
    ring_allreduce_bytes,
    ring_gather_bytes,
    step_time,
)

BASE = dict(
    flops_per_device=1e15,
    peak_flops=1e15,
    eta=0.5,
    params_per_device_full=1e9,
    weight_bytes=2,
    grad_bytes=2,
    dp_link_bytes_per_s=1e11,
    memory_bandwidth_bytes_per_s=1e12,
)


def test_ring_volumes() -> None:
    assert ring_allreduce_bytes(8.0, 1) == 0.0
    assert ring_allreduce_bytes(8.0, 4) == 12.0  # 2·(n−1)/n·payload
    assert ring_gather_bytes(8.0, 4) == 6.0


def test_single_device_is_compute_plus_optimizer() -> None:
    result = step_time(strategy="single", dp=1, **BASE)  # type: ignore[arg-type]
    assert result.parts_s["compute"] == pytest.approx(2.0)  # 1e15 / (1e15 · 0.5)
    assert result.parts_s["data_parallel_comm_exposed"] == 0.0
    assert result.parts_s["optimizer"] == pytest.approx(OPTIMIZER_BYTES_PER_PARAM * 1e9 / 1e12)


def test_ddp_exposes_the_unoverlapped_all_reduce() -> None:
    result = step_time(strategy="ddp", dp=8, **BASE)  # type: ignore[arg-type]
    expected = (1 - DP_OVERLAP) * 2 * 7 / 8 * 2e9 / 1e11
    assert result.parts_s["data_parallel_comm_exposed"] == pytest.approx(expected)


def test_full_shard_moves_more_than_grad_op() -> None:
    full = step_time(strategy="fsdp_full", dp=8, **BASE)  # type: ignore[arg-type]
    grad_op = step_time(strategy="fsdp_grad_op", dp=8, **BASE)  # type: ignore[arg-type]
    assert full.parts_s["data_parallel_comm_exposed"] == pytest.approx(
        grad_op.parts_s["data_parallel_comm_exposed"] * 3 / 2
    )


def test_accumulation_repeats_fsdp_traffic_but_not_the_ddp_all_reduce() -> None:
    # The trainer reduces FSDP gradients after every micro-batch and DDP's only after the last.
    def exposed(strategy: str, grad_accum: int) -> float:
        result = step_time(strategy=strategy, dp=8, grad_accum=grad_accum, **BASE)  # type: ignore[arg-type]
        return result.parts_s["data_parallel_comm_exposed"]

    assert exposed("fsdp_full", 4) == pytest.approx(4 * exposed("fsdp_full", 1))
    assert exposed("fsdp_grad_op", 4) == pytest.approx(4 * exposed("fsdp_grad_op", 1))
    assert exposed("ddp", 4) == pytest.approx(exposed("ddp", 1))


def test_tensor_parallel_and_pipeline_terms() -> None:
    result = step_time(
        strategy="tp",
        dp=1,
        tp=4,
        tp_link_bytes_per_s=1e11,
        tp_activation_bytes=1e8,
        layers=10,
        grad_accum=2,
        pp=2,
        **BASE,
    )  # type: ignore[arg-type]
    assert result.parts_s["tensor_parallel_comm"] == pytest.approx(
        4 * 10 * 2 * (2 * 3 / 4 * 1e8) / 1e11
    )
    busy = (
        result.parts_s["compute"]
        + result.parts_s["data_parallel_comm_exposed"]
        + result.parts_s["tensor_parallel_comm"]
    )
    assert result.parts_s["pipeline_bubble"] == pytest.approx(busy * 1 / 2)
    assert "ms" in result.explain()


def test_efficiency_prefers_calibration_over_prior() -> None:
    assert efficiency("gpu", "ddp") == 0.40
    assert efficiency("gpu", "ddp", {("gpu", "ddp"): 0.55}) == 0.55
    assert efficiency("npu", "ddp") == 0.30
