"""Throttling of failed authentication: per client address, over a sliding window, in memory.

After ``limit`` failed authentications (a token that is unknown or revoked) from one client
address within ``window_s`` seconds, every request of that address that needs a token answers
**429** with ``Retry-After`` until the oldest of those failures is ``window_s`` old: whatever
token it carries, the right one included. While an address is blocked no token of it is looked
up, so guessing goes no faster than ``limit`` tries per window and costs the database nothing.
The defaults (``CORRAL_AUTH_FAILURE_LIMIT=10``, ``CORRAL_AUTH_FAILURE_WINDOW_S=60``) leave a
person who mistypes a token room to notice.

Kept simple and predictable, with these consequences:

- the address is the connection's, as uvicorn reports it (a proxy's ``X-Forwarded-For`` counts
  only from the addresses uvicorn trusts, 127.0.0.1 by default): clients behind one NAT or
  one untrusted proxy share one count;
- a request without any token is not a failure (a probe, a browser): it gets its 401 and
  counts nothing, but is refused with 429 like any other while its address is blocked;
- each replica counts on its own and forgets on restart: behind a load balancer over ``n``
  replicas an address may fail up to ``n × limit`` times per window;
- at most :data:`MAX_CLIENTS` addresses are remembered, the least recently failing dropped
  first, so a flood of addresses costs bounded memory (and may drop an address's count).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

MAX_CLIENTS = 10_000
"""Addresses remembered at once: about 1 KiB each with the default limit."""


class AuthThrottle:
    """Failed authentications per client address; thread-safe (dependencies run in a pool)."""

    def __init__(self, limit: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError(f"an auth throttle needs limit >= 1 and window_s > 0, got "
                             f"{limit} and {window_s}")
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self.max_clients = max_clients
        # Only the newest `limit` failures decide whether an address is blocked.
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after_s(self, client: str) -> float | None:
        """Seconds until ``client`` may try again; None when it is not blocked."""
        now = self.clock()
        with self._lock:
            failures = self._failures.get(client)
            if failures is None:
                return None
            if now - failures[-1] >= self.window_s:
                del self._failures[client]  # every failure has left the window
                return None
            if len(failures) < self.limit:
                return None
            wait_s = failures[0] + self.window_s - now
            return wait_s if wait_s > 0 else None

    def record_failure(self, client: str) -> None:
        """Count one failed authentication of ``client`` now."""
        now = self.clock()
        with self._lock:
            failures = self._failures.pop(client, None) or deque(maxlen=self.limit)
            failures.append(now)
            self._failures[client] = failures  # re-inserted: the dict is oldest-failing first
            while len(self._failures) > self.max_clients:
                del self._failures[next(iter(self._failures))]
