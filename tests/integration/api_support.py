"""An API over a real database for the REST tests: the app, a client, tokens, job specs.

The app runs in-process behind Starlette's TestClient (real HTTP semantics: status codes,
headers, JSON bodies, the whole middleware stack), over the service the test builds.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from scheduler import auth
from scheduler.db import repo
from scheduler.db.migrate import upgrade
from scheduler.db.session import Database
from scheduler.gangs.backend import Backend
from scheduler.service import SchedulerService
from tests.builders import spec_dict


class Api:
    """The app over ``db``, with a CPU pool of 1 node × 2 devices on the ``fake`` backend."""

    def __init__(self, db: Database, home: Path, backends: dict[str, Backend] | None = None,
                 **settings: Any) -> None:
        self.db = db
        self.settings = Settings(home=home, database_url=db.url, **settings)
        self.service = SchedulerService(db, backends or {}, runs_dir=home / "runs", grace_s=1.0)
        self.app: FastAPI = create_app(self.settings, self.service)
        self.client = TestClient(self.app)
        with db.write() as session:
            if repo.get_pool(session, "cpu") is None:
                repo.add_pool(session, "cpu", "fake", "cpu", nodes=1, devices_per_node=2)

    def token(self, tenant: str, role: auth.Role = "member") -> dict[str, str]:
        """Headers carrying a fresh token of ``tenant`` with ``role``."""
        token, _row = auth.issue_token(self.db, tenant, role, f"{role} of {tenant}")
        return bearer(token)

    def submit(self, headers: dict[str, str], **overrides: Any) -> int:
        """Submit ``spec_dict(**overrides)``; the job's id (fails the test unless 201)."""
        answer = self.client.post("/v1/jobs", json={"spec": spec_dict(**overrides)},
                                  headers=headers)
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(answer: Any) -> tuple[int, str]:
    """(status, error code) of an error answer, checking the error body's shape."""
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return answer.status_code, body["error"]["code"]


def with_secret(value: str, name: str = "HF_TOKEN") -> dict[str, Any]:
    """A valid spec whose env holds ``value`` as a secret."""
    spec = copy.deepcopy(spec_dict())
    spec["env"] = {name: {"value": value, "secret": True}, "PLAIN": "visible"}
    return spec


@contextmanager
def sqlite_api(tmp_path: Path, **settings: Any) -> Iterator[Api]:
    """An :class:`Api` over a fresh, migrated SQLite file."""
    db = Database(f"sqlite:///{tmp_path / 'api.db'}")
    upgrade(db)
    try:
        yield Api(db, tmp_path / "home", **settings)
    finally:
        db.dispose()
