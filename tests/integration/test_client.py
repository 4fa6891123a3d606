"""The SDK (api/client.py) against a real API server: uvicorn in a thread, real HTTP, a real
database (SQLite, then PostgreSQL), fake backends (nothing runs: no replica schedules)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.app import create_app
from api.client import (
    Conflict,
    CorralClient,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from api.settings import Settings
from scheduler import auth, tenants
from scheduler.service import SchedulerService
from tests.builders import spec_dict

FAST_RETRY_S = 0.01

@dataclass
class Api:
    url: str
    service: SchedulerService
    tokens: dict[str, str]
    """tenant -> a member token of that tenant"""

    def client(self, tenant: str, **options: object) -> CorralClient:
        return CorralClient(self.url, self.tokens[tenant], retry_backoff_s=FAST_RETRY_S,
                            **options)  # type: ignore[arg-type]


@pytest.fixture
def api(service: SchedulerService, tmp_path: Path) -> Iterator[Api]:
    """The app over ``service`` (fake pools cpu and h100) on a free loopback port."""
    settings = Settings(database_url=service.db.url, home=tmp_path / "home")
    app = create_app(settings, service)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.02)
    tokens = {tenant: auth.issue_token(service.db, tenant, "member", "test")[0]
              for tenant in ("team-a", "team-b")}
    try:
        yield Api(f"http://127.0.0.1:{listener.getsockname()[1]}", service, tokens)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


class DropFirstSubmitAnswer(httpx.HTTPTransport):
    """Delivers the first ``POST /v1/jobs`` to the server, lets it commit, then loses the answer
    as a dropped connection would; records every submission's Idempotency-Key."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/jobs":
            self.keys.append(request.headers["Idempotency-Key"])
            if len(self.keys) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset after the request was sent",
                                      request=request)
        return response


def test_a_submit_whose_answer_is_lost_is_retried_with_its_key_and_makes_one_job(
        api: Api) -> None:
    transport = DropFirstSubmitAnswer()
    with api.client("team-a", transport=transport) as client:
        answer = client.submit(spec_dict(name="once"))
        jobs = list(client.iter_jobs(all=True, name="once"))
    assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]
    assert answer["created"] is False  # the retry was answered with the first attempt's job
    assert [job["id"] for job in jobs] == [answer["id"]]
    assert jobs[0]["tenant"] == "team-a" and jobs[0]["state"] == "PENDING"


def test_the_same_key_replays_and_another_spec_under_it_conflicts(api: Api) -> None:
    with api.client("team-a") as client:
        first = client.submit(spec_dict(name="keyed"), idempotency_key="nightly-1")
        again = client.submit(spec_dict(name="keyed"), idempotency_key="nightly-1")
        with pytest.raises(Conflict) as conflict:
            client.submit(spec_dict(name="other"), idempotency_key="nightly-1")
    assert first["created"] is True and again == {**first, "created": False}
    assert conflict.value.status == 409 and conflict.value.code == "conflict"
    assert "use a new key for a new job" in str(conflict.value)


def test_a_rate_limited_submit_says_when_to_retry(api: Api) -> None:
    tenants.update_tenant(api.service.db, "team-a", {"submissions_per_minute": 1})
    with api.client("team-a") as client:
        client.submit(spec_dict(name="first"))
        with pytest.raises(RateLimited) as limited:
            client.submit(spec_dict(name="second"))
    error = limited.value
    assert error.status == 429 and error.code == "rate_limited"
    assert error.retry_after_s is not None and 1 <= error.retry_after_s <= 60
    assert "submitted 1 jobs in the last 60 s" in error.message


def test_another_tenants_job_is_not_found_exactly_like_a_missing_one(api: Api) -> None:
    with api.client("team-a") as owner:
        job_id = owner.submit(spec_dict(name="private"))["id"]
        assert owner.get_job(job_id)["name"] == "private"
    with api.client("team-b") as other:
        errors = []
        for attempt in (lambda: other.get_job(job_id), lambda: other.cancel_job(job_id),
                        lambda: other.logs(job_id), lambda: other.events(job_id)):
            with pytest.raises(NotFound) as found:
                attempt()
            errors.append(found.value)
        with pytest.raises(NotFound) as missing:
            other.get_job(job_id + 1000)
        assert [job["id"] for job in other.iter_jobs(all=True)] == []
    assert {(e.status, e.code) for e in errors} == {(404, "not_found")}
    assert str(errors[0]) == str(missing.value).replace(str(job_id + 1000), str(job_id))
    with api.client("team-a") as owner:
        assert owner.get_job(job_id)["state"] == "PENDING"  # the refused cancel changed nothing


def test_pages_of_jobs_come_newest_first_without_gaps(api: Api) -> None:
    with api.client("team-a") as client:
        made = [client.submit(spec_dict(name=f"job-{n}"))["id"] for n in range(5)]
        first = client.list_jobs(limit=2)
        listed = [job["id"] for job in client.iter_jobs(page_size=2)]
    assert [job["id"] for job in first["items"]] == made[::-1][:2]
    assert first["next_before_id"] == made[3]
    assert listed == made[::-1]


def test_a_wrong_token_and_an_unreachable_server_say_what_is_wrong(api: Api) -> None:
    with CorralClient(api.url, "crl_not-a-token") as client, pytest.raises(Unauthorized) as err:
        client.whoami()
    assert err.value.status == 401 and "unknown or revoked" in str(err.value)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()  # nothing listens there now
    with CorralClient(url, "crl_x", retry_backoff_s=FAST_RETRY_S) as client, \
            pytest.raises(Unavailable) as down:
        client.submit(spec_dict())
    assert down.value.status == 0 and down.value.code == "unreachable"
    assert str(down.value).startswith(f"cannot reach the Corral server at {url}: ")
    assert str(down.value).endswith("is `corral server` running?")
