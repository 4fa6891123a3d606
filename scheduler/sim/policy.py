"""Policies the simulator compares: configurations of the real cycle, plus optional hooks.

A policy names the :class:`~scheduler.policies.config.PolicyConfig` the engine passes to
``scheduler.cycle.run_cycle`` — the simulator never re-implements ordering, placement, quota,
preemption or backfill — and may shape what the cycle receives:

- :meth:`Policy.prepare` rewrites a job's view once, when it becomes pending;
- :meth:`Policy.order` may return a complete order every cycle; the engine then encodes it as
  ``priority = 0`` and ``submitted_seq = rank`` and runs the cycle's ``priority`` ordering, whose
  ``(-priority, submitted_seq)`` sort reproduces it exactly. ``None`` keeps the cycle's order.
  This is how an ordering the cycle lacks plugs in (:func:`ordering`, :class:`GavelPolicy`);
- :meth:`Policy.choose` picks, every cycle, the accelerator type of a job that may use several
  (a view holds one type); ``None`` lets the engine take the type with the most free devices.

The named policies (:data:`POLICIES`, ``corral sim --policy``):

==========  =====================  ==========  ========  ========  =======================
name        cycle ordering         preemption  backfill  moldable  quotas (SimConfig)
==========  =====================  ==========  ========  ========  =======================
fifo        fifo                   off         off       off       ignored
priority    priority               off         off       off       ignored
las         las (Tiresias)         off         off       off       ignored
drf         fair_share             off         on        on        ignored
gavel       Gavel-style, below     off         off       off       ignored
corral      fair_share (default)   on          on        on        applied
==========  =====================  ==========  ========  ========  =======================

``corral`` is ``PolicyConfig()``, the service's defaults. ``SimConfig.moldable`` overrides the
moldable column for every policy when set. With backfill off a blocked gang reserves its pools:
strict head-of-line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from scheduler.domain.resources import PendingJobView
from scheduler.policies.config import Ordering, PolicyConfig
from scheduler.policies.quota import Quotas, TenantQuota
from scheduler.sim.workload import TraceJob


class RunningAttempt(Protocol):
    """What a policy may read about one running attempt."""

    @property
    def job_id(self) -> int: ...

    @property
    def accelerator(self) -> str: ...

    @property
    def devices(self) -> tuple[tuple[int, int], ...]: ...


class PolicyContext(Protocol):
    """What a per-cycle hook may read about the simulated cluster (read-only)."""

    @property
    def now_s(self) -> float: ...

    @property
    def total_devices(self) -> int: ...

    def attained_device_s(self, job_id: int) -> float:
        """Device-seconds the job has held so far, over all its attempts (LAS)."""
        ...

    def tenant_devices_in_use(self) -> Mapping[str, int]:
        """Devices each tenant holds right now (DRF over one resource type)."""
        ...

    def running(self) -> Sequence[RunningAttempt]:
        """Every running attempt."""
        ...

    def job(self, job_id: int) -> TraceJob:
        """The trace job behind a view or an attempt."""
        ...

    def free_devices(self, accelerator: str) -> int:
        """Devices of ``accelerator`` free now, over all its pools."""
        ...

    def tenant_weight(self, tenant: str) -> float:
        """The tenant's weight (1 unless ``SimConfig.tenant_weights`` says otherwise)."""
        ...


def cycle_config(ordering: Ordering, moldable: bool = False) -> PolicyConfig:
    """The cycle's configuration of a plain ordering: ``ordering``, and no quota, preemption
    or backfill (strict head-of-line: a blocked gang reserves its pools)."""
    return PolicyConfig(ordering=ordering, preemption=False, backfill=False, moldable=moldable)


class Policy(Protocol):
    """A simulated policy: the cycle's configuration and optional hooks."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> PolicyConfig:
        """The cycle's configuration (its quotas are replaced by ``SimConfig.quotas`` when
        :attr:`uses_quotas`, else by none)."""
        ...

    @property
    def uses_quotas(self) -> bool: ...

    def prepare(self, view: PendingJobView, job: TraceJob) -> PendingJobView:
        """The view the cycle sees for ``job`` while it is pending (called once per pending
        spell, so it must not depend on time)."""
        ...

    def order(
        self, pending: Sequence[PendingJobView], context: PolicyContext
    ) -> Sequence[PendingJobView] | None:
        """Every pending view, first to consider first; None keeps the cycle's own order."""
        ...

    def choose(self, job: TraceJob, options: Sequence[str], context: PolicyContext) -> str | None:
        """The accelerator (one of ``options``) a job allowing several runs on this cycle;
        None: the engine's default, the type with the most free devices."""
        ...

    @property
    def narrows_any(self) -> bool:
        """Whether jobs allowing any type are narrowed too (by :meth:`choose`); otherwise
        their view names no type and the cycle tries the pools in order."""
        ...


class _Hooks:
    """Default hooks: the view as built, the cycle's order, the engine's type choice."""

    __slots__ = ()
    narrows_any = False

    def prepare(self, view: PendingJobView, job: TraceJob) -> PendingJobView:
        return view

    def order(
        self, pending: Sequence[PendingJobView], context: PolicyContext
    ) -> Sequence[PendingJobView] | None:
        return None

    def choose(self, job: TraceJob, options: Sequence[str], context: PolicyContext) -> str | None:
        return None


@dataclass(frozen=True, slots=True)
class CyclePolicy(_Hooks):
    """A policy that is exactly a configuration of the real cycle."""

    name: str
    config: PolicyConfig
    uses_quotas: bool = False


