"""The planner: fit rejection with reasons, ranking under each objective."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.cost.hardware import lookup
from scheduler.cost.planner import Candidate, PlanRequest, PoolOption, evaluate, plan_job
from scheduler.cost.profile import ModelProfile
from scheduler.domain.plan import Plan, Strategy

# Llama-2 7B shape (Touvron et al. 2023): 32 layers, d=4096, 32 heads, V=32000, 6.74 B params.
LLAMA_7B = ModelProfile(params=6.74e9, layer_params=2.02e8, layers=32, hidden=4096, heads=32,
                        vocab=32000, flops_per_token=6 * 6.74e9)
H100 = PoolOption("h100", lookup("H100-SXM"), devices_per_node=8, max_gang=16)
A100 = PoolOption("a100", lookup("A100-80G"), devices_per_node=8, max_gang=8)
L4 = PoolOption("l4", lookup("L4"), devices_per_node=8, max_gang=8)


def request(**fields: object) -> PlanRequest:
    base = PlanRequest(profile=LLAMA_7B, seq_len=4096, global_batch=64, total_steps=1000,
                       precision="bf16")
    return replace(base, **fields)  # type: ignore[arg-type]


def test_7b_does_not_fit_one_h100_with_ddp_but_fits_sharded() -> None:
    report = plan_job(request(devices=8), [H100])
    ddp = [c for c in report.rejected if c.plan.strategy is Strategy.DDP]
    assert ddp and all("needs" in c.why_not and "H100-SXM has" in c.why_not for c in ddp)
    assert report.best is not None
    assert report.best.plan.strategy in (Strategy.FSDP_FULL, Strategy.FSDP_GRAD_OP, Strategy.TP)
    assert report.best.memory_bytes <= report.best.memory_limit_bytes


def test_a_job_that_fits_nowhere_gets_the_smallest_fix() -> None:
    huge = replace(LLAMA_7B, params=70e9, layer_params=8.6e8, layers=80, hidden=8192, heads=64)
    report = plan_job(request(profile=huge, devices=1), [L4])
    assert report.best is None
    fix = report.smallest_fix()
    # A concrete gang that would fit, found by planning beyond the job's one device; no
    # smaller micro-batch when it is already 1.
    assert report.larger_gang is not None and report.larger_gang.fits
    gang = report.larger_gang.plan
    assert f"{gang.world_size} devices of l4 ({gang.describe()}" in fix
    assert gang.world_size > 1 and gang.dp_shard > 1
    assert report.larger_gang.memory_bytes <= report.larger_gang.memory_limit_bytes
    assert "micro_batch 1" not in fix


def test_default_objective_prefers_earliest_completion_including_wait() -> None:
    busy_h100 = replace(H100, wait_s=30 * 24 * 3600.0)
    report = plan_job(request(), [busy_h100, A100])
    assert report.best is not None and report.best.pool == "a100"
    free = plan_job(request(), [H100, A100])
    assert free.best is not None and free.best.pool == "h100"


def test_deadline_takes_the_cheapest_plan_that_finishes_in_time() -> None:
    loose = plan_job(request(objective="deadline", deadline_s=1e9), [H100, A100])
    fastest = plan_job(request(), [H100, A100])
    assert loose.best is not None and fastest.best is not None
    assert loose.best.price_usd <= fastest.best.price_usd
    tight = plan_job(request(objective="deadline", deadline_s=60.0), [H100, A100])
    assert tight.best is None
    assert any("after the deadline" in c.why_not for c in tight.rejected)


def test_budget_takes_the_fastest_plan_within_budget() -> None:
    everything = plan_job(request(), [H100, A100])
    prices = sorted(c.price_usd for c in everything.ranked)
    budget = prices[len(prices) // 2]
    report = plan_job(request(objective="budget", budget_usd=budget), [H100, A100])
    assert report.best is not None and report.best.price_usd <= budget
    assert all(c.completion_s >= report.best.completion_s for c in report.ranked)
    assert any("over the budget" in c.why_not for c in report.rejected)


def test_recomputation_trades_memory_for_time() -> None:
    report = plan_job(request(devices=8, micro_batch=1), [H100])
    pairs = {}
    for c in report.ranked + report.rejected:
        if c.plan.strategy is Strategy.FSDP_FULL:
            pairs[c.plan.activation_checkpointing] = c
    assert pairs[True].memory_bytes < pairs[False].memory_bytes
    assert pairs[True].step_time_s > pairs[False].step_time_s


def test_every_plan_is_valid_for_its_world_size() -> None:
    report = plan_job(request(), [H100, A100, L4])
    for candidate in report.ranked + report.rejected:
        candidate.plan.validate()
        assert candidate.plan.global_batch == 64


def test_tensor_parallel_is_only_offered_where_the_trainer_can_run_it() -> None:
    from scheduler.cost.profile import model_profile

    gpt2 = model_profile({"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12,
                          "vocab_size": 50257, "n_positions": 1024}, seq_len=1024)
    llama = model_profile({"model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
                           "num_hidden_layers": 16, "num_attention_heads": 16,
                           "num_key_value_heads": 4, "intermediate_size": 5632}, seq_len=1024)
    for profile, tp_allowed in ((gpt2, set()), (llama, {2, 4})):
        report = plan_job(request(profile=profile, seq_len=1024, devices=8), [H100])
        offered = {c.plan.tp for c in report.ranked + report.rejected if c.plan.tp > 1}
        assert offered == tp_allowed  # llama: kv heads 4 rule out tp 8
    assert llama.recompute_flops_per_token is not None
    assert llama.flops_per_token < llama.recompute_flops_per_token < llama.flops_per_token * 8 / 6


LLAMA_SMALL = {"model_type": "llama", "vocab_size": 512, "hidden_size": 256,
               "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 688}


def _evaluate_on(pool: PoolOption, profile: ModelProfile, strategy: str,
                 world: int) -> Candidate:

    dp_shard = world if strategy.startswith("fsdp") else 1
    plan = Plan(Strategy(strategy), world, world // dp_shard, dp_shard, 1, 1, 4, 8 // (4 * world),
                False).validate()
    job = PlanRequest(profile=profile, seq_len=128, global_batch=8, total_steps=10)
    return evaluate(job, pool, plan)


def test_a_causal_kernel_skips_half_the_attention_an_encoder_does_not() -> None:
    from scheduler.cost.profile import model_profile

    decoder = model_profile(LLAMA_SMALL, seq_len=128)
    # 12·L·H·d_h·S per token for training; a causal kernel skips the masked half of it.
    assert decoder.masked_attention_flops_per_token == 12 * 4 * 256 * 128 / 2
    encoder = model_profile({"model_type": "bert", "vocab_size": 512, "hidden_size": 256,
                             "num_hidden_layers": 4, "num_attention_heads": 4,
                             "intermediate_size": 1024, "max_position_embeddings": 128},
                            seq_len=128)
    assert encoder.masked_attention_flops_per_token == 0.0
    cpu = PoolOption("cpu", lookup("cpu"), devices_per_node=4, max_gang=4)
    full = replace(decoder, masked_attention_flops_per_token=0.0)
    skipping = _evaluate_on(cpu, decoder, "single", 1).time_parts_s["compute"]
    counting = _evaluate_on(cpu, full, "single", 1).time_parts_s["compute"]
    assert skipping == pytest.approx(
        counting * (1 - decoder.masked_attention_flops_per_token / decoder.flops_per_token))


def test_a_cpu_pays_host_and_collective_costs_a_gpu_hides() -> None:
    from scheduler.cost.profile import model_profile

    profile = model_profile(LLAMA_SMALL, seq_len=128)
    assert profile.parameter_tensors == 4 * 9 + 3
    cpu = PoolOption("cpu", lookup("cpu"), devices_per_node=4, max_gang=4)
    on_cpu = _evaluate_on(cpu, profile, "fsdp_full", 2).time_parts_s
    on_gpu = _evaluate_on(H100, profile, "fsdp_full", 2).time_parts_s
    # CPU: host dispatch in series; every collective pays the gloo row's α, nothing overlaps.
    assert on_cpu["host"] > 0 and on_cpu["elementwise"] > 0
    alpha = lookup("cpu").collective_latency_s
    assert on_cpu["data_parallel_comm_exposed"] > (3 * 4 + 2) * alpha
    assert on_cpu["synchronisation"] == 2 * alpha
    # GPU: the same dispatch runs ahead of the kernels, so only what outlasts them shows; a
    # model this small is host-bound, a 7B one is not.
    device = sum(v for k, v in on_gpu.items() if k not in ("host", "optimizer"))
    assert on_gpu["host"] == pytest.approx(on_cpu["host"] - device)
    assert on_gpu["host"] > 0
    big = plan_job(request(devices=8), [H100]).best
    assert big is not None and big.time_parts_s["host"] == 0.0
    assert "host" not in _evaluate_on(PoolOption("v5p", lookup("v5p"), 4, 4), profile,
                                      "fsdp_full", 2).time_parts_s


LLAMA_70B_CONFIG = {"model_type": "llama", "vocab_size": 128256, "hidden_size": 8192,
                    "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
                    "intermediate_size": 28672}


def test_70b_on_64_h100s_is_planned_as_fsdp_plus_tensor_parallel() -> None:
    """Tensor parallel alone keeps whole model states on every replica (164 GiB for 70B);
    FSDP over the tensor-parallel groups shards them: the textbook 2-D layout."""
    from scheduler.cost.profile import model_profile

    profile = model_profile(LLAMA_70B_CONFIG, seq_len=4096)
    pool = replace(H100, max_gang=64)
    report = plan_job(request(profile=profile, devices=64), [pool])
    everything = report.ranked + report.rejected
    assert not [c for c in report.ranked if c.plan.strategy is Strategy.TP]
    fsdp_tp = [c for c in report.ranked if c.plan.strategy is Strategy.FSDP_TP]
    assert fsdp_tp and report.best is not None and report.best.plan.strategy is Strategy.FSDP_TP
    best = report.best
    assert best.plan.tp * best.plan.dp_shard == 64 and best.plan.tp <= 8
    # Model states are sharded over all 64 ranks: 16 bytes per parameter / 64 (12 of them
    # while backward starts, before any gradient exists).
    assert best.memory is not None
    states = best.memory.terms["model_states"]
    assert 12 * profile.params / 64 * 0.99 <= states <= 16 * profile.params / 64 * 1.01
    # Hybrid sharding (shard within groups, replicate across them) is weighed too.
    hsdp = [c for c in everything if c.plan.strategy is Strategy.HSDP]
    assert {(c.plan.dp_replicate, c.plan.dp_shard) for c in hsdp} >= {(8, 8), (2, 32)}
    for candidate in everything:
        candidate.plan.validate()


def test_hsdp_keeps_one_shard_group_of_states_and_all_reduces_across_groups() -> None:
    pool = replace(H100, max_gang=16)
    report = plan_job(request(devices=16, micro_batch=1), [pool])
    by_layout = {(c.plan.strategy, c.plan.dp_replicate, c.plan.dp_shard,
                  c.plan.activation_checkpointing): c for c in report.ranked + report.rejected}
    full = by_layout[(Strategy.FSDP_FULL, 1, 16, False)]
    hybrid = by_layout[(Strategy.HSDP, 2, 8, False)]
    assert full.memory is not None and hybrid.memory is not None
    assert hybrid.memory.terms["model_states"] == pytest.approx(
        2 * full.memory.terms["model_states"])
    assert hybrid.timing is not None and full.timing is not None
    assert hybrid.timing.parts_s["data_parallel_comm_exposed"] > 0


def test_pinned_choices_are_kept_and_a_pinned_plan_that_cannot_fit_is_refused() -> None:
    from scheduler.cost.profile import model_profile
    from scheduler.domain.plan import PlanPins

    pins = PlanPins(strategy=Strategy.FSDP_TP, tp=4, activation_checkpointing=True)
    report = plan_job(request(devices=16, pins=pins), [H100])
    assert report.ranked and all(pins.admits(c.plan) for c in report.ranked + report.rejected)
    assert {c.plan.dp_shard for c in report.ranked} == {4}
    # 70B as plain tensor parallel over one node keeps whole model states per replica.
    profile = model_profile(LLAMA_70B_CONFIG, seq_len=4096)
    tp_only = plan_job(request(profile=profile, devices=8,
                               pins=PlanPins(strategy=Strategy.TP, tp=8)), [H100])
    assert tp_only.best is None and tp_only.rejected
    fix = tp_only.smallest_fix()
    assert "needs" in fix and "GiB per device" in fix and "strategy=tp tp=8" in fix
    # A pin the architecture rules out leaves nothing to weigh, and says so.
    gpt2 = replace(LLAMA_7B, tensor_parallel=False)
    nothing = plan_job(request(profile=gpt2, devices=8, pins=PlanPins(tp=2)), [H100])
    assert not nothing.ranked and not nothing.rejected
    assert "no plan keeps the parallelism section's pins (tp=2)" in nothing.smallest_fix()
