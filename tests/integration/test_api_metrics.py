"""``/metrics`` on SQLite: pending jobs per tenant, devices held per pool and tenant, the cycle's
step durations, and how far step-time predictions were from what jobs measured; an admin sees
every tenant, a member only its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import ApiMetrics
from scheduler.db import repo
from scheduler.db.models import Job
from tests.integration.api_support import Api, error_of, sqlite_api
from workers.backends.fake import FakeBackend


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with sqlite_api(tmp_path, backends={"fake": FakeBackend()}) as built:
        yield built


def _samples(api: Api, headers: dict[str, str]) -> dict[tuple[str, frozenset[tuple[str, str]]],
                                                         float]:
    answer = api.client.get("/metrics", headers=headers)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples}


def test_pending_jobs_and_allocated_devices_per_tenant(api: Api) -> None:
    team_a, team_b, admin = api.token("team-a"), api.token("team-b"), api.token("ops", "admin")
    running = api.submit(team_a, resources__devices=2)
    api.submit(team_b)
    api.submit(team_b)
    before = _samples(api, admin)
    assert before[("corral_pending_jobs", frozenset({("tenant", "team-a")}))] == 1
    assert before[("corral_pending_jobs", frozenset({("tenant", "team-b")}))] == 2
    assert not [key for key in before if key[0] == "corral_allocated_devices"]

    report = api.service.tick()
    assert report.started == [running]
    after = _samples(api, admin)
    assert after[("corral_pending_jobs", frozenset({("tenant", "team-a")}))] == 0
    assert after[("corral_pending_jobs", frozenset({("tenant", "team-b")}))] == 2
    assert after[("corral_allocated_devices",
                  frozenset({("pool", "cpu"), ("tenant", "team-a")}))] == 2
    assert error_of(api.client.get("/metrics")) == (401, "unauthorized")


def test_a_member_sees_only_its_own_tenants_jobs(api: Api) -> None:
    team_a, team_b = api.token("team-a"), api.token("team-b")
    running = api.submit(team_b, resources__devices=2)
    api.submit(team_a)
    assert api.service.tick().started == [running]
    tenants = {name: {dict(labels).get("tenant") for sample, labels in _samples(api, team_a)
                      if sample == name}
               for name in ("corral_pending_jobs", "corral_allocated_devices")}
    assert tenants == {"corral_pending_jobs": {"team-a"}, "corral_allocated_devices": set()}
    theirs = _samples(api, team_b)
    assert theirs[("corral_allocated_devices",
                   frozenset({("pool", "cpu"), ("tenant", "team-b")}))] == 2


def test_cycle_step_durations_from_observed_ticks(api: Api) -> None:
    metrics: ApiMetrics = api.app.state.metrics
    for _ in range(3):
        metrics.observe_tick(api.service.tick())
    samples = _samples(api, api.token("team-a"))
    steps = {dict(labels)["step"]: value for (name, labels), value in samples.items()
             if name == "corral_cycle_step_seconds_count"}
    assert steps == {"0_inventory": 3, "1_reconcile": 3, "2_snapshot": 3, "3_cycle": 3,
                     "4_commit_preempt": 3, "5_dispatch": 3}
    assert samples[("corral_cycle_step_seconds_bucket",
                    frozenset({("step", "3_cycle"), ("le", "+Inf")}))] == 3


def test_step_time_prediction_error_per_accelerator(api: Api) -> None:
    member = api.token("team-a")
    sampled, last_only, unmeasured = (api.submit(member) for _ in range(3))
    with api.db.write() as session:
        pool_id = repo.get_pool(session, "cpu").id  # type: ignore[union-attr]
        measured = {
            # The first report is start-up and left out: median of 0.1, 0.1, 0.3 is 0.1 s.
            sampled: dict(predicted_step_time_s=0.2, step_times_s=[5.0, 0.1, 0.3, 0.1]),
            last_only: dict(predicted_step_time_s=0.2, step_time_s=0.25),
            unmeasured: dict(predicted_step_time_s=0.2),
        }
        for job_id, fields in measured.items():
            job = session.get(Job, job_id)
            assert job is not None
            job.pool_id = pool_id
            for name, value in fields.items():
                setattr(job, name, value)
    samples = _samples(api, member)
    cpu = frozenset({("accelerator", "cpu")})
    assert samples[("corral_step_time_predictions", cpu)] == 2
    # |0.2 − 0.1| / 0.1 = 1.0 and |0.2 − 0.25| / 0.25 = 0.2: mean 0.6.
    assert samples[("corral_step_time_prediction_error_ratio", cpu)] == pytest.approx(0.6)
