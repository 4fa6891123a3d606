"""Finetune job set-up that fails early: plans LoRA cannot run, missing tokenizers, bad modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from scheduler.domain.errors import PlanError, SpecError
from scheduler.domain.finetune_spec import FinetuneSpec, LoraSpec
from scheduler.domain.plan import Strategy
from scheduler.domain.spec import parse_spec
from tests.builders import spec_dict
from workers.core.lora import apply_lora, merge_lora, trainable_fraction
from workers.core.parallelize import ParallelDims
from workers.core.tokenizer import model_tokenizer_folder
from workers.jobs.finetune import _check_plan_for_method

# peft 0.21 still asks transformers 5 the old name of the activation-checkpointing switch.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

LORA = FinetuneSpec(task="causal_lm", method="lora")


def _tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    return LlamaForCausalLM(config)


@pytest.mark.parametrize(("strategy", "dp_shard", "tp"), [
    (Strategy.FSDP_FULL, 2, 1), (Strategy.FSDP_GRAD_OP, 2, 1), (Strategy.TP, 1, 2)])
def test_lora_refuses_plans_that_shard_the_model(strategy: Strategy, dp_shard: int,
                                                 tp: int) -> None:
    dims = ParallelDims(strategy=strategy, world_size=2, dp_replicate=1, dp_shard=dp_shard,
                        tp=tp, pp=1)
    with pytest.raises(PlanError, match=f"strategy {strategy.value} shards the model.*ddp"):
        _check_plan_for_method(LORA, dims)


def test_lora_runs_replicated_and_full_finetuning_takes_any_plan() -> None:
    ddp = ParallelDims(strategy=Strategy.DDP, world_size=2, dp_replicate=2, dp_shard=1, tp=1,
                       pp=1)
    _check_plan_for_method(LORA, ddp)
    fsdp = ParallelDims(strategy=Strategy.FSDP_FULL, world_size=2, dp_replicate=1, dp_shard=2,
                        tp=1, pp=1)
    _check_plan_for_method(FinetuneSpec(task="causal_lm"), fsdp)


def test_an_export_without_tokenizer_files_asks_for_the_byte_tokenizer(tmp_path: Path) -> None:
    spec = parse_spec(spec_dict(kind="finetune", model={"path": str(tmp_path)}, tokenizer=None,
                                finetune={"task": "causal_lm"}))
    with pytest.raises(SpecError, match=r"holds no tokenizer.*tokenizer: \{kind: byte\}"):
        model_tokenizer_folder(spec)
    byte = parse_spec(spec_dict(kind="finetune", model={"path": str(tmp_path)},
                                tokenizer={"kind": "byte"}, finetune={"task": "causal_lm"}))
    assert model_tokenizer_folder(byte) is None


def test_lora_freezes_the_base_and_names_the_layers_when_the_targets_are_wrong() -> None:
    model = apply_lora(_tiny_llama(), LoraSpec(r=2, target_modules=["q_proj", "v_proj"]),
                       "causal_lm")
    trainable, total = trainable_fraction(model)
    # q_proj and v_proj of one layer: A is r × 32 and B is out × r (q: 32 wide, v: 32 wide).
    assert trainable == 2 * (2 * 32 + 32 * 2)
    assert all(("lora_" in name) == parameter.requires_grad
               for name, parameter in model.named_parameters())
    assert total > 10 * trainable
    with pytest.raises(SpecError, match=r"Linear layers of this llama model: .*q_proj"):
        apply_lora(_tiny_llama(), LoraSpec(target_modules=["attention"]), "causal_lm")


def test_merging_gives_a_plain_model_with_the_same_outputs() -> None:
    model = apply_lora(_tiny_llama(), LoraSpec(r=2), "causal_lm")
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapters do something
            torch.nn.init.normal_(parameter)
    ids = torch.arange(8)[None]
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        merged = merge_lora(model)
        assert type(merged) is LlamaForCausalLM
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-5)


def test_under_bf16_the_frozen_base_is_kept_in_bf16_and_the_adapters_train_in_fp32() -> None:
    """The trainer loaded the base in fp32 and autocast added bf16 copies: an 8B LoRA job
    needed ~60 GiB where the cost model counted 2 bytes per frozen parameter."""
    from workers.core.lora import freeze_base

    model = apply_lora(_tiny_llama(), LoraSpec(r=2), "causal_lm")
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert freeze_base(model, None) == 0
    assert freeze_base(model, torch.bfloat16) == frozen
    for parameter in model.parameters():
        assert parameter.dtype == (torch.float32 if parameter.requires_grad else torch.bfloat16)
    ids = torch.randint(0, model.config.vocab_size, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
