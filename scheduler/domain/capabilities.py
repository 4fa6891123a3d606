"""What each kind of backend can do, as the policies need to know it: one registry.

Placement and preemption ask a pool what its backend can do (:attr:`PoolView.multi_node`),
never which backend it is. A backend module declares its capabilities here, under the name its
pools store; a backend this registry does not know is taken to span nodes and share no disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scheduler.domain.errors import SpecError


@dataclass(frozen=True, slots=True)
class BackendCapabilities:
    multi_node: bool
    """A gang may span nodes (else: ``torchrun --standalone`` on one machine)."""
    shared_filesystem: bool
    """The ranks and the scheduler see the same disk."""
    preemption_signals: bool
    """The ranks get SIGTERM and a grace period to checkpoint before they are killed."""


SPANS_NODES = BackendCapabilities(multi_node=True, shared_filesystem=False,
                                  preemption_signals=True)

CAPABILITIES: dict[str, BackendCapabilities] = {
    "local": BackendCapabilities(multi_node=False, shared_filesystem=True,
                                 preemption_signals=True),
    "ray": SPANS_NODES,
    "kubernetes": SPANS_NODES,
    # The in-memory stand-in for GPU pools (workers.backends.fake): multi-node, and what its
    # tests write for its gangs (checkpoints, exports) is on this machine's disk.
    "fake": BackendCapabilities(multi_node=True, shared_filesystem=True,
                                preemption_signals=True),
}
"""Backend name (as pools store it) -> its capabilities."""


def capabilities_of(backend: str) -> BackendCapabilities:
    """The capabilities of ``backend``; an unknown one (a test's stand-in, the simulator's)
    spans nodes and shares no disk."""
    return CAPABILITIES.get(backend, SPANS_NODES)


MAX_SETTING_CHARS = 256
_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9][A-Za-z0-9.-]*:[0-9]{1,5}$")

BACKEND_SETTINGS: dict[str, dict[str, re.Pattern[str]]] = {
    "local": {},
    "ray": {"address": _ADDRESS},
    "kubernetes": {},
}
"""Backend name -> the settings a pool of it may carry, each with the pattern its value must
match (an allowlist: nothing else is stored or handed to a backend); a backend not named here
takes none."""

REQUIRED_SETTINGS: dict[str, tuple[str, ...]] = {"ray": ("address",)}


def check_backend_settings(backend: str, settings: dict[str, str]) -> dict[str, str]:
    """``settings`` if a pool of ``backend`` may carry them; SpecError saying what to change
    otherwise (an unknown key, a value out of pattern, a required key missing)."""
    allowed = BACKEND_SETTINGS.get(backend, {})
    for key, value in settings.items():
        pattern = allowed.get(key)
        if pattern is None:
            raise SpecError(f"backend {backend} takes no setting {key!r}"
                            + (f"; it takes {', '.join(sorted(allowed))}" if allowed else ""))
        if not isinstance(value, str) or len(value) > MAX_SETTING_CHARS \
                or not pattern.match(value):
            raise SpecError(f"{backend} setting {key}={value!r} is not of the form "
                            f"HOST:PORT or ray://HOST:PORT")
    missing = [key for key in REQUIRED_SETTINGS.get(backend, ()) if key not in settings]
    if missing:
        raise SpecError(f"a {backend} pool needs {', '.join(missing)} "
                        f"(corral pools add ... --ray-address HOST:PORT)")
    return dict(settings)
