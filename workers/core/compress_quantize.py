"""Post-training quantization of a model's linear layers on the CPU: dynamic int8, weight-only int4.

What torch 2.13's CPU build offers, and what this module uses:

``int8``  :func:`torch.ao.quantization.quantize_dynamic` (per output channel, symmetric) swaps
          every ``nn.Linear`` for a ``DynamicQuantizedLinear``: int8 weights, activations
          quantized per batch, int8 GEMM by fbgemm / x86. ``torch.ao.quantization`` is deprecated
          in favour of torchao, but it is still in torch 2.13 and is core torch's only int8 path
          with a fast CPU kernel. Measured on a 2-core AVX-512 AMD EPYC, one 2048×2048 layer,
          1 thread, batch of 64 rows: fp32 8.6 ms, dynamic int8 1.5 ms.
``int4``  weight-only, asymmetric, one scale and zero per ``group_size`` input columns, in
          torchao's tinygemm convention ``w ≈ (q − 8)·scale + zero``, run by the aten kernel
          ``_weight_int4pack_mm_for_cpu`` — the kernel torchao's CPU int4 layout calls too.
          torchao itself is not a dependency: 0.18.0 (the newest on the package index) moved its
          CPU int4 tensor to ``prototype`` and its compiled extensions do not load on torch 2.13
          CPU. The kernel is fast only with bf16 activations, so the layer computes in bf16;
          measured as above, 1 thread: 1 row fp32 1.06 ms vs int4 0.23 ms, 8 rows 2.6 vs
          0.8 ms, but 64 rows 8.6 vs 6.5 ms and slower still for more rows: int4 weight-only
          suits token-by-token decoding, not scoring long batches. The kernel needs the output
          width divisible by 16 (rows are padded up here) and the input width by
          ``group_size``; a layer that is not stays fp32 and the caller reports it.

Quantized weights are saved as plain tensors (safetensors cannot hold torch's quantized dtypes):
int8 as ``qweight`` int8 ``[out, in]`` and ``scales`` fp32 ``[out]``; int4 as ``qweight`` uint8
``[out, in/2]`` (two 4-bit values per byte, the even column in the low nibble), ``scales`` and
``zeros`` bf16 ``[out, in/group_size]``. :func:`quantized_state_dict` writes them and
:func:`load_quantized_state` rebuilds the modules from them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from scheduler.domain.errors import SpecError

INT4_ROWS_MULTIPLE = 16
"""``_convert_weight_to_int4pack_for_cpu`` refuses an output width N not divisible by 16."""

INT4_MIDPOINT = 8
"""tinygemm's zero offset: 4-bit codes 0…15 stand for (q − 8)·scale + zero."""


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    # torch.ao.quantization and its quantized dtypes warn on every call that they are
    # deprecated; the module docstring says why they are still used, once is enough.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, message=".*deprecated.*")
        yield


@dataclass
class QuantizeResult:
    """Which linear layers were quantized, and why the others were left in floating point."""

    dtype: str
    quantized: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, module) for name, module in model.named_modules()
            if type(module) is nn.Linear]


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def quantize_int8_dynamic(model: nn.Module) -> QuantizeResult:
    """Swap every ``nn.Linear`` of ``model`` for dynamic int8, per output channel, in place."""
    names = [name for name, _ in _linear_layers(model)]
    with _quiet_deprecations():
        torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
            dtype=torch.qint8, inplace=True)
    return QuantizeResult("int8", quantized=names)


def _int8_module(qweight: torch.Tensor, scales: torch.Tensor,
                 bias: torch.Tensor | None) -> DynamicQuantizedLinear:
    """A ``DynamicQuantizedLinear`` holding saved int8 codes and per-channel scales."""
    out_features, in_features = qweight.shape
    with _quiet_deprecations():
        module = DynamicQuantizedLinear(in_features, out_features, bias_=bias is not None,
                                        dtype=torch.qint8)
        weight = torch._make_per_channel_quantized_tensor(
            qweight, scales.double(), torch.zeros(out_features, dtype=torch.long), 0)
        module.set_weight_bias(weight, bias)
    return module


