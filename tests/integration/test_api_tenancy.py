"""Tenancy over the REST API, on SQLite and PostgreSQL: members see and touch only their own
tenant's jobs, admin routes are admins' only, tokens are checked, and a member cannot raise its
own tenant, priority or job state."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.db.session import Database
from tests.builders import spec_dict
from tests.integration.api_support import Api, bearer, error_of


@pytest.fixture
def api(database: Database, tmp_path: Path) -> Api:
    return Api(database, tmp_path / "home")


def _ids(api: Api, headers: dict[str, str], **params: str) -> list[int]:
    answer = api.client.get("/v1/jobs", params={"all": "true", **params}, headers=headers)
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def test_a_member_lists_only_its_own_tenants_jobs(api: Api) -> None:
    team_a, team_b, admin = api.token("team-a"), api.token("team-b"), api.token("ops", "admin")
    a_jobs = [api.submit(team_a), api.submit(team_a)]
    b_jobs = [api.submit(team_b)]
    assert _ids(api, team_a) == a_jobs[::-1]
    assert _ids(api, team_b) == b_jobs
    assert _ids(api, team_a, tenant="team-a") == a_jobs[::-1]
    assert error_of(api.client.get("/v1/jobs", params={"tenant": "team-b"}, headers=team_a)) \
        == (403, "forbidden")
    assert _ids(api, admin) == sorted(a_jobs + b_jobs, reverse=True)
    assert _ids(api, admin, tenant="team-b") == b_jobs


@pytest.mark.parametrize(("method", "suffix"), [
    ("GET", ""), ("POST", "/cancel"), ("GET", "/logs"), ("GET", "/events"), ("GET", "/explain"),
])
def test_another_tenants_job_answers_exactly_like_a_missing_one(api: Api, method: str,
                                                                suffix: str) -> None:
    team_a, team_b = api.token("team-a"), api.token("team-b")
    theirs = api.submit(team_a)
    missing = theirs + 1000
    foreign = api.client.request(method, f"/v1/jobs/{theirs}{suffix}", headers=team_b)
    absent = api.client.request(method, f"/v1/jobs/{missing}{suffix}", headers=team_b)
    assert foreign.status_code == absent.status_code == 404
    assert foreign.json() == {"error": {**absent.json()["error"], "message": absent.json()[
        "error"]["message"].replace(str(missing), str(theirs))}}
    # The job is untouched: still pending, visible to its owner.
    owner_view = api.client.get(f"/v1/jobs/{theirs}", headers=team_a).json()
    assert owner_view["state"] == "PENDING"


ADMIN_ROUTES = [
    ("GET", "/v1/tenants", None), ("PUT", "/v1/tenants/team-a", {"max_priority": 1000}),
    ("GET", "/v1/quotas", None),
    ("PUT", "/v1/quotas", {"tenant": "team-a", "accelerator": "cpu", "nominal": 2}),
    ("DELETE", "/v1/quotas?tenant=team-a&accelerator=cpu", None),
    ("GET", "/v1/tokens", None), ("POST", "/v1/tokens", {"tenant": "team-a", "role": "admin"}),
    ("DELETE", "/v1/tokens/1", None),
    ("POST", "/v1/pools", {"name": "gpu", "backend": "fake", "accelerator": "H100-SXM",
                           "nodes": 1, "devices_per_node": 8}),
    ("POST", "/v1/nodes/cpu-0/cordon", None), ("POST", "/v1/nodes/cpu-0/drain", None),
    ("POST", "/v1/nodes/cpu-0/uncordon", None),
    ("GET", "/v1/admin/calibration", None), ("DELETE", "/v1/admin/calibration", None),
]


def test_admin_routes_are_forbidden_to_members(api: Api) -> None:
    member = api.token("team-a")
    for method, path, body in ADMIN_ROUTES:
        answer = api.client.request(method, path, json=body, headers=member)
        assert error_of(answer) == (403, "forbidden"), (method, path)
    # Nothing changed: the node is schedulable, no pool or token was added.
    admin = api.token("ops", "admin")
    nodes = api.client.get("/v1/nodes", headers=admin).json()["items"]
    assert [(node["name"], node["state"]) for node in nodes] == [("cpu-0", "ready")]
    assert [pool["name"] for pool in api.client.get("/v1/pools", headers=admin).json()["items"]] \
        == ["cpu"]
    assert len(api.client.get("/v1/tokens", headers=admin).json()["items"]) == 2


def test_missing_wrong_and_revoked_tokens_are_unauthorized(api: Api) -> None:
    admin = api.token("ops", "admin")
    member = api.token("team-a")
    for headers in ({}, bearer("crl_not-a-token"), bearer("nonsense"),
                    {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
        answer = api.client.get("/v1/jobs", headers=headers)
        assert error_of(answer) == (401, "unauthorized"), headers
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert api.client.get("/v1/whoami", headers=member).json() == {"tenant": "team-a",
                                                                   "role": "member"}
    token_id = api.client.get("/v1/tokens", params={"tenant": "team-a"},
                              headers=admin).json()["items"][0]["id"]
    assert api.client.delete(f"/v1/tokens/{token_id}", headers=admin).json()["revoked"] is True
    assert error_of(api.client.get("/v1/whoami", headers=member)) == (401, "unauthorized")
    assert error_of(api.client.post("/v1/jobs", json={"spec": spec_dict()}, headers=member)) \
        == (401, "unauthorized")


def test_a_member_submits_only_for_its_own_tenant(api: Api) -> None:
    member, admin = api.token("team-a"), api.token("ops", "admin")
    other = api.client.post("/v1/jobs", json={"spec": spec_dict(tenant="team-b")},
                            headers=member)
    assert error_of(other) == (403, "forbidden")
    assert "team-b" in other.json()["error"]["message"]
    own = api.submit(member, tenant="team-a")
    for_b = api.submit(admin, tenant="team-b")
    default = api.submit(admin)
    tenants = {item["id"]: item["tenant"]
               for item in api.client.get("/v1/jobs", headers=admin).json()["items"]}
    assert tenants == {own: "team-a", for_b: "team-b", default: "default"}


def test_priority_above_the_tenants_cap_is_forbidden_to_members_only(api: Api) -> None:
    member, admin = api.token("team-a"), api.token("ops", "admin")
    capped = api.client.put("/v1/tenants/team-a", json={"max_priority": 5}, headers=admin)
    assert capped.status_code == 200 and capped.json()["max_priority"] == 5
    too_high = api.client.post("/v1/jobs", json={"spec": spec_dict(resources__priority=6)},
                               headers=member)
    assert error_of(too_high) == (403, "forbidden")
    assert "limit 5" in too_high.json()["error"]["message"]
    api.submit(member, resources__priority=5)
    api.submit(admin, tenant="team-a", resources__priority=900)
    # Without a tenant cap the server default (100) applies.
    api.client.put("/v1/tenants/team-a", json={"max_priority": None}, headers=admin)
    assert error_of(api.client.post("/v1/jobs", json={
        "spec": spec_dict(resources__priority=101)}, headers=member)) == (403, "forbidden")


@pytest.mark.parametrize("field", ["state", "plan", "tenant", "id", "priority"])
def test_fields_a_user_must_not_set_are_refused(api: Api, field: str) -> None:
    member = api.token("team-a")
    answer = api.client.post("/v1/jobs", json={"spec": spec_dict(), field: "RUNNING"},
                             headers=member)
    assert error_of(answer) == (422, "invalid_request")
    assert f"body.{field}: unknown field" in answer.json()["error"]["message"]
    assert _ids(api, member) == []
