"""Probes and auth-off mode on SQLite: /healthz, /readyz (ready, leader, a schema behind the
code), and a loopback server without tokens acting as admin of tenant ``default``."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.app import create_app
from api.settings import Settings
from scheduler.db.migrate import head_revision, upgrade
from scheduler.db.session import Database
from scheduler.replica import FAILING_AFTER_STEPS, Replica
from tests.builders import spec_dict
from tests.integration.api_support import error_of, sqlite_api


def test_health_and_readiness(tmp_path: Path) -> None:
    with sqlite_api(tmp_path) as api:
        assert api.client.get("/healthz").json() == {"status": "ok"}
        ready = api.client.get("/readyz")
        assert ready.json() == {"status": "ready", "database": "ok",
                                "schema": head_revision(), "leader": None}
        api.app.state.replica = SimpleNamespace(is_leader=True, failing=None)
        assert api.client.get("/readyz").json()["leader"] is True


def test_a_replica_whose_loop_keeps_failing_is_not_ready(tmp_path: Path) -> None:
    with sqlite_api(tmp_path) as api:
        replica = Replica(api.service, "replica-1", ttl_s=1.0, tick_interval_s=0.01)
        api.app.state.replica = replica

        def full_disk(fence: object = None) -> None:
            raise OSError(28, "No space left on device")

        api.service.tick = full_disk  # type: ignore[method-assign]
        stop = threading.Event()
        loop = threading.Thread(target=replica.run, args=(stop,))
        loop.start()
        try:
            deadline = time.monotonic() + 30
            while replica.failed_steps < FAILING_AFTER_STEPS:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            answer = api.client.get("/readyz")
        finally:
            stop.set()
            loop.join(30)
        assert error_of(answer) == (503, "unavailable")
        assert "No space left on device" in answer.json()["error"]["message"]


def test_not_ready_on_a_schema_behind_the_code(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(db, "0003")
    try:
        with TestClient(create_app(Settings(home=tmp_path, database_url=db.url))) as client:
            answer = client.get("/readyz")
            assert error_of(answer) == (503, "unavailable")
            assert "corral db upgrade" in answer.json()["error"]["message"]
            assert client.get("/healthz").status_code == 200
    finally:
        db.dispose()


def test_not_ready_without_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "corral.db"
    with TestClient(create_app(Settings(home=tmp_path,
                                        database_url=f"sqlite:///{missing}"))) as client:
        assert error_of(client.get("/readyz")) == (503, "unavailable")


def test_auth_off_acts_as_admin_of_default(tmp_path: Path) -> None:
    with sqlite_api(tmp_path, auth=False) as api:
        assert api.client.get("/v1/whoami").json() == {"tenant": "default", "role": "admin"}
        job = api.client.post("/v1/jobs", json={"spec": spec_dict()})
        other = api.client.post("/v1/jobs", json={"spec": spec_dict(tenant="team-b")})
        assert (job.status_code, other.status_code) == (201, 201)
        tenants = [item["tenant"] for item in api.client.get("/v1/jobs").json()["items"]]
        assert tenants == ["team-b", "default"]
        assert api.client.get("/v1/tenants").status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "corral.example.com"])
def test_auth_may_be_off_only_on_loopback(host: str) -> None:
    with pytest.raises(ValidationError, match="loopback"):
        Settings(auth=False, host=host)
    for loopback in ("127.0.0.1", "::1", "localhost"):
        assert Settings(auth=False, host=loopback).auth is False
