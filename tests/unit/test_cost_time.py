"""Step-time arithmetic: each term behaves as its equation says."""

from __future__ import annotations

import pytest

from scheduler.cost.time import (
    DDP_BUCKET_BYTES,
    DP_OVERLAP,
    HOST_EXTRA_S_PER_LAYER,
    HOST_S_PER_LAYER,
    OPTIMIZER_BYTES_PER_PARAM,
    OPTIMIZER_S_PER_DTENSOR,
    OPTIMIZER_S_PER_TENSOR,
    RECOMPUTE_HOST_S_PER_LAYER,
    StepTime,
    data_parallel_collectives,
    ddp_buckets,
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


def test_every_collective_pays_the_latency() -> None:
    # FSDP full shard on 4 layers: per micro-step 3 per block + 2 for the root (FSDP2 keeps
    # the root gathered after forward); grad-op 2 per unit; DDP one per bucket, once per step.
    assert data_parallel_collectives("fsdp_full", 4, 2, 1, 1e6, 2) == 2 * (3 * 4 + 2)
    assert data_parallel_collectives("fsdp_grad_op", 4, 2, 1, 1e6, 1) == 2 * 5
    assert data_parallel_collectives("ddp", 4, 2, 1, 100 * 2**20, 8) == ddp_buckets(100 * 2**20)
    assert ddp_buckets(2**19) == 1 and ddp_buckets(2**20 + 1) == 2
    assert ddp_buckets(2**20 + DDP_BUCKET_BYTES + 1) == 3
    # HSDP adds an all-reduce per unit across replicas; one rank has nothing to talk to.
    assert data_parallel_collectives("fsdp_full", 4, 4, 2, 1e6, 1) == 14 + 5
    assert data_parallel_collectives("fsdp_full", 4, 1, 1, 1e6, 1) == 0
    alpha = 1e-3
    without = step_time(strategy="fsdp_full", dp=2, layers=4, dp_overlap=0.0, **BASE)  # type: ignore[arg-type]
    with_latency = step_time(strategy="fsdp_full", dp=2, layers=4, dp_overlap=0.0,
                             collective_latency_s=alpha, **BASE)  # type: ignore[arg-type]
    extra = (with_latency.parts_s["data_parallel_comm_exposed"]
             - without.parts_s["data_parallel_comm_exposed"])
    assert extra == pytest.approx(14 * alpha)
    # The loss-and-stop all-reduce, and the DTensor gradient norm's all-reduce.
    assert with_latency.parts_s["synchronisation"] == pytest.approx(2 * alpha)


def test_overlap_hides_only_data_parallel_traffic() -> None:
    hidden = step_time(strategy="ddp", dp=8, dp_overlap=1.0, collective_latency_s=1e-3,
                       **BASE)  # type: ignore[arg-type]
    exposed = step_time(strategy="ddp", dp=8, dp_overlap=0.0, collective_latency_s=1e-3,
                        **BASE)  # type: ignore[arg-type]
    assert hidden.parts_s["data_parallel_comm_exposed"] == 0.0
    assert exposed.parts_s["data_parallel_comm_exposed"] == pytest.approx(
        2 * 7 / 8 * 2e9 / 1e11 + ddp_buckets(2e9) * 1e-3)
    assert hidden.parts_s["synchronisation"] == exposed.parts_s["synchronisation"] == 1e-3


def test_host_work_adds_on_a_cpu_hides_on_a_gpu_and_vanishes_when_compiled() -> None:
    def timing(mode: str, strategy: str = "single", **extra: object) -> StepTime:
        return step_time(strategy=strategy, dp=1, layers=10, parameter_tensors=93,
                         host_mode=mode, grad_accum=2, **extra, **BASE)  # type: ignore[arg-type]

    serial = timing("serial")
    host = 10 * 2 * HOST_S_PER_LAYER
    assert serial.parts_s["host"] == pytest.approx(host)
    assert serial.parts_s["optimizer"] == pytest.approx(
        OPTIMIZER_BYTES_PER_PARAM * 1e9 / 1e12 + 93 * OPTIMIZER_S_PER_TENSOR)
    # Two seconds of device work hide 23 ms of dispatch on an accelerator that runs ahead.
    assert timing("async").parts_s["host"] == 0.0
    assert "host" not in timing("compiled").parts_s
    # Half a core doubles host time; recomputation and DTensor wrappers add theirs.
    assert timing("serial", host_speed=0.5).parts_s["host"] == pytest.approx(2 * host)
    assert timing("serial", recompute=True).parts_s["host"] == pytest.approx(
        10 * 2 * (HOST_S_PER_LAYER + RECOMPUTE_HOST_S_PER_LAYER))
    sharded = step_time(strategy="fsdp_full", dp=2, layers=10, parameter_tensors=93,
                        host_mode="serial", **BASE)  # type: ignore[arg-type]
    assert sharded.parts_s["host"] == pytest.approx(
        10 * (HOST_S_PER_LAYER + HOST_EXTRA_S_PER_LAYER["fsdp_full"]))
    assert sharded.parts_s["optimizer"] == pytest.approx(
        OPTIMIZER_BYTES_PER_PARAM * 0.5e9 / 1e12 + 93 * OPTIMIZER_S_PER_DTENSOR)
