"""Which backend runs a pool's gangs: one registry per scheduler process.

Each pool names its backend (``local``, ``ray``, ...) and that backend's settings (a Ray
cluster's address); the registry turns the pair into a :class:`Backend`, built once by the
backend's factory and kept for every later call. A process may also hold ready-made backends
(the local one it measured its pool with, a test's fake): those serve every pool of their name,
whatever the settings. The API layer fills the registry (:func:`api.backends.registry`); the
scheduler only asks it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping

from scheduler.domain.errors import BackendError
from scheduler.gangs.backend import Backend

BackendFactory = Callable[[Mapping[str, str]], Backend]
"""Builds a backend from a pool's settings; raises BackendError for settings it cannot use."""


class BackendRegistry:
    """Backend name and settings -> the backend (module docstring)."""

    def __init__(self, backends: Mapping[str, Backend] | None = None,
                 factories: Mapping[str, BackendFactory] | None = None) -> None:
        self._fixed: dict[str, Backend] = dict(backends or {})
        self._factories: dict[str, BackendFactory] = dict(factories or {})
        self._built: dict[tuple[str, str], Backend] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, backends: Mapping[str, Backend] | BackendRegistry) -> BackendRegistry:
        return backends if isinstance(backends, BackendRegistry) else cls(backends)

    def get(self, name: str, settings: Mapping[str, str] | None = None) -> Backend | None:
        """The backend of pools named ``name`` with ``settings``; None where this process has
        neither a backend nor a factory of that name (the pool's gangs wait for a process that
        has one)."""
        fixed = self._fixed.get(name)
        if fixed is not None:
            return fixed
        factory = self._factories.get(name)
        if factory is None:
            return None
        key = (name, json.dumps(dict(settings or {}), sort_keys=True))
        with self._lock:
            backend = self._built.get(key)
            if backend is None:
                backend = self._built[key] = factory(settings or {})
            return backend

    def names(self) -> list[str]:
        """Backend names this process can serve."""
        return sorted({*self._fixed, *self._factories})

    def check(self, name: str, settings: Mapping[str, str]) -> None:
        """Raise BackendError when no pool of ``name`` with ``settings`` could be served here:
        an unknown backend, or settings its factory refuses. Meant for refusing such a pool
        when it is added; adding a pool does not ask it yet."""
        if name in self._fixed:
            return
        if name not in self._factories:
            raise BackendError(f"no backend {name!r} here; pick one of "
                               f"{', '.join(self.names())}")
        self.get(name, settings)

    def close(self) -> None:
        """Stop what the factories built (a Ray backend's driver process)."""
        with self._lock:
            built, self._built = list(self._built.values()), {}
        for backend in built:
            close = getattr(backend, "close", None)
            if close is not None:
                close()
