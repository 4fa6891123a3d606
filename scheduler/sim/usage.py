"""The simulated Allocation history: decayed usage per tenant, for the fair-share ordering.

The service reads usage records ``(tenant, accelerator, devices, start, end)`` from its
Allocation table every cycle and hands them to :func:`scheduler.policies.fairshare.usage_at`;
the simulator keeps the same records. Summing every record every cycle would cost the whole
history per cycle, so ended records are folded into one running sum per (tenant, accelerator).
The fold is exact, because the decay factors out of the integral (``fairshare.py``, step 1)::

    U(now) = n · (h / ln 2) · (2^(-(now - end)/h) - 2^(-(now - start)/h))
           = 2^(-(now - t0)/h) · n · (h / ln 2) · (2^((end - t0)/h) - 2^((start - t0)/h))

for any origin ``t0``: the second factor is fixed once the record has ended. The origin moves
forward (and the sums shrink by the same factor) every :data:`REBASE_HALF_LIVES`, so the powers
stay small. Records still open (running attempts) go through ``usage_at`` itself, every cycle.

Where it differs from the service: the service ignores records older than six half-lives
(``db/snapshot.py``, under 2 % of their weight); the fold keeps them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from scheduler.policies.fairshare import UsageRecord, usage_at

REBASE_HALF_LIVES = 32.0
"""Move the origin once it is this many half-lives behind (keeps ``2^(Δ/h)`` below 2^33)."""


class UsageLedger:
    """Usage records of a replay: ended ones folded (exactly), open ones kept."""

    def __init__(self, half_life_s: float, keep_records: bool = False) -> None:
        """``keep_records`` also keeps every ended record, for :meth:`recomputed` (checks)."""
        if not half_life_s > 0:
            raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
        self.half_life_s = half_life_s
        self._origin_s = 0.0
        self._folded: dict[tuple[str, str], float] = {}
        """``n · (h/ln 2) · (2^((end-t0)/h) - 2^((start-t0)/h))`` summed, by (tenant, type)."""
        self._records: list[UsageRecord] | None = [] if keep_records else None

    def _power(self, time_s: float) -> float:
        return math.exp2((time_s - self._origin_s) / self.half_life_s)

    def close(self, record: UsageRecord) -> None:
        """Fold an ended record in."""
        if record.end_s - self._origin_s > REBASE_HALF_LIVES * self.half_life_s:
            self._rebase(record.end_s)
        weight = (self.half_life_s / math.log(2)) * (
            self._power(record.end_s) - self._power(record.start_s)
        )
        key = (record.tenant, record.accelerator)
        self._folded[key] = self._folded.get(key, 0.0) + record.devices * weight
        if self._records is not None:
            self._records.append(record)

    def _rebase(self, origin_s: float) -> None:
        shrink = math.exp2(-(origin_s - self._origin_s) / self.half_life_s)
        self._folded = {key: value * shrink for key, value in self._folded.items()}
        self._origin_s = origin_s

    def usage(
        self, now_s: float, open_records: Iterable[UsageRecord]
    ) -> dict[str, dict[str, float]]:
        """Decayed device-seconds at ``now_s`` by tenant, then accelerator: the folded records
        (all ended by ``now_s``) plus ``usage_at(open_records)``."""
        usage = usage_at(open_records, now_s, self.half_life_s)
        decay = math.exp2(-(now_s - self._origin_s) / self.half_life_s)
        for (tenant, accelerator), folded in self._folded.items():
            by_type = usage.setdefault(tenant, {})
            by_type[accelerator] = by_type.get(accelerator, 0.0) + folded * decay
        return usage

    def recomputed(
        self, now_s: float, open_records: Iterable[UsageRecord]
    ) -> Mapping[str, Mapping[str, float]]:
        """The same usage as the service computes it: ``usage_at`` over every record (needs
        ``keep_records``; slow — for checks)."""
        if self._records is None:
            raise ValueError("recomputed() needs UsageLedger(keep_records=True)")
        return usage_at([*self._records, *open_records], now_s, self.half_life_s)
