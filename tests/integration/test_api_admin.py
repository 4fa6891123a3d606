"""Admin routes over the REST API on SQLite: pools, nodes (cordon, drain, uncordon, as the
scheduler's snapshot then sees them), tenants, quotas and tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.db import repo
from scheduler.domain.state import JobState
from tests.integration.api_support import Api, bearer, error_of, sqlite_api
from workers.backends.fake import FakeBackend

GPU_POOL = {"name": "gpu", "backend": "fake", "accelerator": "H100-SXM", "nodes": 2,
            "devices_per_node": 8, "price_per_device_hour": 3.5, "peak_tflops": 900.0}


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def api(tmp_path: Path, backend: FakeBackend) -> Iterator[Api]:
    with sqlite_api(tmp_path, backends={"fake": backend}) as built:
        yield built


@pytest.fixture
def admin(api: Api) -> dict[str, str]:
    return api.token("ops", "admin")


def _schedulable(api: Api) -> dict[str, bool]:
    with api.db.read() as session:
        return {node.name: node.schedulable for pool in repo.load_pool_views(session)
                for node in pool.nodes}


def test_pools_are_added_and_listed(api: Api, admin: dict[str, str]) -> None:
    added = api.client.post("/v1/pools", json=GPU_POOL, headers=admin)
    assert added.status_code == 201, added.text
    assert added.json() == {"name": "gpu", "backend": "fake", "backend_settings": None,
                            "accelerator": "H100-SXM",
                            "nodes": 2, "devices_per_node": 8, "devices": 16, "free": 16,
                            "price_per_device_hour": 3.5, "planned_price": [3.5, "pool"],
                            "peak_flops": [9e14, "pool"]}
    listed = api.client.get("/v1/pools", headers=api.token("team-a")).json()["items"]
    assert [pool["name"] for pool in listed] == ["cpu", "gpu"]
    assert error_of(api.client.post("/v1/pools", json=GPU_POOL, headers=admin)) == \
        (409, "conflict")
    bad = api.client.post("/v1/pools", json={**GPU_POOL, "name": "tpu", "nodes": 0},
                          headers=admin)
    assert error_of(bad) == (422, "invalid_request") and "body.nodes" in bad.text
    nodes = api.client.get("/v1/nodes", params={"pool": "gpu"}, headers=admin).json()["items"]
    assert nodes == [{"name": f"gpu-{index}", "pool": "gpu", "devices": 8, "state": "ready"}
                     for index in range(2)]
    assert error_of(api.client.get("/v1/nodes", params={"pool": "tpu"}, headers=admin)) == \
        (404, "not_found")


def test_cordon_and_uncordon_a_node(api: Api, admin: dict[str, str]) -> None:
    cordoned = api.client.post("/v1/nodes/cpu-0/cordon", headers=admin)
    assert cordoned.json() == {"name": "cpu-0", "pool": "cpu", "devices": 2,
                               "state": "cordoned"}
    assert _schedulable(api) == {"cpu-0": False}
    member = api.token("team-a")
    job_id = api.submit(member)
    api.service.tick()
    assert api.service.job_state(job_id) is JobState.PENDING
    assert api.client.post("/v1/nodes/cpu-0/uncordon", headers=admin).json()["state"] == "ready"
    assert _schedulable(api) == {"cpu-0": True}
    api.service.tick()
    assert api.service.job_state(job_id) is JobState.RUNNING
    assert error_of(api.client.post("/v1/nodes/nowhere/cordon", headers=admin)) == \
        (404, "not_found")


def test_drain_stops_the_jobs_on_the_node(api: Api, admin: dict[str, str],
                                          backend: FakeBackend) -> None:
    job_id = api.submit(api.token("team-a"))
    api.service.tick()
    assert api.service.job_state(job_id) is JobState.RUNNING
    drained = api.client.post("/v1/nodes/cpu-0/drain", headers=admin)
    assert drained.json()["state"] == "draining"
    assert _schedulable(api) == {"cpu-0": False}
    api.service.tick()
    assert backend.preempt_signals == [f"fake:{job_id}:1"]
    api.service.tick()
    # Requeued, and nothing else can take it while the only node drains.
    assert api.service.job_state(job_id) is JobState.PENDING
    reasons = [event["reason"] for event in api.service.describe(job_id)["events"]]
    assert any("cpu-0 is draining" in reason for reason in reasons)


def test_tenants_are_created_changed_and_listed(api: Api, admin: dict[str, str]) -> None:
    made = api.client.put("/v1/tenants/research", json={"cohort": "lab", "weight": 2.0,
                                                         "max_pending_jobs": 10},
                          headers=admin)
    assert made.json() == {"name": "research", "cohort": "lab", "weight": 2.0,
                           "max_pending_jobs": 10, "submissions_per_minute": None,
                           "max_priority": None, "job_user": None, "data_roots": None,
                           "model_roots": None}
    # Fields left out stay; null clears.
    changed = api.client.put("/v1/tenants/research", json={"cohort": None, "max_priority": 7},
                             headers=admin).json()
    assert (changed["cohort"], changed["weight"], changed["max_pending_jobs"],
            changed["max_priority"]) == (None, 2.0, 10, 7)
    listed = api.client.get("/v1/tenants", headers=admin).json()["items"]
    assert [tenant["name"] for tenant in listed] == ["ops", "research"]
    trusted = api.client.put("/v1/tenants/research", json={
        "job_user": "nobody", "data_roots": ["/datasets/research/"], "model_roots": []},
        headers=admin).json()
    assert (trusted["job_user"], trusted["data_roots"], trusted["model_roots"]) == \
        ("nobody", ["/datasets/research"], [])
    for bad in ({"weight": 0}, {"weight": -1.0}, {"max_priority": 5000}, {"color": "red"},
                {"job_user": "no-such-user-here"}, {"job_user": "root; rm -rf /"},
                {"data_roots": ["relative"]}, {"data_roots": ["/"]},
                {"model_roots": ["/models/../etc"]}):
        assert error_of(api.client.put("/v1/tenants/research", json=bad, headers=admin)) == \
            (422, "invalid_request"), bad
    assert error_of(api.client.put("/v1/tenants/no%20spaces", json={}, headers=admin)) == \
        (422, "invalid_request")


def test_quotas_are_set_listed_and_deleted(api: Api, admin: dict[str, str]) -> None:
    tenant_quota = {"tenant": "research", "accelerator": "cpu", "nominal": 2,
                    "borrowing_limit": 1, "lending_limit": 1}
    assert api.client.put("/v1/quotas", json=tenant_quota, headers=admin).json() == {
        **tenant_quota, "cohort": None}
    cohort_quota = {"cohort": "lab", "accelerator": "cpu", "nominal": 4}
    assert api.client.put("/v1/quotas", json=cohort_quota, headers=admin).status_code == 200
    listed = api.client.get("/v1/quotas", headers=admin).json()["items"]
    assert [(row["tenant"], row["cohort"], row["nominal"]) for row in listed] == [
        ("research", None, 2), (None, "lab", 4)]
    for bad in ({**tenant_quota, "lending_limit": 3}, {**tenant_quota, "cohort": "lab"},
                {"accelerator": "cpu", "nominal": 1}, {**cohort_quota, "lending_limit": 1},
                {**tenant_quota, "nominal": -1}):
        assert error_of(api.client.put("/v1/quotas", json=bad, headers=admin)) == \
            (422, "invalid_request"), bad
    removed = api.client.delete("/v1/quotas", params={"tenant": "research",
                                                      "accelerator": "cpu"}, headers=admin)
    assert removed.json() == {"tenant": "research", "cohort": None, "accelerator": "cpu",
                              "deleted": True}
    again = api.client.delete("/v1/quotas", params={"tenant": "research", "accelerator": "cpu"},
                              headers=admin)
    assert error_of(again) == (404, "not_found")
    assert error_of(api.client.delete("/v1/quotas", params={"accelerator": "cpu"},
                                      headers=admin)) == (422, "invalid_request")
    assert [row["cohort"] for row in api.client.get("/v1/quotas",
                                                   headers=admin).json()["items"]] == ["lab"]


def test_tokens_are_issued_listed_and_revoked(api: Api, admin: dict[str, str]) -> None:
    issued = api.client.post("/v1/tokens", json={"tenant": "research", "name": "ci"},
                             headers=admin)
    assert issued.status_code == 201
    token = issued.json()
    assert token["token"].startswith("crl_") and token["role"] == "member"
    assert token["prefix"] == token["token"][:12] and token["revoked"] is False
    assert api.client.get("/v1/whoami", headers=bearer(token["token"])).json() == {
        "tenant": "research", "role": "member"}
    listed = api.client.get("/v1/tokens", headers=admin)
    assert token["token"] not in listed.text
    assert [(row["tenant"], row["name"]) for row in listed.json()["items"]] == [
        ("ops", "admin of ops"), ("research", "ci")]
    revoked = api.client.delete(f"/v1/tokens/{token['id']}", headers=admin)
    assert revoked.json()["revoked"] is True
    assert error_of(api.client.get("/v1/whoami", headers=bearer(token["token"]))) == \
        (401, "unauthorized")
    own_id = listed.json()["items"][0]["id"]
    assert error_of(api.client.delete(f"/v1/tokens/{own_id}", headers=admin)) == \
        (409, "conflict")
    assert error_of(api.client.delete("/v1/tokens/999", headers=admin)) == (404, "not_found")
    bad_role = api.client.post("/v1/tokens", json={"tenant": "research", "role": "root"},
                               headers=admin)
    assert error_of(bad_role) == (422, "invalid_request")
