"""Closed-form memory vs the exact trace of the trainer's sharded set-ups: FSDP (full and
shard-grad-op), HSDP, tensor parallel and FSDP + TP, one rank of a gang traced.

Each configuration runs the trainer's own ``workers.core.parallelize.parallelize`` (the same
device mesh, ``fully_shard`` units, mixed-precision policy and tensor-parallel plan the ranks
apply) on a model whose parameters are fake tensors, in a process group of torch's ``fake``
backend (collectives that move no data), then two training steps under ``FakeTensorMode`` with
torch's ``FSDPMemTracker`` (``MemTracker`` for tensor parallel without FSDP) counting one
rank's storages. Like ``scheduler.cost.exact``, two depths (3 and 4 blocks) are traced and
each phase of the step (forward + backward, optimizer) extrapolated to the model's depth on its
own.

Set-up as the ranks run it: AdamW as ``workers.core.optim.build_optimizer`` builds it (on this
CPU torch picks its per-tensor implementation: no foreach scratch), bf16 runs with the compute
dtype a GPU rank gets (FSDP gathers in bf16 and reduces in fp32; autocast), fp32 as a CPU rank.

    .venv/bin/python bench/cost_memory_sharded.py            # about 2 minutes
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import sys
import warnings
from typing import Any

from cost_memory import LLAMA3_SHAPES  # bench/, beside this file

from scheduler.cost.flops import TransformerShape
from scheduler.cost.memory import StepShape, estimate_peak
from scheduler.cost.planner import sharding
from scheduler.domain.plan import Plan, Strategy

SHAPES = [(name, config) for name, config in LLAMA3_SHAPES if name in ("8B", "70B")]
"""Llama 3 8B and 70B layer shapes, as in bench/cost_memory.py."""
LAYOUTS: list[tuple[str, int, int, int]] = [
    # strategy, dp_replicate, dp_shard, tp — gangs of 8 and 16
    ("fsdp_full", 1, 8, 1),
    ("fsdp_grad_op", 1, 8, 1),
    ("hsdp", 2, 8, 1),
    ("tp", 1, 1, 8),
    ("tp", 2, 1, 8),
    ("fsdp_tp", 1, 2, 8),
]
BATCHES = [(2048, 1), (4096, 2)]


def _compute_dtype(precision: str) -> Any:
    import torch

    return torch.bfloat16 if precision == "bf16" else None


def _trace(config: dict[str, Any], layers: int, plan: Plan,
           seq_len: int) -> dict[str, dict[str, float]]:
    """Per-phase peaks by kind of one rank of ``plan``'s gang, ``layers`` blocks deep."""
    import torch
    import torch.distributed as dist
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.testing._internal.distributed.fake_pg import FakeStore
    from transformers import AutoConfig, AutoModelForCausalLM

    import workers.core.parallelize as parallelize_module
    from scheduler.cost.exact import _fake_parameters
    from scheduler.domain.spec import OptimizerSpec
    from workers.core.distributed import DistContext
    from workers.core.optim import build_optimizer

    if dist.is_initialized():
        dist.destroy_process_group()
    dist.init_process_group("fake", rank=0, world_size=plan.world_size, store=FakeStore())
    ctx = DistContext(0, plan.world_size, 0, plan.world_size, torch.device("cpu"), "gloo")
    dims = parallelize_module.check_plan(plan, plan.world_size)
    # The trainer builds its models with use_cache=False, and on real tensors its attention is
    # causal SDPA over the KV heads. On fake tensors transformers cannot check that there is no
    # padding, so without a cache it builds an explicit mask, keeps a copy per block and repeats
    # the KV heads (8 bytes per token per hidden unit more at 8B shapes, which no real step
    # stores); with the default cache the trace takes the real step's path (the single-device
    # trace, built the same way, equals real steps' tensor peaks to the byte:
    # bench/cost_memory_measured.py).
    model_config = AutoConfig.for_model(
        "llama", **{**config, "num_hidden_layers": layers, "max_position_embeddings": seq_len})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        _fake_parameters(model)
    # The parameters already live on the traced rank's device (fake ones cannot be moved), and
    # the rank computes in the dtype a GPU gives ``precision`` (this CPU would give fp32).
    model.to = lambda *args, **kwargs: model  # type: ignore[method-assign]
    original = parallelize_module.compute_dtype
    parallelize_module.compute_dtype = lambda precision, device: _compute_dtype(precision)
    try:
        model = parallelize_module.parallelize(model, plan, dims, ctx)
    finally:
        parallelize_module.compute_dtype = original
    dtype = _compute_dtype(plan.precision)
    autocast = (torch.autocast("cpu", dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    with mode:
        optimizer = build_optimizer(model, OptimizerSpec())
        ids = torch.randint(0, config["vocab_size"], (plan.micro_batch, seq_len))
        if dims.uses_fsdp:
            tracker = FSDPMemTracker(model, optimizer)
            tracker.track_inputs((ids,))
        else:
            tracker = MemTracker()
            tracker.track_external(model, optimizer, ids)

        def forward_backward() -> None:
            with autocast:
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()

        def optimizer_step() -> None:
            optimizer.step()
            optimizer.zero_grad()

        with tracker:
            forward_backward()
            optimizer_step()
        phases = {}
        for name, phase in (("forward_backward", forward_backward),
                            ("optimizer", optimizer_step)):
            tracker.reset_mod_stats()
            with tracker:
                phase()
            (per_device,) = tracker.get_tracker_snapshot("peak").values()
            phases[name] = {str(key).rsplit(".", 1)[-1]: float(value)
                            for key, value in per_device.items()}
    return phases


def traced_peak(config: dict[str, Any], plan: Plan, seq_len: int) -> tuple[float, dict]:
    layers = int(config["num_hidden_layers"])
    # Three and four blocks: below three, FSDP's prefetching and the root's gathered weights
    # and gradients peak at another moment of the step than in a deep model (measured: 70B
    # FSDP, the step's peak grows by 3.2, 2.0, 2.0 GiB from 2 to 5 blocks).
    one, two = (_trace(config, depth, plan, seq_len) for depth in (3, 4))
    peaks = []
    for phase in one:
        kinds = set(one[phase]) | set(two[phase])
        whole = {kind: one[phase].get(kind, 0.0) + (layers - 3)
                 * (two[phase].get(kind, 0.0) - one[phase].get(kind, 0.0)) for kind in kinds}
        peaks.append((whole.pop("Total"), whole))
    return max(peaks, key=lambda peak: peak[0])


def closed_form(config: dict[str, Any], plan: Plan, seq_len: int) -> tuple[float, dict]:
    from transformers import AutoConfig

    full = AutoConfig.for_model("llama", **config).to_dict()
    step = StepShape.of_model(TransformerShape.from_config(full), seq_len, plan.micro_batch)
    estimate = estimate_peak(step, sharding(plan), plan.dp_shard, plan.tp,
                             "bf16_mixed" if plan.precision == "bf16" else "fp32",
                             "full" if plan.activation_checkpointing else "none",
                             grads_held=plan.grad_accum > 1 or plan.strategy is Strategy.DDP,
                             optimizer_foreach=False, dp_replicate=plan.dp_replicate)
    return estimate.total_bytes, estimate.terms


def main() -> None:
    import transformers

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    only = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    print(f"{'shape':>5} {'plan':<44} {'prec':>4} {'seq':>5} {'closed GiB':>10} "
          f"{'exact GiB':>10} {'error':>7}")
    errors = []
    for (name, config), (strategy, replicate, shard, tp), precision, recompute, (seq, mb) in \
            itertools.product(SHAPES, LAYOUTS, ("bf16", "fp32"), (False, True), BATCHES):
        world = replicate * shard * tp
        plan = Plan(Strategy(strategy), world, replicate, shard, tp, 1, mb, 1, recompute,
                    precision).validate()
        if only and strategy not in only:
            continue
        exact, kinds = traced_peak(config, plan, seq)
        closed, terms = closed_form(config, plan, seq)
        error = closed / exact - 1
        errors.append(abs(error))
        print(f"{name:>5} {plan.describe():<44} {precision:>4} {seq:>5} "
              f"{closed / 2**30:>10.2f} {exact / 2**30:>10.2f} {error:>+7.1%}", flush=True)
        if "-v" in sys.argv or abs(error) > 0.05:
            print("       exact ", {k: round(v / 2**30, 2) for k, v in kinds.items() if v})
            print("       closed", {k: round(v / 2**30, 2) for k, v in terms.items() if v})
    print(f"configurations {len(errors)}: mean |error| {statistics.mean(errors):.1%}, "
          f"max |error| {max(errors):.1%}")


if __name__ == "__main__":
    main()
