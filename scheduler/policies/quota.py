"""Quota: how many devices of each accelerator type a tenant may hold, with Kueue's cohorts.

Semantics follow Kueue's ClusterQueue (kueue.sigs.k8s.io/docs/concepts/cluster_queue, sections
"Cohort", "BorrowingLimit", "Preemption") and its lending limit (KEP-1224), with a tenant in the
place of a ClusterQueue and an accelerator type in the place of a resource flavor. Per
accelerator ``a``, every tenant ``t`` with a quota row has

- ``N_t`` nominal devices, its own;
- ``L_t`` lendable devices (its lending limit, default all of ``N_t``), so that
  ``G_t = N_t - L_t`` devices are guaranteed: never lent;
- ``B_t`` its borrowing limit (default unlimited): it never holds more than ``N_t + B_t``.

The tenants of one cohort share a *lending pool* of ``P = Σ L_m`` devices (plus any nominal quota
the cohort owns itself). A tenant holding ``U_m`` devices draws ``max(0, U_m - G_m)`` from the
pool, so a job of ``r`` devices is admitted when, after it,

    U_t + r <= N_t + B_t                                      (borrowing limit)
    Σ_m max(0, U_m' - G_m) <= P          with U_t' = U_t + r  (the pool is not overdrawn)

A tenant outside any cohort simply needs ``U_t + r <= N_t``. Devices above ``N_t`` are
*borrowed*. An owner whose job fits within its nominal quota may *reclaim* devices that cohort
peers borrow, by preemption (Kueue's ``reclaimWithinCohort: Any``); a job that would itself
borrow never preempts for quota. A tenant with no quota row for an accelerator is unlimited
there (Corral's behaviour before quotas existed) and lends nothing.

Where Corral differs from Kueue: one accelerator type per request (no flavor fungibility),
cohort membership is per quota row (per accelerator), cohorts are flat (no hierarchy, no cohort
borrowing or lending limits), and accelerator names compare case-insensitively, as placement
does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from scheduler.policies.preemption import Reclaim, RunningJobView


def _key(accelerator: str) -> str:
    return accelerator.lower()


@dataclass(frozen=True, slots=True)
class TenantQuota:
    """One tenant's quota for one accelerator type, in devices."""

    tenant: str
    accelerator: str
    nominal_devices: int
    borrowing_limit_devices: int | None = None
    """At most this many devices above nominal; None: as many as the cohort lends."""
    lending_limit_devices: int | None = None
    """At most this many of its nominal devices lent to the cohort; None: all of them."""
    cohort: str | None = None

    def __post_init__(self) -> None:
        if self.nominal_devices < 0:
            raise ValueError(
                f"quota {self.tenant}/{self.accelerator}: nominal_devices "
                f"{self.nominal_devices} must be >= 0"
            )
        if self.borrowing_limit_devices is not None and self.borrowing_limit_devices < 0:
            raise ValueError(
                f"quota {self.tenant}/{self.accelerator}: borrowing_limit_devices "
                f"{self.borrowing_limit_devices} must be >= 0"
            )
        lending = self.lending_limit_devices
        if lending is not None and not 0 <= lending <= self.nominal_devices:
            raise ValueError(
                f"quota {self.tenant}/{self.accelerator}: lending_limit_devices "
                f"{lending} must be between 0 and nominal_devices "
                f"{self.nominal_devices}"
            )

    @property
    def lendable_devices(self) -> int:
        """``L``: what this tenant puts in its cohort's lending pool."""
        if self.lending_limit_devices is None:
            return self.nominal_devices
        return self.lending_limit_devices

    @property
    def guaranteed_devices(self) -> int:
        """``G = N - L``: nominal devices never lent."""
        return self.nominal_devices - self.lendable_devices


@dataclass(frozen=True, slots=True)
class CohortQuota:
    """Devices a cohort owns itself (Kueue's Cohort quota): all of them lendable to members."""

    cohort: str
    accelerator: str
    nominal_devices: int

    def __post_init__(self) -> None:
        if self.nominal_devices < 0:
            raise ValueError(
                f"cohort quota {self.cohort}/{self.accelerator}: nominal_devices "
                f"{self.nominal_devices} must be >= 0"
            )


