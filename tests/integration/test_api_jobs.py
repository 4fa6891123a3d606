"""Jobs over the REST API on SQLite: submit, list and page, describe, events, explain, cancel,
logs by offset, dry-run plans, and the 422 answers for bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scheduler.db.models import Job
from scheduler.gangs.backend import GangPhase
from tests.builders import spec_dict
from tests.integration.api_support import Api, error_of, sqlite_api
from workers.backends.fake import FakeBackend


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with sqlite_api(tmp_path) as built:
        yield built


@pytest.fixture
def member(api: Api) -> dict[str, str]:
    return api.token("team-a")


def _jobs_in_db(api: Api) -> int:
    with api.db.read() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_submit_stores_the_job_before_replying(api: Api, member: dict[str, str]) -> None:
    answer = api.client.post("/v1/jobs", json={"spec": spec_dict(name="first")}, headers=member)
    assert answer.status_code == 201
    body = answer.json()
    assert body == {"id": body["id"], "name": "first", "state": "PENDING", "created": True}
    # Another connection sees the row at once: it was committed before the reply.
    with api.db.read() as session:
        job = session.get(Job, body["id"])
        assert job is not None and job.state == "PENDING" and job.model_profile is not None

    listed = api.client.get("/v1/jobs", headers=member).json()
    assert [item["id"] for item in listed["items"]] == [body["id"]]
    assert listed["items"][0]["tenant"] == "team-a"
    detail = api.client.get(f"/v1/jobs/{body['id']}", headers=member).json()
    assert detail["name"] == "first" and detail["spec"]["tenant"] == "team-a"
    assert [event["to"] for event in detail["events"]] == ["PENDING"]


def test_list_pages_newest_first_and_filters_by_state_and_name(api: Api,
                                                               member: dict[str, str]) -> None:
    ids = [api.submit(member, name=f"job-{index}") for index in range(5)]
    assert api.client.post(f"/v1/jobs/{ids[1]}/cancel", headers=member).status_code == 200

    live = [ids[4], ids[3], ids[2], ids[0]]
    first = api.client.get("/v1/jobs", params={"limit": 2}, headers=member).json()
    assert [item["id"] for item in first["items"]] == live[:2]
    assert first["next_before_id"] == live[1]
    second = api.client.get("/v1/jobs", params={"limit": 2, "before_id": live[1]},
                            headers=member).json()
    assert [item["id"] for item in second["items"]] == live[2:]
    third = api.client.get("/v1/jobs", params={"limit": 2, "before_id": live[3]},
                           headers=member).json()
    assert third == {"items": [], "next_before_id": None}

    every = api.client.get("/v1/jobs", params={"all": "true"}, headers=member).json()
    assert [item["id"] for item in every["items"]] == ids[::-1]
    assert every["next_before_id"] is None
    cancelled = api.client.get("/v1/jobs", params={"state": "CANCELLED"}, headers=member).json()
    assert [item["id"] for item in cancelled["items"]] == [ids[1]]
    both = api.client.get("/v1/jobs", params=[("state", "CANCELLED"), ("state", "PENDING")],
                          headers=member).json()
    assert len(both["items"]) == 5
    named = api.client.get("/v1/jobs", params={"name": "job-3"}, headers=member).json()
    assert [item["id"] for item in named["items"]] == [ids[3]]
    status, code = error_of(api.client.get("/v1/jobs", params={"state": "SLEEPING"},
                                           headers=member))
    assert (status, code) == (422, "invalid_request")


def test_events_explain_and_cancel_a_pending_job(api: Api, member: dict[str, str]) -> None:
    job_id = api.submit(member)
    explained = api.client.get(f"/v1/jobs/{job_id}/explain", headers=member).json()
    assert explained["id"] == job_id and explained["state"] == "PENDING"
    assert explained["last_decision"]["to"] == "PENDING"

    cancelled = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=member)
    assert cancelled.status_code == 200
    assert cancelled.json() == {"id": job_id, "state": "CANCELLED"}
    events = api.client.get(f"/v1/jobs/{job_id}/events", headers=member).json()["items"]
    assert [(event["from"], event["to"]) for event in events] == [
        (None, "PENDING"), ("PENDING", "CANCELLED")]
    assert "cancelled through the API" in events[-1]["reason"]
    explained = api.client.get(f"/v1/jobs/{job_id}/explain", headers=member).json()
    assert explained["last_decision"]["to"] == "CANCELLED"
    # Cancelling again changes nothing and is no error.
    assert api.client.post(f"/v1/jobs/{job_id}/cancel", headers=member).json()["state"] == \
        "CANCELLED"


def test_logs_page_by_byte_offsets_until_the_job_finishes(tmp_path: Path) -> None:
    backend = FakeBackend()
    with sqlite_api(tmp_path, backends={"fake": backend}) as api:
        member = api.token("team-a")
        job_id = api.submit(member)
        before = api.client.get(f"/v1/jobs/{job_id}/logs", headers=member).json()
        assert before == {"attempt": None, "latest_attempt": 0, "offset": 0, "data": "",
                          "finished": False}
        assert api.service.tick().started == [job_id]
        log = Path(backend.launched[0].log_path)
        log.write_text("step 1 loss 5.0\nstep 2 loss 4.0\n")

        first = api.client.get(f"/v1/jobs/{job_id}/logs", params={"max_bytes": 16},
                               headers=member).json()
        assert first == {"attempt": None, "latest_attempt": 1, "offset": 16,
                         "data": "step 1 loss 5.0\n", "finished": False}
        rest = api.client.get(f"/v1/jobs/{job_id}/logs", params={"offset": 16, "attempt": 1},
                              headers=member).json()
        assert (rest["data"], rest["offset"], rest["attempt"]) == ("step 2 loss 4.0\n", 32, 1)
        idle = api.client.get(f"/v1/jobs/{job_id}/logs", params={"offset": 32},
                              headers=member).json()
        assert (idle["data"], idle["offset"]) == ("", 32)

        with log.open("a") as file:
            file.write("done\n")
        backend.finish(job_id, GangPhase.SUCCEEDED)
        api.service.tick()
        last = api.client.get(f"/v1/jobs/{job_id}/logs", params={"offset": 32},
                              headers=member).json()
        assert (last["data"], last["offset"], last["finished"]) == ("done\n", 37, True)
        status, code = error_of(api.client.get(f"/v1/jobs/{job_id}/logs",
                                               params={"attempt": 2}, headers=member))
        assert (status, code) == (404, "not_found")


def test_plan_is_a_dry_run(api: Api, member: dict[str, str]) -> None:
    answer = api.client.post("/v1/plan", json={"spec": spec_dict()}, headers=member)
    assert answer.status_code == 200
    report = answer.json()
    assert report["best"]["pool"] == "cpu" and report["best"]["fits"] is True
    assert report["best"]["memory_explain"] and report["best"]["step_time_explain"]
    assert report["feasible"][0] == {**report["best"], "memory_explain": None,
                                     "step_time_explain": None}
    assert report["smallest_fix"] is None
    assert _jobs_in_db(api) == 0
    unfit = api.client.post("/v1/plan", json={"spec": spec_dict(resources__pool="tpu")},
                            headers=member)
    assert error_of(unfit) == (422, "unschedulable")
    assert "no pool matches" in unfit.json()["error"]["message"]


@pytest.mark.parametrize(("spec", "code", "words"), [
    (spec_dict(resources__devices=0), "invalid_spec", "resources.devices"),
    (spec_dict(work__steps=None), "invalid_spec", "work.steps or work.tokens"),
    (spec_dict(optimizer__lr="fast"), "invalid_spec", "optimizer.lr"),
    (spec_dict(data={"source": "file", "path": "corpus.txt"}), "invalid_spec",
     "must use an absolute path"),
    (spec_dict(resources__devices=16), "unschedulable", "resources.devices"),
    (spec_dict(model__config__num_attention_heads=0), "invalid_spec", "model"),
])
def test_an_invalid_spec_is_refused_naming_the_field(api: Api, member: dict[str, str],
                                                     spec: dict[str, object], code: str,
                                                     words: str) -> None:
    answer = api.client.post("/v1/jobs", json={"spec": spec}, headers=member)
    assert error_of(answer) == (422, code)
    assert words in answer.json()["error"]["message"]
    assert _jobs_in_db(api) == 0


def test_malformed_requests_are_invalid_requests(api: Api, member: dict[str, str]) -> None:
    unknown = api.client.post("/v1/jobs", json={"spec": spec_dict(), "priority": 5},
                              headers=member)
    assert error_of(unknown) == (422, "invalid_request")
    assert "body.priority: unknown field" in unknown.json()["error"]["message"]
    missing = api.client.post("/v1/jobs", json={}, headers=member)
    assert error_of(missing) == (422, "invalid_request")
    assert "body.spec" in missing.json()["error"]["message"]
    broken = api.client.post("/v1/jobs", content=b'{"spec": {', headers={
        **member, "Content-Type": "application/json"})
    assert error_of(broken) == (422, "invalid_request")
    assert "malformed JSON" in broken.json()["error"]["message"]
    not_a_number = api.client.post("/v1/jobs", content=b'{"spec": {"seed": NaN}}', headers={
        **member, "Content-Type": "application/json"})
    assert error_of(not_a_number) == (422, "invalid_spec")
    assert error_of(api.client.get("/v1/jobs/999", headers=member)) == (404, "not_found")
    assert error_of(api.client.get("/v1/jobs/0", headers=member)) == (422, "invalid_request")
    assert _jobs_in_db(api) == 0
