"""Measurements of a training step: phase times, throughput and the process's peak memory."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


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