@dataclass(frozen=True, slots=True)
class Quotas:
    """Every quota row in force this cycle; at most one row per (tenant, accelerator)."""

    tenants: tuple[TenantQuota, ...] = ()
    cohorts: tuple[CohortQuota, ...] = ()
    _by_tenant: dict[tuple[str, str], TenantQuota] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_tenant: dict[tuple[str, str], TenantQuota] = {}
        for row in self.tenants:
            key = (row.tenant, _key(row.accelerator))
            if key in by_tenant:
                raise ValueError(
                    f"two quota rows for tenant {row.tenant!r} and accelerator "
                    f"{row.accelerator!r}; keep one"
                )
            by_tenant[key] = row
        seen: set[tuple[str, str]] = set()
        for cohort_row in self.cohorts:
            key = (cohort_row.cohort, _key(cohort_row.accelerator))
            if key in seen:
                raise ValueError(
                    f"two quota rows for cohort {cohort_row.cohort!r} and "
                    f"accelerator {cohort_row.accelerator!r}; keep one"
                )
            seen.add(key)
        object.__setattr__(self, "_by_tenant", by_tenant)

    def for_tenant(self, tenant: str, accelerator: str) -> TenantQuota | None:
        return self._by_tenant.get((tenant, _key(accelerator)))

    def members(self, cohort: str, accelerator: str) -> tuple[TenantQuota, ...]:
        return tuple(
            row
            for row in self.tenants
            if row.cohort == cohort and _key(row.accelerator) == _key(accelerator)
        )

    def cohort_devices(self, cohort: str, accelerator: str) -> int:
        """Nominal devices the cohort owns itself (0 without a cohort row)."""
        return sum(
            row.nominal_devices
            for row in self.cohorts
            if row.cohort == cohort and _key(row.accelerator) == _key(accelerator)
        )


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """Devices of one accelerator type that a tenant's admitted and running jobs hold."""

    tenant: str
    accelerator: str
    devices: int


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether quota admits a request, how many of its devices are borrowed, and why."""

    ok: bool
    borrowed_devices: int
    reason: str


def usage_of(running: Iterable[RunningJobView]) -> tuple[TenantUsage, ...]:
    """What the given jobs hold, one row per (tenant, accelerator)."""
    totals: dict[tuple[str, str], int] = {}
    names: dict[tuple[str, str], str] = {}
    for job in running:
        key = (job.tenant, _key(job.accelerator))
        totals[key] = totals.get(key, 0) + job.devices
        names.setdefault(key, job.accelerator)
    return tuple(
        TenantUsage(tenant, names[(tenant, acc)], devices)
        for (tenant, acc), devices in sorted(totals.items())
    )


def _held(usage: Iterable[TenantUsage], accelerator: str) -> dict[str, int]:
    """Devices of ``accelerator`` held, by tenant (rows for one tenant add up)."""
    held: dict[str, int] = {}
    for row in usage:
        if _key(row.accelerator) == _key(accelerator):
            held[row.tenant] = held.get(row.tenant, 0) + row.devices
    return held


@dataclass(frozen=True, slots=True)
class _Pool:
    """One cohort's lending pool for one accelerator, as the usage stands."""

    capacity: int
    in_use: int
    borrowers: dict[str, int]
    """Peers above their nominal quota, and by how many devices."""

    def after(self, quota: TenantQuota, used: int, devices: int) -> int:
        """Pool draw if ``quota.tenant`` goes from ``used`` to ``used + devices``."""
        guaranteed = quota.guaranteed_devices
        return self.in_use - max(0, used - guaranteed) + max(0, used + devices - guaranteed)


def _pool(quota: TenantQuota, held: dict[str, int], quotas: Quotas) -> _Pool:
    assert quota.cohort is not None
    members = quotas.members(quota.cohort, quota.accelerator)
    capacity = sum(m.lendable_devices for m in members) + quotas.cohort_devices(
        quota.cohort, quota.accelerator
    )
    in_use = sum(max(0, held.get(m.tenant, 0) - m.guaranteed_devices) for m in members)
    borrowers = {
        m.tenant: held.get(m.tenant, 0) - m.nominal_devices
        for m in members
        if m.tenant != quota.tenant and held.get(m.tenant, 0) > m.nominal_devices
    }
    return _Pool(capacity, in_use, borrowers)


def _borrowers_text(borrowers: dict[str, int]) -> str:
    return ", ".join(f"{tenant} borrows {devices}" for tenant, devices in sorted(borrowers.items()))


