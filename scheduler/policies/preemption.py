"""Preemption: which running jobs to stop so that a pending gang fits.

Given a pending job that cannot be placed, :func:`select_victims` chooses the *fewest* running
jobs whose devices, added to what is already free, make room for the whole gang in one pool (on
one node for backends whose gangs cannot span nodes). Among the sets of that size it takes the
one that is first in preference order — victims ranked by

1. lower priority first;
2. on borrowed quota first;
3. least work lost first: ``devices × seconds since the last checkpoint`` (device-seconds);
4. fewer nodes touched, then the job id (so the choice is deterministic).

A job of higher or equal priority than the pending one is never preempted, except to reclaim
borrowed quota: an owner's job that fits within its nominal quota may preempt the jobs that
:func:`scheduler.policies.quota.reclaimable` names (:class:`Reclaim`). When quota itself is short
(``Reclaim.shortfall_devices``), the victims must also give back that many borrowed devices; a
borrower gives back at most what it borrows.

The search is exact: for k = 1, 2, … it walks the k-subsets in preference order and prunes a
branch as soon as even the largest remaining jobs cannot cover what is still needed, so the
first subset it meets is the answer. The bound keeps the walk short (with devices alone, the
smallest k is known in advance: the largest jobs first); should a walk ever pass
``max_search_steps`` subsets, it falls back to a greedy choice — still a valid set, perhaps not
the smallest. Pure and deterministic: same input, same victims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.domain.resources import PoolView, RunningJobView

MAX_SEARCH_STEPS = 20_000
"""Subsets the exact search may try per pending job before it falls back to greedy."""


@dataclass(frozen=True, slots=True)
class Reclaim:
    """What quota lets an owner take back (from :func:`scheduler.policies.quota.reclaimable`)."""

    job_ids: frozenset[int] = frozenset()
    """Jobs of cohort peers on borrowed quota: preemptible whatever their priority."""
    borrowed_by_tenant: Mapping[str, int] = field(default_factory=dict)
    """How many devices each such peer borrows: the most its jobs can give back to quota."""
    shortfall_devices: int = 0
    """Borrowed devices quota needs back before the owner's job is admitted."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Preemptor:
    """The pending job that needs room."""

    job_id: int
    tenant: str
    priority: int
    devices: int


@dataclass(frozen=True, slots=True)
class Preemption:
    """The victims to stop (empty when none are needed or none suffice), and why."""

    ok: bool
    victims: tuple[RunningJobView, ...]
    reason: str
    node_id: int | None = None
    """For a gang that must stay on one node: the node the victims make room on."""


@dataclass(frozen=True, slots=True)
class _Candidate:
    job: RunningJobView
    rank: int
    devices_here: int
    """Devices it frees where the gang goes (this pool, or this node)."""
    quota_back: int
    """Borrowed devices it can give back to quota (capped by its tenant's borrowing)."""


@dataclass(frozen=True, slots=True)
class _Scope:
    """Where the gang would go: one node, or the whole pool."""

    node_ids: frozenset[int]
    free_devices: int
    node_id: int | None


def _preference(job: RunningJobView, reclaim: Reclaim | None) -> tuple[int, bool, float, int, int]:
    borrowed = job.borrowed or (reclaim is not None and job.job_id in reclaim.job_ids)
    return (
        job.priority,
        not borrowed,
        job.work_lost_device_s,
        len(job.devices_by_node),
        job.job_id,
    )


def _eligible(job: RunningJobView, preemptor: Preemptor, reclaim: Reclaim | None) -> bool:
    if job.job_id == preemptor.job_id:
        return False
    return job.priority < preemptor.priority or (
        reclaim is not None and job.job_id in reclaim.job_ids
    )


def _scopes(pool: PoolView, devices: int) -> list[_Scope]:
    ready = [node for node in pool.nodes if node.schedulable]
    if not pool.multi_node:
        return [
            _Scope(frozenset({node.node_id}), len(node.free_devices), node.node_id)
            for node in ready
            if node.devices >= devices
        ]
    if sum(node.devices for node in ready) < devices:
        return []
    return [
        _Scope(
            frozenset(node.node_id for node in ready),
            sum(len(node.free_devices) for node in ready),
            None,
        )
    ]


