"""What each kind of backend can do, as the policies need to know it: one registry.

Placement and preemption ask a pool what its backend can do (:attr:`PoolView.multi_node`),
never which backend it is. A backend module declares its capabilities here, under the name its
pools store; a backend this registry does not know is taken to span nodes and share no disk.
"""

from __future__ import annotations

from dataclasses import dataclass


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
}
"""Backend name (as pools store it) -> its capabilities."""


def capabilities_of(backend: str) -> BackendCapabilities:
    """The capabilities of ``backend``; an unknown one (a test's fake, the simulator's) spans
    nodes."""
    return CAPABILITIES.get(backend, SPANS_NODES)
