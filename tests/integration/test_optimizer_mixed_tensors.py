"""Tensor parallel without FSDP leaves plain tensors beside DTensors: the optimizer must step
them without a foreach kernel, which refuses the mix (on GPUs torch picks foreach by default)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROGRAM = """
import torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.testing._internal.distributed.fake_pg import FakeStore
from transformers import LlamaConfig, LlamaForCausalLM
from scheduler.domain.spec import OptimizerSpec
from workers.core.optim import build_optimizer
from workers.core.tensor_parallel import apply_tp

dist.init_process_group("fake", rank=0, world_size=2, store=FakeStore())
model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     num_key_value_heads=2))
apply_tp(model, init_device_mesh("cpu", (2,)))
ids = torch.randint(0, 64, (2, 8))
model(input_ids=ids, labels=ids).loss.backward()
forced = torch.optim.AdamW(model.parameters(), foreach=True)
try:
    forced.step()
    print("FOREACH-ACCEPTED")
except RuntimeError as err:
    print("FOREACH-REFUSED", "mixed torch.Tensor and DTensor" in str(err))
optimizer = build_optimizer(model, OptimizerSpec())
print("FOREACH", optimizer.defaults["foreach"])
optimizer.step()
print("STEPPED")
"""


def test_tensor_parallel_alone_steps_without_a_foreach_kernel() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    # What the guard prevents: foreach over the mix fails.
    assert "FOREACH-REFUSED True" in done.stdout
    assert "FOREACH False" in done.stdout and "STEPPED" in done.stdout
