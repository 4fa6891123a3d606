"""Policy invariants the simulator checks in ``validate`` mode, written out independently of the
policies that should keep them (a check that called the policy would share its bugs).

- **Quota** (Kueue's rules, ``docs/policies.md``): per accelerator type, a tenant outside any
  cohort holds at most its nominal quota ``N_t``; a tenant in a cohort at most ``N_t + B_t``
  when it has a borrowing limit; and a cohort's members draw no more than its lending pool:
  ``Σ_m max(0, U_m − G_m) <= Σ_m L_m + (the cohort's own devices)``. ``U`` counts every running
  attempt, those told to stop included (they hold their devices until they stop).
- **Preemption**: each running attempt is told to stop at most once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scheduler.policies.quota import Quotas
from scheduler.sim.cluster_state import InvariantError


def check_quota(held: Iterable[tuple[str, str, int]], quotas: Quotas) -> None:
    """Raise :class:`InvariantError` if ``held`` — ``(tenant, accelerator, devices)`` per
    running attempt — breaks ``quotas`` (module docstring)."""
    if not quotas.tenants:
        return
    usage: dict[tuple[str, str], int] = {}
    for tenant, accelerator, devices in held:
        key = (tenant, accelerator.lower())
        usage[key] = usage.get(key, 0) + devices
    cohorts: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    for row in quotas.tenants:
        accelerator = row.accelerator.lower()
        used = usage.get((row.tenant, accelerator), 0)
        if row.cohort is None:
            if used > row.nominal_devices:
                raise InvariantError(
                    f"quota: {row.tenant} holds {used} {row.accelerator}, over its nominal "
                    f"{row.nominal_devices} with no cohort to borrow from"
                )
            continue
        limit = row.borrowing_limit_devices
        if limit is not None and used > row.nominal_devices + limit:
            raise InvariantError(
                f"quota: {row.tenant} holds {used} {row.accelerator}, over nominal "
                f"{row.nominal_devices} + borrowing limit {limit}"
            )
        cohorts.setdefault((row.cohort, accelerator), []).append(
            (used, row.guaranteed_devices, row.lendable_devices)
        )
    own = {(c.cohort, c.accelerator.lower()): c.nominal_devices for c in quotas.cohorts}
    for (cohort, accelerator), members in cohorts.items():
        drawn = sum(max(0, used - guaranteed) for used, guaranteed, _ in members)
        lendable = sum(lendable for _, _, lendable in members) + own.get((cohort, accelerator), 0)
        if drawn > lendable:
            raise InvariantError(
                f"quota: cohort {cohort} members draw {drawn} {accelerator} from a lending "
                f"pool of {lendable}"
            )


def check_told_once(told: Mapping[int, int]) -> None:
    """Raise :class:`InvariantError` if a running attempt was told to stop more than once
    (``told``: orders received by each running job's current attempt)."""
    twice = {job_id: count for job_id, count in told.items() if count > 1}
    if twice:
        job_id, count = min(twice.items())
        raise InvariantError(
            f"job #{job_id} was told to stop {count} times in one attempt (once is the rule: "
            f"the cycle must not pick a job already stopping)"
        )
