"""Secret env values over the REST API: handed to the ranks, never returned (job, list,
events, explain, plan, logs), never logged, never echoed in an error."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from scheduler.domain.spec import SECRET_MASK
from tests.integration.api_support import error_of, sqlite_api, with_secret
from workers.backends.fake import FakeBackend

SECRET = "hf_Sup3rS3cretT0ken"


def test_a_secret_never_comes_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    backend = FakeBackend()
    with sqlite_api(tmp_path, backends={"fake": backend}) as api:
        member = api.token("team-a")
        spec = with_secret(SECRET)
        submitted = api.client.post("/v1/jobs", json={"spec": spec}, headers=member)
        assert submitted.status_code == 201, submitted.text
        job_id = submitted.json()["id"]
        api.service.tick()
        (launch,) = backend.launched
        assert launch.env["HF_TOKEN"] == SECRET  # the ranks get it
        log = Path(launch.log_path)
        log.write_text(f"logging in with {SECRET}\nHF_TOKEN={SECRET[:6]}")

        detail = api.client.get(f"/v1/jobs/{job_id}", headers=member)
        assert detail.json()["spec"]["env"] == {
            "HF_TOKEN": {"value": SECRET_MASK, "secret": True}, "PLAIN": "visible"}
        logs = api.client.get(f"/v1/jobs/{job_id}/logs", headers=member)
        assert logs.json()["data"] == f"logging in with {SECRET_MASK}\nHF_TOKEN="
        with log.open("a") as file:
            file.write(f"{SECRET[6:]} done\n")
        rest = api.client.get(f"/v1/jobs/{job_id}/logs",
                              params={"offset": logs.json()["offset"]}, headers=member)
        assert rest.json()["data"] == f"{SECRET_MASK} done\n"
        answers = [
            detail, logs, rest,
            api.client.get("/v1/jobs", params={"all": "true"}, headers=member),
            api.client.get(f"/v1/jobs/{job_id}/events", headers=member),
            api.client.get(f"/v1/jobs/{job_id}/explain", headers=member),
            api.client.post("/v1/plan", json={"spec": spec}, headers=member),
            api.client.get(f"/v1/jobs/{job_id}/logs", params={"max_bytes": 20},
                           headers=member),
            api.client.get(f"/v1/jobs/{job_id}/logs", params={"offset": 20, "max_bytes": 5},
                           headers=member),
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert SECRET not in answer.text and SECRET[:6] + SECRET[6:] not in answer.text
        assert "visible" in detail.text  # a plain value is shown: the check can see values
    assert caplog.records, "the app logged nothing: the log check would prove nothing"
    assert SECRET not in caplog.text


@pytest.mark.parametrize("env", [
    {"HF_TOKEN": {"value": SECRET, "secret": "perhaps"}},
    {"HF_TOKEN": {"value": SECRET, "secrett": True}},
    {"HF_TOKEN": {"secret": True, "note": SECRET}},
    {"1_TOKEN": {"value": SECRET}},
    {"CORRAL_TOKEN": {"value": SECRET}},
    {"HF_TOKEN": [SECRET]},
    {"HF_TOKEN": {"value": [SECRET]}},
])
def test_an_invalid_secret_entry_is_not_echoed(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture,
                                               env: dict[str, object]) -> None:
    caplog.set_level(logging.DEBUG)
    with sqlite_api(tmp_path) as api:
        spec = with_secret("unused")
        spec["env"] = env
        answer = api.client.post("/v1/jobs", json={"spec": spec}, headers=api.token("team-a"))
        assert error_of(answer) == (422, "invalid_spec")
        assert "env" in answer.json()["error"]["message"]
        assert SECRET not in answer.text
        plan = api.client.post("/v1/plan", json={"spec": spec}, headers=api.token("team-a"))
        assert error_of(plan) == (422, "invalid_spec") and SECRET not in plan.text
    assert SECRET not in caplog.text


def test_a_malformed_request_around_a_secret_is_not_echoed(tmp_path: Path) -> None:
    with sqlite_api(tmp_path) as api:
        member = api.token("team-a")
        extra = api.client.post("/v1/jobs", json={"spec": with_secret(SECRET),
                                                  "debug": SECRET}, headers=member)
        assert error_of(extra) == (422, "invalid_request") and SECRET not in extra.text
        not_a_spec = api.client.post("/v1/jobs", json={"spec": [SECRET]}, headers=member)
        assert error_of(not_a_spec) == (422, "invalid_request") and SECRET not in not_a_spec.text
        broken = api.client.post("/v1/jobs", content=f'{{"spec": "{SECRET}'.encode(),
                                 headers={**member, "Content-Type": "application/json"})
        assert error_of(broken) == (422, "invalid_request") and SECRET not in broken.text