class Int4WeightOnlyLinear(nn.Module):
    """A linear layer with 4-bit weights in groups, computed by torch's CPU int4 kernel."""

    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    bias: torch.Tensor | None
    _packed: torch.Tensor
    _scale_and_zero: torch.Tensor

    def __init__(self, in_features: int, out_features: int, group_size: int,
                 bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = in_features // group_size
        self.register_buffer("qweight", torch.zeros(out_features, in_features // 2,
                                                    dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=torch.bfloat16))
        self.register_buffer("zeros", torch.zeros(out_features, groups, dtype=torch.bfloat16))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        # The kernel's own layouts, rebuilt from the saved tensors by pack(); not saved.
        self.register_buffer("_packed", torch.zeros(0, dtype=torch.uint8), persistent=False)
        self.register_buffer("_scale_and_zero", torch.zeros(0), persistent=False)

    @staticmethod
    def eligible(linear: nn.Linear, group_size: int) -> str | None:
        """Why the kernel cannot take ``linear``, or None when it can."""
        if linear.in_features % group_size:
            return (f"input width {linear.in_features} is not a multiple of group_size "
                    f"{group_size}")
        return None

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int) -> Int4WeightOnlyLinear:
        """Quantize ``linear``'s weight: per group, min → code 0 and max → code 15."""
        weight = linear.weight.detach().float()
        out_features, in_features = weight.shape
        grouped = weight.reshape(out_features, in_features // group_size, group_size)
        low, high = grouped.amin(dim=-1), grouped.amax(dim=-1)
        scales = ((high - low) / 15).clamp(min=1e-6)
        codes = torch.clamp(torch.round((grouped - low[..., None]) / scales[..., None]), 0, 15)
        module = cls(in_features, out_features, group_size, linear.bias is not None)
        codes = codes.to(torch.uint8).reshape(out_features, in_features)
        module.qweight.copy_(codes[:, 0::2] | (codes[:, 1::2] << 4))
        module.scales.copy_(scales)
        module.zeros.copy_(low + INT4_MIDPOINT * scales)
        if module.bias is not None and linear.bias is not None:
            module.bias.copy_(linear.bias.detach())
        return module.pack()

    def codes(self) -> torch.Tensor:
        """The 4-bit codes as int32 ``[out, in]``."""
        low, high = self.qweight & 0x0F, self.qweight >> 4
        return torch.stack([low, high], dim=-1).reshape(self.out_features, -1).to(torch.int32)

    def dequantized_weight(self) -> torch.Tensor:
        """The fp32 weight the codes stand for: ``(q − 8)·scale + zero``."""
        grouped = self.codes().reshape(self.out_features, -1, self.group_size).float()
        weight = ((grouped - INT4_MIDPOINT) * self.scales.float()[..., None]
                  + self.zeros.float()[..., None])
        return weight.reshape(self.out_features, self.in_features)

    def pack(self) -> Int4WeightOnlyLinear:
        """Build the kernel's layouts from the saved tensors; call after loading them."""
        padding = -self.out_features % INT4_ROWS_MULTIPLE
        codes = F.pad(self.codes(), (0, 0, 0, padding))
        # innerKTiles is ignored on the CPU (torchao passes 1 too).
        self._packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        scales = F.pad(self.scales, (0, 0, 0, padding), value=1.0)
        zeros = F.pad(self.zeros, (0, 0, 0, padding))
        # The kernel wants [groups, out, 2]: scale and zero of each group side by side.
        self._scale_and_zero = torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous()
        return self

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        rows = inputs.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self._packed, self.group_size,
                                                         self._scale_and_zero)
        out = out[:, : self.out_features].to(inputs.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*inputs.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"group_size={self.group_size}")