def _quota_back(chosen: Sequence[_Candidate], caps: Mapping[str, int]) -> int:
    by_tenant: dict[str, int] = {}
    for candidate in chosen:
        if candidate.quota_back:
            tenant = candidate.job.tenant
            by_tenant[tenant] = by_tenant.get(tenant, 0) + candidate.job.devices
    return sum(min(devices, caps.get(tenant, 0)) for tenant, devices in by_tenant.items())


def _top_sums(values: Sequence[int], width: int) -> list[list[int]]:
    """``out[i][r]``: the sum of the ``r`` largest of ``values[i:]``, for ``r <= width``."""
    out: list[list[int]] = [[0] * (width + 1) for _ in range(len(values) + 1)]
    top: list[int] = []
    for index in range(len(values) - 1, -1, -1):
        top = sorted([*top, values[index]], reverse=True)[:width]
        running = 0
        for r in range(1, width + 1):
            running += top[r - 1] if r <= len(top) else 0
            out[index][r] = running
    return out


@dataclass(slots=True)
class _Walk:
    """One walk over the k-subsets of the candidates, in preference order."""

    candidates: Sequence[_Candidate]
    need_here: int
    need_quota: int
    caps: Mapping[str, int]
    steps_left: int
    chosen: list[_Candidate] = field(default_factory=list)
    top_here: list[list[int]] = field(default_factory=list)
    top_back: list[list[int]] = field(default_factory=list)

    def first(self, size: int) -> tuple[_Candidate, ...] | None:
        """The first subset of ``size`` covering both needs; None if there is none (or the
        walk ran out of steps: check ``steps_left``)."""
        self.chosen = []
        self.top_here = _top_sums([c.devices_here for c in self.candidates], size)
        self.top_back = _top_sums([c.quota_back for c in self.candidates], size)
        return tuple(self.chosen) if self._walk(0, 0, size) else None

    def _walk(self, start: int, got_here: int, left: int) -> bool:
        got_back = _quota_back(self.chosen, self.caps)
        if left == 0:
            return got_here >= self.need_here and got_back >= self.need_quota
        for index in range(start, len(self.candidates) - left + 1):
            if (
                got_here + self.top_here[index][left] < self.need_here
                or got_back + self.top_back[index][left] < self.need_quota
            ):
                return False  # later suffixes are subsets: their bounds are no larger
            self.steps_left -= 1
            if self.steps_left < 0:
                return False
            self.chosen.append(self.candidates[index])
            if self._walk(index + 1, got_here + self.candidates[index].devices_here, left - 1):
                return True
            self.chosen.pop()
            if self.steps_left < 0:
                return False
        return False


def _search(
    candidates: Sequence[_Candidate],
    need_here: int,
    need_quota: int,
    caps: Mapping[str, int],
    steps_left: int,
    max_size: int,
) -> tuple[tuple[_Candidate, ...] | None, int]:
    """The first subset in preference order of the smallest size (at most ``max_size``) that
    covers both needs, and the search steps left over."""
    if (
        sum(c.devices_here for c in candidates) < need_here
        or _quota_back(candidates, caps) < need_quota
    ):
        return None, steps_left
    walk = _Walk(candidates, need_here, need_quota, caps, steps_left)
    for size in range(1, min(len(candidates), max_size) + 1):
        found = walk.first(size)
        if found is not None:
            return found, walk.steps_left
        if walk.steps_left < 0:
            return _greedy(candidates, need_here, need_quota, caps), 0
    return None, walk.steps_left


def _greedy(
    candidates: Sequence[_Candidate], need_here: int, need_quota: int, caps: Mapping[str, int]
) -> tuple[_Candidate, ...]:
    """Take victims in preference order until both needs are met, then drop the ones not
    needed, least preferred first."""
    chosen: list[_Candidate] = []
    for candidate in candidates:
        if (
            sum(c.devices_here for c in chosen) >= need_here
            and _quota_back(chosen, caps) >= need_quota
        ):
            break
        chosen.append(candidate)
    for candidate in reversed(list(chosen)):
        rest = [c for c in chosen if c is not candidate]
        if sum(c.devices_here for c in rest) >= need_here and _quota_back(rest, caps) >= need_quota:
            chosen = rest
    return tuple(chosen)


def _describe(job: RunningJobView, preemptor: Preemptor, reclaim: Reclaim | None) -> str:
    why = ["lower priority"] if job.priority < preemptor.priority else []
    if job.borrowed or (reclaim is not None and job.job_id in reclaim.job_ids):
        why.append("on borrowed quota")
    return (
        f"#{job.job_id} ({job.tenant}, priority {job.priority}, {job.devices} devices, "
        f"{', '.join(why)}, {job.seconds_since_checkpoint:.0f} s since checkpoint)"
    )