OrderFunction = Callable[[Sequence[PendingJobView], PolicyContext], Sequence[PendingJobView]]
"""``(pending views, context) -> the same views, first to consider first``."""


@dataclass(frozen=True, slots=True)
class FunctionPolicy(_Hooks):
    """A policy from a plain per-cycle ordering function (see :func:`ordering`)."""

    name: str
    function: OrderFunction
    config: PolicyConfig = field(default_factory=lambda: cycle_config("priority"))
    """The cycle sorts by ``(-priority, submitted_seq)``, which :func:`encode_order` sets."""
    uses_quotas: bool = False

    def order(
        self, pending: Sequence[PendingJobView], context: PolicyContext
    ) -> Sequence[PendingJobView] | None:
        return self.function(pending, context)


def ordering(name: str, function: OrderFunction) -> Policy:
    """Plug a per-cycle ordering function in as a named policy.

    Example, shortest job first by trace work::

        sjf = ordering("sjf", lambda jobs, ctx: sorted(
            jobs, key=lambda j: (ctx.job(j.job_id).work_s, j.submitted_seq)))
    """
    return FunctionPolicy(name, function)


def tenant_throughput(context: PolicyContext) -> dict[str, float]:
    """Each tenant's effective throughput now over its weight, in reference devices:
    ``Σ_attempts speed_job(accelerator) × devices / w_t``."""
    throughput: dict[str, float] = {}
    for attempt in context.running():
        job = context.job(attempt.job_id)
        speed = job.speed_on(attempt.accelerator) * len(attempt.devices)
        throughput[job.tenant] = throughput.get(job.tenant, 0.0) + speed
    return {tenant: value / context.tenant_weight(tenant) for tenant, value in throughput.items()}


@dataclass(frozen=True, slots=True)
class GavelPolicy(_Hooks):
    """A Gavel-style heterogeneity-aware max-min fairness across tenants (an approximation).

    Gavel (Narayanan et al., "Heterogeneity-Aware Cluster Scheduling Policies for Deep Learning
    Workloads", OSDI 2020) solves a linear program for the time share of every job on every
    accelerator type that maximises the least normalised effective throughput, and realises it
    in rounds with preemption. This is *not* that LP. Each cycle:

    1. order the pending jobs by their tenant's effective throughput now,
       ``Σ_running speed_job(type) × devices / w_t`` (reference devices; a tenant running
       nothing has 0), lowest first, then by submission — so the next devices go to the
       tenant furthest below its share, as a max-min water-filling step would give them;
    2. prefer, for a job that may use several types, the type on which it is fastest among
       those with enough free devices for its smallest gang now, else its fastest type
       (Gavel's heterogeneity awareness, one job at a time instead of jointly).

    Priorities are ignored (Gavel has none); the cycle runs with no preemption or backfill, so
    shares move only as jobs end, not in rounds.
    """

    name: str = "gavel"
    config: PolicyConfig = field(default_factory=lambda: cycle_config("priority"))
    uses_quotas: bool = False
    narrows_any = True

    def order(
        self, pending: Sequence[PendingJobView], context: PolicyContext
    ) -> Sequence[PendingJobView] | None:
        throughput = tenant_throughput(context)
        return sorted(
            pending, key=lambda view: (throughput.get(view.tenant, 0.0), view.submitted_seq)
        )

    def choose(self, job: TraceJob, options: Sequence[str], context: PolicyContext) -> str | None:
        smallest = job.min_devices
        fitting = [a for a in options if context.free_devices(a) >= smallest]
        return max(
            fitting or options,
            key=lambda accelerator: (job.speed_on(accelerator), context.free_devices(accelerator)),
        )


POLICIES: dict[str, Policy] = {
    "fifo": CyclePolicy("fifo", cycle_config("fifo")),
    "priority": CyclePolicy("priority", cycle_config("priority")),
    "las": CyclePolicy("las", cycle_config("las")),
    "drf": CyclePolicy("drf", PolicyConfig(ordering="fair_share", preemption=False)),
    "gavel": GavelPolicy(),
    "corral": CyclePolicy("corral", PolicyConfig(), uses_quotas=True),
}
"""Policies by name (the table in the module docstring)."""


def policy_named(name: str) -> Policy:
    """The policy called ``name``; the error lists the known ones."""
    try:
        return POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown policy {name!r}; known: {known}") from None


def renamed(policy: Policy, name: str) -> Policy:
    """``policy`` under another name (a row label, e.g. ``corral+quotas``)."""
    assert isinstance(policy, CyclePolicy | FunctionPolicy | GavelPolicy)
    return replace(policy, name=name)


def encode_order(ordered: Sequence[PendingJobView]) -> tuple[PendingJobView, ...]:
    """Views whose ``(-priority, submitted_seq)`` sort is exactly ``ordered``."""
    return tuple(
        view
        if view.priority == 0 and view.submitted_seq == rank
        else replace(view, priority=0, submitted_seq=rank)
        for rank, view in enumerate(ordered)
    )


def equal_quotas(
    devices_by_accelerator: Mapping[str, int], tenants: Sequence[str], cohort: str = "all"
) -> Quotas:
    """Every tenant owns an equal share (rounded down) of every accelerator type, all lent to
    one cohort: an idle share may be borrowed by anyone, and reclaimed by its owner."""
    return Quotas(
        tuple(
            TenantQuota(tenant, accelerator, devices // len(tenants), cohort=cohort)
            for tenant in tenants
            for accelerator, devices in devices_by_accelerator.items()
        )
    )
