"""Pools name their backend and its settings; nodes a backend discovers follow it; the
scheduler asks an artifact store, not the disk, whether a checkpoint is there (no Ray here:
its backend's own tests are tests/ray)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler import inventory
from scheduler.db import repo
from scheduler.db.models import Node
from scheduler.db.session import Database
from scheduler.domain.errors import BackendError, ConflictError, SpecError
from scheduler.gangs.artifacts import ArtifactStore
from scheduler.gangs.backend import GangPhase, NodeReport
from scheduler.gangs.protocol import EXIT_PREEMPTED, EXIT_SPEC_ERROR
from scheduler.gangs.registry import BackendRegistry
from workers.backends import ray as ray_backend
from workers.backends.fake import FakeBackend

RAY = {"address": "10.1.2.3:6379"}


def test_the_registry_builds_one_backend_per_pool_settings_and_keeps_it() -> None:
    built: list[dict[str, str]] = []

    def factory(settings):  # type: ignore[no-untyped-def]
        built.append(dict(settings))
        return FakeBackend()

    fixed = FakeBackend()
    registry = BackendRegistry({"fake": fixed}, {"ray": factory})
    first = registry.get("ray", RAY)
    assert registry.get("ray", dict(RAY)) is first
    other = registry.get("ray", {"address": "10.1.2.4:6379"})
    assert other is not first and built == [RAY, {"address": "10.1.2.4:6379"}]
    assert registry.get("fake", RAY) is fixed  # a ready-made backend serves every pool of it
    assert registry.get("kubernetes") is None
    with pytest.raises(BackendError, match="no backend 'kubernetes' here; pick one of fake, ray"):
        registry.check("kubernetes", {})


@pytest.mark.parametrize(("backend", "settings", "problem"), [
    ("ray", {}, "a ray pool needs address"),
    ("ray", {"address": "head:6379; rm -rf /"}, "is not of the form HOST:PORT"),
    ("ray", {"address": "x" * 300 + ":1"}, "is not of the form"),
    ("ray", {"address": "head:6379", "token": "t"}, "takes no setting 'token'; it takes address"),
    ("local", {"address": "head:6379"}, "backend local takes no setting 'address'"),
])
def test_pool_settings_are_an_allowlist(database: Database, backend: str,
                                        settings: dict[str, str], problem: str) -> None:
    with pytest.raises(SpecError, match=problem):
        inventory.add_pool(database, "p", backend, "cpu", 1, 1, backend_settings=settings)
    with database.read() as session:
        assert repo.list_pools(session) == []


def test_a_ray_pool_stores_its_address(database: Database) -> None:
    inventory.add_pool(database, "lab", "ray", "H100", 2, 8, backend_settings=RAY)
    with database.read() as session:
        pool = repo.get_pool(session, "lab")
        assert pool is not None and pool.backend_settings == RAY


def test_sync_makes_a_pool_per_accelerator_and_follows_nodes(database: Database) -> None:
    reports = [NodeReport("ray-aaaaaaaaaaaa", "H100", 8, True),
               NodeReport("ray-bbbbbbbbbbbb", "H100", 8, True),
               NodeReport("ray-cccccccccccc", "cpu", 16, True),
               NodeReport("ray-dddddddddddd", "cpu", 0, True)]  # a head with no CPU for tasks
    rows = inventory.sync_pools(database, "ray", RAY, reports, "ray", cpu_peak_tflops=0.5)
    assert {(row["pool"], row["node"], row["change"]) for row in rows} == {
        ("ray-h100", "ray-aaaaaaaaaaaa", "added"), ("ray-h100", "ray-bbbbbbbbbbbb", "added"),
        ("ray-cpu", "ray-cccccccccccc", "added")}
    with database.read() as session:
        cpu = repo.get_pool(session, "ray-cpu")
        assert cpu is not None and cpu.peak_flops == 0.5e12 and cpu.backend_settings == RAY
    # One H100 node died, another joined; the CPU node left.
    later = [NodeReport("ray-aaaaaaaaaaaa", "H100", 8, False),
             NodeReport("ray-bbbbbbbbbbbb", "H100", 8, True),
             NodeReport("ray-eeeeeeeeeeee", "H100", 4, True)]
    with database.write() as session:
        changed = {row["node"]: row["change"] for pool in repo.list_pools(session)
                   for row in inventory.refresh(session, pool, later)}
    assert changed == {"ray-aaaaaaaaaaaa": "down", "ray-eeeeeeeeeeee": "added",
                       "ray-cccccccccccc": "down"}
    with database.read() as session:
        states = dict(session.execute(select(Node.name, Node.state)).all())
    assert states["ray-aaaaaaaaaaaa"] == "down" and states["ray-eeeeeeeeeeee"] == "ready"
    # It comes back.
    with database.write() as session:
        pool = repo.get_pool(session, "ray-h100")
        assert pool is not None
        back = inventory.refresh(session, pool, [*later[1:], NodeReport(
            "ray-aaaaaaaaaaaa", "H100", 8, True)])
    assert [row["change"] for row in back] == ["back"]
    # Another cluster may not take over the same pool names.
    with pytest.raises(ConflictError, match="sync with another --prefix"):
        inventory.sync_pools(database, "ray", {"address": "10.9.9.9:6379"}, reports, "ray")


def test_the_artifact_store_checks_only_what_it_can_see(tmp_path: Path) -> None:
    there, gone = tmp_path / "step-10", tmp_path / "step-20"
    there.mkdir()
    local, remote = ArtifactStore.for_backend("local"), ArtifactStore.for_backend("ray")
    assert local.present(str(there)) is True and local.present(str(gone)) is False
    assert local.present(f"file://{there}") is True
    assert remote.present(str(there)) is None and remote.usable(str(gone))  # not its disk
    assert remote.present(f"memory://{gone}") is False  # a URI: checked through fsspec
    assert remote.present("nosuchprotocol://bucket/step-10") is None


def _state(exits: dict[int, int], **marks: object) -> dict:
    return {"exits": {str(rank): {"code": code, "at": float(rank)}
                      for rank, code in exits.items()},
            "ranks": {"0": {"node_id": "f" * 40}, "1": {"node_id": "e" * 40}},
            "marks": marks, "log_tail": "rank1: ValueError: bad batch\n"}


@pytest.mark.parametrize(("exits", "marks", "phase", "retryable", "words"), [
    ({0: 0, 1: 0}, {}, GangPhase.SUCCEEDED, True, "all ranks exited 0"),
    ({0: EXIT_PREEMPTED, 1: -signal.SIGTERM}, {}, GangPhase.PREEMPTED, True, "checkpointing"),
    ({0: 1, 1: EXIT_SPEC_ERROR}, {}, GangPhase.FAILED, False, "rank 1 found the job's spec"),
    ({0: 0, 1: 1}, {}, GangPhase.FAILED, True, "rank 1 exited with code 1 on Ray node eeee"),
    ({0: -signal.SIGKILL, 1: 0}, {}, GangPhase.FAILED, True, "rank 0 killed by SIGKILL"),
    ({0: -15, 1: -15}, {"cancel": {"killed": False, "grace_s": 30}}, GangPhase.CANCELLED,
     True, "stopped within the 30 s grace"),
])
def test_a_ray_gang_s_fate_from_its_ranks_exits(exits, marks, phase, retryable,  # type: ignore[no-untyped-def]
                                               words) -> None:
    status = ray_backend._ended(_state(exits, **marks), exits, 2)
    assert status.phase is phase and status.retryable is retryable
    assert words in status.reason


def test_a_ray_handle_is_checked() -> None:
    backend = ray_backend.RayBackend("127.0.0.1:1")
    with pytest.raises(BackendError, match="not a ray backend handle"):
        backend.poll(json.dumps({"backend": "local", "pid": 1}))
