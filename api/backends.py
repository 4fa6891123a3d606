"""The backends a Corral process can drive, by name: what fills its
:class:`~scheduler.gangs.registry.BackendRegistry`.

``local`` is this machine (one instance, the one the local pool was measured with); ``ray``
is built per pool from its settings (``{"address": ...}``) and needs ``corral[ray]``
installed only when such a pool exists: nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduler.gangs.backend import Backend
from scheduler.gangs.registry import BackendRegistry
from workers.backends.ray import RayBackend


def ray_backend(settings: Mapping[str, str]) -> Backend:
    return RayBackend(settings["address"])


FACTORIES = {"ray": ray_backend}


def registry(backends: Mapping[str, Backend]) -> BackendRegistry:
    """This process's backends: the ready-made ``backends`` (the local one; a test's), which
    win over a factory of the same name, and a Ray backend per Ray cluster its pools name."""
    return BackendRegistry(backends, FACTORIES)
