"""Measurements of a training step: phase times, throughput, MFU and the process's peak memory."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler.cost.flops import TransformerShape, training_flops_per_token
from scheduler.domain.errors import SpecError


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes (getrusage(2) on each).
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass
class StepTimer:
    """Wall time of one step and of its named phases, in seconds."""

    phase_times_s: dict[str, float] = field(default_factory=dict)
    _start_s: float = field(default_factory=time.perf_counter)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the time spent inside the ``with`` block to phase ``name``."""
        start_s = time.perf_counter()
        try:
            yield
        finally:
            elapsed_s = time.perf_counter() - start_s
            self.phase_times_s[name] = self.phase_times_s.get(name, 0.0) + elapsed_s

    def elapsed_s(self) -> float:
        """Seconds since the step began."""
        return time.perf_counter() - self._start_s


@dataclass(frozen=True)
class StepMetrics:
    """What one optimizer step achieved and cost; ``tokens`` counts the whole gang."""

    step: int
    loss: float
    lr: float
    grad_norm: float | None
    """Gradient norm before clipping; None when clipping is off (it is not computed then)."""
    tokens: int
    step_time_s: float
    phase_times_s: dict[str, float]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.step_time_s if self.step_time_s > 0 else 0.0

    def as_event(self) -> dict[str, float | int | None]:
        """Fields of a ``step`` progress event."""
        return {
            "step": self.step,
            "loss": self.loss,
            "lr": self.lr,
            "grad_norm": self.grad_norm,
            "tokens_per_s": round(self.tokens_per_s, 1),
            "step_time_s": round(self.step_time_s, 6),
            **{f"{name}_s": round(value, 6) for name, value in self.phase_times_s.items()},
        }


def model_flops_per_token(model_config: Mapping[str, Any], seq_len: int) -> int | None:
    """Training FLOPs per token by the cost model's formula, or None for an unknown family.

    Model FLOPs (no recomputation), as MFU is defined: the same work counts the same whether or
    not a plan recomputes activations.
    """
    try:
        shape = TransformerShape.from_config(model_config)
    except SpecError:
        return None
    return training_flops_per_token(shape, seq_len)


@dataclass(frozen=True)
class FlopsUtilization:
    """Model FLOPs utilisation (Chowdhery et al. 2022, PaLM, appendix B) of one gang.

    ``mfu = flops_per_token · tokens_per_s / (devices · peak_flops_per_device_per_s)`` where
    ``tokens_per_s`` is the whole gang's throughput.
    """

    flops_per_token: int
    peak_flops_per_device_per_s: float
    devices: int

    def event_fields(self, tokens_per_s: float) -> dict[str, float]:
        """``mfu`` (a fraction) and ``peak_flops`` (FLOP/s of one device) for a step event."""
        achieved_flops_per_s = self.flops_per_token * tokens_per_s
        peak_flops_per_s = self.peak_flops_per_device_per_s * self.devices
        return {"mfu": round(achieved_flops_per_s / peak_flops_per_s, 6),
                "peak_flops": round(self.peak_flops_per_device_per_s)}