def quantize_int4_weight_only(model: nn.Module, group_size: int) -> QuantizeResult:
    """Swap every eligible ``nn.Linear`` for :class:`Int4WeightOnlyLinear`, in place."""
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        raise SpecError(f"compress.dtype int4: torch {torch.__version__} lacks the CPU int4 "
                        f"kernel aten._weight_int4pack_mm_for_cpu; use dtype int8 or a newer "
                        f"torch (2.13 has it)")
    result = QuantizeResult("int4")
    for name, linear in _linear_layers(model):
        reason = Int4WeightOnlyLinear.eligible(linear, group_size)
        if reason is not None:
            result.skipped[name] = reason
            continue
        _set_submodule(model, name, Int4WeightOnlyLinear.from_linear(linear, group_size))
        result.quantized.append(name)
    return result


def quantized_linear_weight(module: nn.Module) -> torch.Tensor | None:
    """The fp32 weight a quantized linear layer stands for; None for any other module."""
    if isinstance(module, Int4WeightOnlyLinear):
        return module.dequantized_weight()
    if isinstance(module, DynamicQuantizedLinear):
        with _quiet_deprecations():
            return module.weight().dequantize()
    return None


def quantized_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of ``model`` as a plain tensor, quantized layers in the saved layout.

    A tensor shared under two names (tied input and output embeddings) is kept once, under its
    first name; loading into a freshly built model ties it again.
    """
    state: dict[str, torch.Tensor] = {}
    dynamic = {name: module for name, module in model.named_modules()
               if isinstance(module, DynamicQuantizedLinear)}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if any(name.startswith(f"{prefix}.") for prefix in dynamic):
            continue
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        state[name] = tensor
    with _quiet_deprecations():
        for name, module in dynamic.items():
            weight = module.weight()
            state[f"{name}.qweight"] = weight.int_repr()
            state[f"{name}.scales"] = weight.q_per_channel_scales().float()
            if module.bias() is not None:
                state[f"{name}.bias"] = module.bias().detach()
    return state


def _tied_names(model: nn.Module) -> set[str]:
    """State-dict names whose tensor another, earlier name already holds."""
    seen: set[int] = set()
    tied = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            tied.add(name)
        seen.add(tensor.data_ptr())
    return tied


def load_quantized_state(model: nn.Module, dtype: str, layers: list[str], group_size: int,
                         state: dict[str, torch.Tensor]) -> nn.Module:
    """Load ``state`` into a freshly built float ``model``, ``layers`` back in quantized form."""
    quantized_keys = {key for key in state
                      if any(key.startswith(f"{layer}.") for layer in layers)}
    # The float tensors first, while every layer is still an nn.Linear: torch's quantized
    # modules insist on their own state-dict keys even in a non-strict load.
    loaded = model.load_state_dict({key: value for key, value in state.items()
                                    if key not in quantized_keys}, strict=False)
    tied = _tied_names(model)
    missing = [key for key in loaded.missing_keys
               if key not in tied and not any(key.startswith(f"{layer}.") for layer in layers)]
    if missing or loaded.unexpected_keys:
        raise ValueError(f"saved quantized weights do not match the model: missing {missing}, "
                         f"unexpected {loaded.unexpected_keys}")
    for name in layers:
        linear = model.get_submodule(name)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"{name} is {type(linear).__name__}, not the linear layer the "
                             f"quantized weights were saved from")
        bias = state.get(f"{name}.bias")
        module: nn.Module
        if dtype == "int8":
            module = _int8_module(state[f"{name}.qweight"], state[f"{name}.scales"], bias)
        else:
            module = Int4WeightOnlyLinear(linear.in_features, linear.out_features, group_size,
                                          bias is not None)
            module.qweight.copy_(state[f"{name}.qweight"])
            module.scales.copy_(state[f"{name}.scales"])
            module.zeros.copy_(state[f"{name}.zeros"])
            if module.bias is not None and bias is not None:
                module.bias.copy_(bias)
            module.pack()
        _set_submodule(model, name, module)
    return model
