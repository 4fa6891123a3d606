"""Per-tenant submission limits over the REST API, on SQLite and PostgreSQL: a tenant over its
pending-job or per-minute limit gets 429 with Retry-After; other tenants go on submitting."""

from __future__ import annotations

from pathlib import Path

from scheduler.db.session import Database
from tests.builders import spec_dict
from tests.integration.api_support import Api, error_of


def _refused(api: Api, headers: dict[str, str]) -> tuple[str, int]:
    """Submit once more, expecting 429; the message and the Retry-After seconds."""
    answer = api.client.post("/v1/jobs", json={"spec": spec_dict()}, headers=headers)
    assert error_of(answer) == (429, "rate_limited"), answer.text
    retry_after = answer.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    return answer.json()["error"]["message"], int(retry_after)


def test_pending_job_limit_of_a_tenant(database: Database, tmp_path: Path) -> None:
    api = Api(database, tmp_path / "home")
    admin, team_a, team_b = api.token("ops", "admin"), api.token("team-a"), api.token("team-b")
    assert api.client.put("/v1/tenants/team-a", json={"max_pending_jobs": 2},
                          headers=admin).status_code == 200
    first = api.submit(team_a)
    api.submit(team_a)
    message, _ = _refused(api, team_a)
    assert "2 pending jobs, its limit is 2" in message
    for _ in range(3):
        api.submit(team_b)
    # Cancelling a pending job frees a place.
    assert api.client.post(f"/v1/jobs/{first}/cancel", headers=team_a).status_code == 200
    api.submit(team_a)
    _refused(api, team_a)


def test_submissions_per_minute_from_the_server_default(database: Database,
                                                        tmp_path: Path) -> None:
    api = Api(database, tmp_path / "home", submissions_per_minute=3)
    admin, team_a, team_b = api.token("ops", "admin"), api.token("team-a"), api.token("team-b")
    for _ in range(3):
        api.submit(team_a)
    message, retry_after = _refused(api, team_a)
    assert "3 jobs in the last 60 s" in message
    assert 1 <= retry_after <= 60
    # Another tenant has a budget of its own; a tenant's own limit overrides the default.
    for _ in range(3):
        api.submit(team_b)
    assert api.client.put("/v1/tenants/team-a", json={"submissions_per_minute": 10},
                          headers=admin).status_code == 200
    api.submit(team_a)


def test_a_zero_pending_limit_refuses_every_submission(database: Database,
                                                       tmp_path: Path) -> None:
    api = Api(database, tmp_path / "home")
    admin, member = api.token("ops", "admin"), api.token("team-a")
    api.client.put("/v1/tenants/team-a", json={"max_pending_jobs": 0}, headers=admin)
    _refused(api, member)
    api.submit(api.token("team-b"))
    zero_rate = api.client.put("/v1/tenants/team-a", json={"submissions_per_minute": 0},
                               headers=admin)
    assert error_of(zero_rate) == (422, "invalid_request")
    assert "body.submissions_per_minute" in zero_rate.json()["error"]["message"]
