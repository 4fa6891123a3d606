"""How a replay is configured: the policy and its settings, the truth, retries and checks."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from scheduler.policies.config import PolicyConfig
from scheduler.policies.fairshare import FairShareConfig
from scheduler.policies.las import LasConfig
from scheduler.policies.quota import Quotas
from scheduler.sim.groundtruth import GroundTruth
from scheduler.sim.policy import Policy

if TYPE_CHECKING:
    from scheduler.sim.engine import Simulator


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How to replay: the policy and its settings, the truth about run times, checking."""

    policy: str | Policy = "priority"
    truth: GroundTruth = field(default_factory=GroundTruth)
    max_attempts: int = 3
    """Attempts per job, as ``resources.max_attempts``: retry while failures < this."""
    validate: bool = False
    """Check every invariant after every step (slow on big clusters; tests and --validate)."""
    single_node_gangs: bool = False
    moldable: bool | None = None
    """Override ``PolicyConfig.moldable`` for every policy; None keeps each policy's own."""
    quotas: Quotas = field(default_factory=Quotas)
    """Quota rows, applied by the policies that use quotas (``corral``)."""
    tenant_weights: Mapping[str, float] = field(default_factory=dict)
    """Fair-share weights (the Tenant table's weight); 1 when unlisted."""
    fair_share: FairShareConfig = field(default_factory=FairShareConfig)
    las: LasConfig = field(default_factory=LasConfig)
    checkpoint_interval_s: float = 1800.0
    """Jobs checkpoint this often (from the start of each attempt); ``math.inf``: never."""
    stop_delay_s: float = 60.0
    """Seconds a preempted job runs on after it is told to stop (its grace period)."""
    checks: tuple[Callable[[Simulator], None], ...] = ()
    """More invariants, run with ``validate`` after the built-in ones."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not self.checkpoint_interval_s > 0:
            raise ValueError(
                f"checkpoint_interval_s must be > 0 (math.inf: never), got "
                f"{self.checkpoint_interval_s}"
            )
        if not 0 <= self.stop_delay_s < math.inf:
            raise ValueError(f"stop_delay_s must be >= 0 and finite, got {self.stop_delay_s}")


def policy_config(policy: Policy, config: SimConfig) -> PolicyConfig:
    """The cycle's configuration for ``policy`` under ``config`` (quotas, knobs, moldable)."""
    base = policy.config
    return replace(
        base,
        quotas=config.quotas if policy.uses_quotas else Quotas(),
        fair_share=config.fair_share,
        las=config.las,
        moldable=base.moldable if config.moldable is None else config.moldable,
    )
