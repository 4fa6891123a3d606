"""Finding 5 (low severity), against a real server: a token in a query string stayed in the
access log; wrong tokens could be tried without end; /docs loaded scripts from a CDN; /metrics
showed members every tenant; an unreachable database printed a hundred lines of traceback.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from tests.integration.api_support import error_of
from tests.pg_server import free_port
from tests.security.conftest import Deployment
from tests.server_process import cli_env, corral, wait_for


def test_a_token_in_a_query_string_never_reaches_the_log(deployment: Deployment) -> None:
    token = f"crl_{secrets.token_urlsafe(32)}"
    with deployment.http() as http:
        for name in ("token", "access_token"):
            answer = http.get("/v1/jobs", params={name: token, "limit": "5"})
            assert error_of(answer) == (401, "unauthorized")
    # The requests are logged, with their parameters' names and without their values.
    wait_for(lambda: '"GET /v1/jobs?access_token=***&limit=*** HTTP/1.1" 401'
             in deployment.log(), timeout_s=10)
    log = deployment.log()
    assert '"GET /v1/jobs?token=***&limit=*** HTTP/1.1" 401' in log
    assert token not in log and token.removeprefix("crl_") not in log


def test_ten_wrong_tokens_throttle_that_address_and_no_other(deployment: Deployment) -> None:
    with deployment.http(f"crl_{secrets.token_urlsafe(32)}") as wrong:
        for _ in range(10):
            assert error_of(wrong.get("/v1/whoami")) == (401, "unauthorized")
        throttled = wrong.get("/v1/whoami")
    assert error_of(throttled) == (429, "rate_limited")
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert "10 unknown or revoked tokens within 60 s" in throttled.json()["error"]["message"]
    # The address is refused whatever it sends, the admin's own token included...
    with deployment.http(deployment.admin_token) as right_token_same_address:
        assert error_of(right_token_same_address.get("/v1/whoami")) == (429, "rate_limited")
    # ...while another address (127.0.0.2 reaches the loopback server too) is served.
    other_address = httpx.Client(
        base_url=deployment.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"),
        headers={"Authorization": f"Bearer {deployment.admin_token}"}, timeout=30)
    with other_address:
        assert other_address.get("/v1/whoami").json() == {"tenant": "ops", "role": "admin"}


def test_a_default_server_serves_no_docs_page_and_keeps_its_schema(
        deployment: Deployment) -> None:
    with deployment.http() as http:
        for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            answer = http.get(page)
            assert answer.status_code == 404, page
            assert "cdn." not in answer.text and "<script" not in answer.text
        assert http.get("/openapi.json").json()["info"]["title"] == "Corral"


def test_a_members_metrics_show_only_its_own_tenant(deployment: Deployment) -> None:
    member = deployment.member("team-a")
    deployment.member("team-b")
    with deployment.http(member) as as_member, \
            deployment.http(deployment.admin_token) as as_admin:
        mine, everyone = as_member.get("/metrics"), as_admin.get("/metrics")
    assert mine.status_code == everyone.status_code == 200
    assert 'corral_pending_jobs{tenant="team-a"} 0.0' in mine.text
    assert "team-b" not in mine.text and 'tenant="ops"' not in mine.text
    assert "corral_cycle_step_seconds" in mine.text  # the replica's own timings stay
    for tenant in ("team-a", "team-b", "ops"):
        assert f'corral_pending_jobs{{tenant="{tenant}"}}' in everyone.text


@pytest.mark.parametrize("command", ["server", "queue"])
def test_an_unreachable_database_is_one_error_line(command: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://nobody:hunter2@127.0.0.1:{port}/corral"
    if command == "server":
        done = corral(cli_env(tmp_path), "server", "--port", str(free_port()),
                      "--database-url", url.replace(":hunter2", ""), timeout_s=60)
        shown = f"postgresql+psycopg://nobody@127.0.0.1:{port}/corral"
    else:
        done = corral(cli_env(tmp_path, CORRAL_DATABASE_URL=url), "queue", timeout_s=60)
        shown = f"postgresql+psycopg://nobody:***@127.0.0.1:{port}/corral"
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: cannot reach the database at {shown}: "), lines[0]
    assert "Connection refused" in lines[0] and "hunter2" not in done.stderr + done.stdout
