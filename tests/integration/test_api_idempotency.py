"""Idempotent submission over the REST API, on SQLite and PostgreSQL: a retried request with
the same Idempotency-Key and spec answers with the first job, never a second one, even when the
retries race each other through a real HTTP server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from scheduler.db.models import IdempotencyKey, Job
from scheduler.db.session import Database
from tests.builders import spec_dict
from tests.integration.api_support import Api, error_of

CONCURRENT_CLIENTS = 8
SERVER_START_TIMEOUT_S = 20.0


@pytest.fixture
def api(database: Database, tmp_path: Path) -> Api:
    return Api(database, tmp_path / "home")


def _counts(api: Api) -> tuple[int, int]:
    """Jobs and idempotency keys stored."""
    with api.db.read() as session:
        jobs = session.scalar(select(func.count()).select_from(Job)) or 0
        keys = session.scalar(select(func.count()).select_from(IdempotencyKey)) or 0
    return jobs, keys


def test_a_replay_answers_with_the_first_job(api: Api) -> None:
    member = {**api.token("team-a"), "Idempotency-Key": "nightly-2026-01-01"}
    body = {"spec": spec_dict(name="nightly")}
    first = api.client.post("/v1/jobs", json=body, headers=member)
    again = api.client.post("/v1/jobs", json=body, headers=member)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["created"] is True and again.json()["created"] is False
    assert again.json()["id"] == first.json()["id"] and again.json()["name"] == "nightly"
    assert _counts(api) == (1, 1)


def test_a_key_reused_for_another_spec_is_a_conflict(api: Api) -> None:
    member = {**api.token("team-a"), "Idempotency-Key": "k-1"}
    first = api.client.post("/v1/jobs", json={"spec": spec_dict(seed=1)}, headers=member)
    assert first.status_code == 201
    other = api.client.post("/v1/jobs", json={"spec": spec_dict(seed=2)}, headers=member)
    assert error_of(other) == (409, "conflict")
    assert f"job {first.json()['id']}" in other.json()["error"]["message"]
    assert _counts(api) == (1, 1)


def test_keys_belong_to_a_tenant(api: Api) -> None:
    body = {"spec": spec_dict()}
    team_a = api.client.post("/v1/jobs", json=body,
                             headers={**api.token("team-a"), "Idempotency-Key": "same"})
    team_b = api.client.post("/v1/jobs", json=body,
                             headers={**api.token("team-b"), "Idempotency-Key": "same"})
    assert (team_a.status_code, team_b.status_code) == (201, 201)
    assert team_a.json()["id"] != team_b.json()["id"]
    assert _counts(api) == (2, 2)


@pytest.mark.parametrize("key", ["", " padded", "x" * 257, "tab\there"])
def test_a_malformed_key_is_refused(api: Api, key: str) -> None:
    answer = api.client.post("/v1/jobs", json={"spec": spec_dict()},
                             headers={**api.token("team-a"), "Idempotency-Key": key})
    assert error_of(answer) == (422, "invalid_request")
    assert "idempotency-key" in answer.json()["error"]["message"].lower()
    assert _counts(api) == (0, 0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _serving(api: Api) -> Iterator[str]:
    """A real uvicorn server for ``api`` on a free port of 127.0.0.1; its base URL."""
    server = uvicorn.Server(uvicorn.Config(api.app, host="127.0.0.1", port=_free_port(),
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=SERVER_START_TIMEOUT_S)


def test_concurrent_retries_with_one_key_make_one_job(api: Api) -> None:
    headers = {**api.token("team-a"), "Idempotency-Key": "burst"}
    body = {"spec": spec_dict(name="burst")}
    api.submit(api.token("team-a"))  # warm the cost model up, so the burst overlaps
    start = threading.Barrier(CONCURRENT_CLIENTS)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def submit(base_url: str) -> None:
        with httpx.Client(base_url=base_url, timeout=60.0) as client:
            start.wait()
            answer = client.post("/v1/jobs", json=body, headers=headers)
        with lock:
            answers.append(answer)

    with _serving(api) as base_url:
        threads = [threading.Thread(target=submit, args=(base_url,))
                   for _ in range(CONCURRENT_CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(answer.status_code for answer in answers) == \
        [200] * (CONCURRENT_CLIENTS - 1) + [201], [answer.text for answer in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert _counts(api) == (2, 1)