def select_victims(
    preemptor: Preemptor,
    pool: PoolView,
    running: Sequence[RunningJobView],
    reclaim: Reclaim | None = None,
    max_search_steps: int = MAX_SEARCH_STEPS,
) -> Preemption:
    """The fewest running jobs to stop so that ``preemptor``'s gang fits in ``pool``.

    ``running`` may hold jobs of any pool: only devices in ``pool`` make room for the gang,
    while jobs anywhere on the accelerator can give back borrowed quota. See the module
    docstring for the preference order and the rule on priority."""
    need_quota = reclaim.shortfall_devices if reclaim is not None else 0
    caps = reclaim.borrowed_by_tenant if reclaim is not None else {}
    scopes = _scopes(pool, preemptor.devices)
    if not scopes:
        where = "no schedulable node of" if not pool.multi_node else "not even"
        return Preemption(
            False,
            (),
            f"{where} pool {pool.name} can hold {preemptor.devices} devices; "
            f"preemption cannot help",
        )
    eligible = sorted(
        (job for job in running if _eligible(job, preemptor, reclaim)),
        key=lambda job: _preference(job, reclaim),
    )
    rank = {job.job_id: index for index, job in enumerate(eligible)}
    best: tuple[tuple[int, tuple[int, ...]], tuple[_Candidate, ...], _Scope] | None = None
    steps_left = max_search_steps
    shortest_need = preemptor.devices
    for scope in scopes:
        need_here = max(0, preemptor.devices - scope.free_devices)
        shortest_need = min(shortest_need, need_here)
        if need_here == 0 and need_quota == 0:
            return Preemption(
                True,
                (),
                f"#{preemptor.job_id} fits in pool {pool.name} without preemption",
                scope.node_id,
            )
        candidates = []
        for job in eligible:
            here = (
                sum(count for node_id, count in job.devices_by_node if node_id in scope.node_ids)
                if job.pool_id == pool.pool_id
                else 0
            )
            back = (
                min(job.devices, caps.get(job.tenant, 0))
                if reclaim is not None and job.job_id in reclaim.job_ids
                else 0
            )
            if here or back:
                candidates.append(_Candidate(job, rank[job.job_id], here, back))
        largest = best[0][0] if best is not None else len(candidates)
        found, steps_left = _search(candidates, need_here, need_quota, caps, steps_left, largest)
        if found is None:
            continue
        cost = (len(found), tuple(c.rank for c in found))
        if best is None or cost < best[0]:
            best = (cost, found, scope)
    if best is None:
        return Preemption(
            False, (), _refusal(preemptor, pool, eligible, shortest_need, need_quota, reclaim)
        )
    _, found, scope = best
    victims = tuple(c.job for c in found)
    freed = sum(c.devices_here for c in found)
    text = (
        f"preempt {'; '.join(_describe(v, preemptor, reclaim) for v in victims)} to free "
        f"{freed} devices in pool {pool.name}"
    )
    if need_quota:
        text += f" and give back {need_quota} borrowed devices of quota"
    return Preemption(
        True,
        victims,
        f"{text} for #{preemptor.job_id} (priority {preemptor.priority})",
        scope.node_id,
    )


def _refusal(
    preemptor: Preemptor,
    pool: PoolView,
    eligible: Sequence[RunningJobView],
    need_here: int,
    need_quota: int,
    reclaim: Reclaim | None,
) -> str:
    who = f"lower priority than {preemptor.priority}"
    if reclaim is not None and reclaim.job_ids:
        who += " or on borrowed quota"
    holding = sum(
        count for job in eligible if job.pool_id == pool.pool_id for _, count in job.devices_by_node
    )
    where = "on one node of" if not pool.multi_node else "in"
    text = (
        f"cannot preempt for #{preemptor.job_id}: needs {need_here} more devices {where} "
        f"pool {pool.name}; jobs it may preempt ({who}) hold {holding} there"
    )
    if need_quota:
        text += f", and quota needs {need_quota} borrowed devices back"
    return text


__all__ = [
    "MAX_SEARCH_STEPS",
    "Preemption",
    "Preemptor",
    "Reclaim",
    "RunningJobView",
    "select_victims",
]