def admissible(
    devices: int, tenant: str, accelerator: str, usage: Iterable[TenantUsage], quotas: Quotas
) -> Decision:
    """May ``tenant`` take ``devices`` more devices of ``accelerator`` now?

    ``usage`` is what every tenant holds (admitted and running jobs, plus what this cycle has
    admitted so far). See the module docstring for the rule."""
    quota = quotas.for_tenant(tenant, accelerator)
    if quota is None:
        return Decision(True, 0, f"quota: {tenant} has no {accelerator} quota (unlimited)")
    held = _held(usage, accelerator)
    used = held.get(tenant, 0)
    after = used + devices
    nominal = quota.nominal_devices
    borrowed = max(0, after - nominal) - max(0, used - nominal)
    status = f"{tenant} has {used}/{nominal} {accelerator}, asks {devices}"
    if quota.cohort is None:
        if after <= nominal:
            return Decision(
                True, 0, f"quota: {tenant} {after}/{nominal} {accelerator} after admission"
            )
        return Decision(False, 0, f"quota: {status}; no cohort to borrow from")
    limit = quota.borrowing_limit_devices
    if limit is not None and after > nominal + limit:
        return Decision(
            False,
            0,
            f"quota: {status}; over its borrowing limit of {limit} (at most {nominal + limit})",
        )
    pool = _pool(quota, held, quotas)
    draw = pool.after(quota, used, devices)
    if draw > pool.capacity:
        idle = max(0, pool.capacity - pool.in_use)
        need = draw - pool.in_use
        reason = f"quota: {status}; cohort {quota.cohort} lends {idle} (needs {need})"
        if after <= nominal and pool.borrowers:
            reason += f": {_borrowers_text(pool.borrowers)}, reclaimable by preemption"
        return Decision(False, 0, reason)
    if borrowed:
        return Decision(
            True,
            borrowed,
            f"quota: {tenant} {after}/{nominal} {accelerator} after "
            f"admission, borrows {borrowed} from cohort "
            f"{quota.cohort}",
        )
    return Decision(True, 0, f"quota: {tenant} {after}/{nominal} {accelerator} after admission")


def reclaimable(
    devices: int,
    tenant: str,
    accelerator: str,
    usage: Iterable[TenantUsage],
    quotas: Quotas,
    running: Iterable[RunningJobView],
) -> Reclaim:
    """Which running jobs hold capacity that ``tenant`` may take back for a job of ``devices``.

    Only an owner reclaims: the job must fit within the tenant's nominal quota. The candidates
    are the running jobs of cohort peers that hold more than their nominal quota of
    ``accelerator``; ``shortfall_devices`` is how many devices quota needs back (0 when quota
    already admits the job and only the devices themselves are taken)."""
    quota = quotas.for_tenant(tenant, accelerator)
    if quota is None or quota.cohort is None:
        return Reclaim(reason=f"{tenant} is in no cohort for {accelerator}: nothing to reclaim")
    held = _held(usage, accelerator)
    used = held.get(tenant, 0)
    if used + devices > quota.nominal_devices:
        return Reclaim(
            reason=f"{tenant} would hold {used + devices} > nominal "
            f"{quota.nominal_devices} {accelerator}: a job that borrows "
            f"never preempts for quota"
        )
    pool = _pool(quota, held, quotas)
    shortfall = max(0, pool.after(quota, used, devices) - pool.capacity)
    if not pool.borrowers:
        return Reclaim(
            shortfall_devices=shortfall,
            reason=f"no peer in cohort {quota.cohort} borrows {accelerator}",
        )
    job_ids = frozenset(
        job.job_id
        for job in running
        if job.tenant in pool.borrowers and _key(job.accelerator) == _key(accelerator)
    )
    return Reclaim(
        job_ids=job_ids,
        borrowed_by_tenant=dict(pool.borrowers),
        shortfall_devices=shortfall,
        reason=f"{tenant} reclaims within nominal {quota.nominal_devices} "
        f"{accelerator}: {_borrowers_text(pool.borrowers)}",
    )


def borrowing_flags(
    running: Iterable[RunningJobView], quotas: Quotas
) -> tuple[RunningJobView, ...]:
    """The running jobs with ``borrowed`` set where the job's tenant holds more than its nominal
    quota of the job's accelerator (computed from these jobs alone)."""
    jobs = tuple(running)
    totals = {(row.tenant, _key(row.accelerator)): row.devices for row in usage_of(jobs)}
    flagged = []
    for job in jobs:
        quota = quotas.for_tenant(job.tenant, job.accelerator)
        over = (
            quota is not None
            and totals[(job.tenant, _key(job.accelerator))] > quota.nominal_devices
        )
        flagged.append(job if job.borrowed == over else job.with_borrowed(over))
    return tuple(flagged)


__all__ = [
    "CohortQuota",
    "Decision",
    "Quotas",
    "TenantQuota",
    "TenantUsage",
    "admissible",
    "borrowing_flags",
    "reclaimable",
    "usage_of",
]
