"""Embedded mode: the scheduler, a SQLite database and a local pool, all in this process.

``corral run`` and friends use :func:`open_embedded`; nothing listens on the network.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from api.backends import registry
from scheduler.db import repo
from scheduler.db.migrate import current_revision, head_revision, upgrade
from scheduler.db.session import Database, corral_home
from scheduler.domain.errors import CorralError
from scheduler.gangs.backend import Backend
from scheduler.home import audit_home, prepare_home
from scheduler.service import DEFAULT_GRACE_S, SchedulerService
from workers.backends.local import LocalBackend

LOCAL_POOL = "local"

log = logging.getLogger("corral.embedded")


def local_devices(backend: LocalBackend) -> tuple[str, int]:
    """Accelerator and device count of the local pool: this machine's GPUs, else its CPU rank
    slots; ``$CORRAL_LOCAL_DEVICES`` overrides the count."""
    inventory = backend.inventory()
    accelerator, count = ("cuda", inventory.cuda_devices) if inventory.cuda_devices else (
        "cpu", inventory.cpu_devices)
    override = os.environ.get("CORRAL_LOCAL_DEVICES")
    if override:
        if not override.isdigit() or int(override) < 1:
            raise CorralError(f"CORRAL_LOCAL_DEVICES must be a positive integer, got {override!r}")
        count = int(override)
    return accelerator, count


def prepare_database(db: Database) -> None:
    """Bring an embedded SQLite schema to head; require ``corral db upgrade`` elsewhere."""
    head = head_revision()
    if current_revision(db) == head:
        return
    if db.is_sqlite:
        upgrade(db)
        return
    raise CorralError(
        f"database schema is at {current_revision(db) or 'nothing'}, code expects {head}: "
        f"run `corral db upgrade`"
    )


def ensure_local_pool(db: Database, backend: LocalBackend) -> None:
    """Register this machine as the ``local`` pool once; a CPU pool measures its peak once.

    The cost model plans CPU jobs against the measured per-device peak, not a catalog figure
    (there is none for "this machine's share of cores"); a pool made before the measurement
    existed gets it on the next start."""
    with db.read() as session:
        pool = repo.get_pool(session, LOCAL_POOL)
        missing, needs_peak = pool is None, pool is not None and (
            pool.accelerator == "cpu" and pool.peak_flops is None)
        devices = pool.devices_per_node if pool is not None else 0
    if not (missing or needs_peak):
        return
    accelerator = "cpu"
    if missing:
        accelerator, devices = local_devices(backend)
    peak = backend.cpu_device_peak_flops(devices) if accelerator == "cpu" else None
    with db.write() as session:
        pool = repo.get_pool(session, LOCAL_POOL)
        if pool is None:
            repo.add_pool(session, LOCAL_POOL, backend="local", accelerator=accelerator,
                          nodes=1, devices_per_node=devices, interconnect="loopback",
                          node_names=[socket.gethostname()], peak_flops=peak)
        elif pool.peak_flops is None:
            pool.peak_flops = peak


def open_embedded(url: str | None = None, home: Path | None = None,
                  grace_s: float = DEFAULT_GRACE_S,
                  extra_backends: dict[str, Backend] | None = None,
                  **policies: Any) -> SchedulerService:
    """A ready service over the embedded database with the local pool registered."""
    home = home or corral_home()
    prepare_home(home)
    for problem in audit_home(home):
        log.warning("%s", problem)
    db = Database(url or os.environ.get("CORRAL_DATABASE_URL")
                  or f"sqlite:///{home / 'corral.db'}")
    prepare_database(db)
    local = LocalBackend()
    ensure_local_pool(db, local)
    return SchedulerService(db, registry({"local": local, **(extra_backends or {})}),
                            runs_dir=home / "runs",
                            grace_s=grace_s, **policies)
