"""One scheduler replica of a server: lead the cycle while holding the lease, else stand by.

Several replicas of ``corral server`` share one database. Each runs a :class:`Replica` loop;
every :attr:`~Replica.tick_interval_s` it

1. acquires or renews the scheduler lease in a write transaction of its own
   (:func:`scheduler.db.lease.acquire_or_renew`); a replica that gets no fence is a follower
   and does nothing more this step;
2. as the leader, runs one :meth:`SchedulerService.tick` under the fence, so every write of the
   tick re-checks the lease; a :class:`StaleLeaderError` makes it a follower again.

On stop it releases the lease, so another replica leads at once instead of after the lease's
time to live. docs/replicas.md describes the guarantees and their limits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from scheduler.db import lease
from scheduler.db.lease import Fence
from scheduler.db.models import utcnow
from scheduler.domain.errors import StaleLeaderError
from scheduler.service import SchedulerService, TickReport

log = logging.getLogger("corral.replica")

MIN_TTL_TICKS = 3
"""The lease must outlive this many tick intervals: a leader renews once per tick, so a lease
shorter than a few ticks would lapse between renewals at the slightest delay."""


FAILING_AFTER_STEPS = 3
"""Failed steps in a row after which the replica is not ready: one hiccup is not an outage."""


class Replica:
    """Lead the scheduling cycle of ``service`` while holding lease ``name`` as ``holder``."""

    def __init__(self, service: SchedulerService, holder: str, ttl_s: float = 10.0,
                 tick_interval_s: float = 1.0, name: str = "scheduler",
                 on_tick: Callable[[TickReport], None] | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        if not tick_interval_s > 0:
            raise ValueError(f"tick_interval_s must be > 0 seconds, got {tick_interval_s}")
        if ttl_s < MIN_TTL_TICKS * tick_interval_s:
            raise ValueError(
                f"ttl_s {ttl_s} s is shorter than {MIN_TTL_TICKS} × tick_interval_s "
                f"{tick_interval_s} s = {MIN_TTL_TICKS * tick_interval_s} s; raise the lease "
                f"time to live or tick more often, so the leader renews it several times "
                f"before it lapses")
        if not holder:
            raise ValueError("holder must name this replica (e.g. HOSTNAME:PID), got ''")
        self.service = service
        self.holder = holder
        self.ttl_s = ttl_s
        self.tick_interval_s = tick_interval_s
        self.name = name
        self.on_tick = on_tick
        self.clock = clock
        self._fence: Fence | None = None
        self.failed_steps = 0
        """Steps in a row that raised; reset by the next one that completes."""
        self.last_error = ""
        """What the latest failed step raised, on one line."""

    @property
    def is_leader(self) -> bool:
        """Whether this replica holds the lease: its last step got a fence that no write has
        found lost since, and that has not run out."""
        fence = self._fence
        return fence is not None and fence.expires_at > self.clock()

    @property
    def failing(self) -> str | None:
        """Why this replica's loop is failing (its last :data:`FAILING_AFTER_STEPS` steps
        raised), or None while it works: the readiness probe reports it."""
        if self.failed_steps < FAILING_AFTER_STEPS:
            return None
        return f"the scheduler loop failed {self.failed_steps} steps in a row: {self.last_error}"

    @property
    def epoch(self) -> int | None:
        """The lease epoch this replica leads at, or None while it follows."""
        return self._fence.epoch if self._fence is not None else None

    def step(self) -> TickReport | None:
        """Acquire or renew the lease, then tick as the leader; None while following."""
        try:
            with self.service.db.write() as session:
                fence = lease.acquire_or_renew(session, self.name, self.holder, self.ttl_s,
                                               self.clock())
        except Exception:
            self._fence = None  # unrenewed, the lease lapses: lead no more until renewed
            raise
        if fence is None:
            self._follow()
            return None
        if self._fence is None or self._fence.epoch != fence.epoch:
            log.info("%s became leader of %r at epoch %d", self.holder, self.name, fence.epoch)
        self._fence = fence
        try:
            report = self.service.tick(fence)
        except StaleLeaderError:
            self._follow("; a write of its tick was refused and rolled back")
            return None
        if self.on_tick is not None:
            self.on_tick(report)
        return report

    def run(self, stop: threading.Event) -> None:
        """Step every ``tick_interval_s`` until ``stop`` is set, then release the lease.

        A tick that crashes is logged with its traceback and the loop goes on: one bad job or
        a database hiccup must not stop the scheduler."""
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    self.step()
                    self.failed_steps = 0
                except Exception as err:
                    self.failed_steps += 1
                    self.last_error = " ".join(f"{type(err).__name__}: {err}".split())[:500]
                    log.exception("%s: scheduler step failed; trying again in %.3g s",
                                  self.holder, self.tick_interval_s)
                stop.wait(max(0.0, self.tick_interval_s - (time.monotonic() - started)))
        finally:
            self.release()

    def release(self) -> None:
        """Give up the lease now (if held) so another replica takes over at once."""
        fence, self._fence = self._fence, None
        if fence is None:
            return
        try:
            with self.service.db.write() as session:
                released = lease.release(session, fence)
        except Exception:
            log.exception("%s: could not release the lease; it lapses in %.3g s",
                          self.holder, self.ttl_s)
            return
        if released:
            log.info("%s released the lease %r at epoch %d", self.holder, self.name,
                     fence.epoch)

    def _follow(self, detail: str = "") -> None:
        """Become a follower, saying to whom the lease went if this replica was leading."""
        if self._fence is None:
            return
        lost = self._fence
        self._fence = None
        with self.service.db.read() as session:
            now = lease.current(session, self.name)
        if now is not None and now.epoch != lost.epoch:
            log.warning("%s lost the lease to %s (epoch %d → %d)%s", self.holder,
                        now.holder or "nobody", lost.epoch, now.epoch, detail)
        else:
            log.warning("%s lost the lease %r at epoch %d: it expired before renewal%s",
                        self.holder, self.name, lost.epoch, detail)
