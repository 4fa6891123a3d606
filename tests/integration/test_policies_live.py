"""Quota, preemption and fair share live in the real service, on real databases."""

from __future__ import annotations

from sqlalchemy import select

from scheduler.db import repo
from scheduler.db.models import Quota, Tenant
from scheduler.domain.state import JobState
from scheduler.gangs.backend import GangPhase
from scheduler.service import SchedulerService
from tests.builders import make_spec
from workers.backends.fake import FakeBackend


def _moves(service: SchedulerService, job_id: int) -> list[str]:
    return [f"{e['from']}->{e['to']}" for e in service.describe(job_id)["events"] if e["to"]]


def test_a_higher_priority_job_preempts_once_and_the_victim_resumes_later(
        service: SchedulerService, fake_backend: FakeBackend) -> None:
    low = service.submit(make_spec(resources__pool="cpu", resources__devices=2))
    service.tick()
    assert service.job_state(low) is JobState.RUNNING
    high = service.submit(make_spec(name="urgent", resources__pool="cpu", resources__devices=2,
                                    resources__priority=10))
    service.tick()  # decides the preemption and signals the victim
    assert len(fake_backend.preempt_signals) == 1
    assert "preempting #1 (higher priority)" in service.describe(high)["pending_reason"]
    service.tick()  # the victim's gang stopped: requeued; the urgent job starts
    assert service.job_state(high) is JobState.RUNNING
    assert service.job_state(low) is JobState.PENDING
    assert "RUNNING->PREEMPTED" in _moves(service, low)
    assert "PREEMPTED->PENDING" in _moves(service, low)
    reasons = [e["reason"] for e in service.describe(low)["events"]]
    assert any(r.startswith("preempted for job #2 (urgent)") for r in reasons)
    for _ in range(3):
        service.tick()
    assert len(fake_backend.preempt_signals) == 1  # told once, never again
    fake_backend.finish(high, GangPhase.SUCCEEDED)
    service.tick()
    service.tick()
    assert service.job_state(low) is JobState.RUNNING  # resumes when the devices free up
    assert service.describe(low)["attempts"] == 2


def test_quota_rows_in_the_database_cap_a_tenant(service: SchedulerService) -> None:
    with service.db.write() as session:
        tenant = repo.get_or_create_tenant(session, "team-a")
        session.add(Quota(tenant_id=tenant.id, accelerator="cpu", nominal=1))
    first = service.submit(make_spec(name="a1", tenant="team-a", resources__pool="cpu",
                                     resources__devices=1))
    second = service.submit(make_spec(name="a2", tenant="team-a", resources__pool="cpu",
                                      resources__devices=1))
    service.tick()
    assert service.job_state(first) is JobState.RUNNING
    assert service.job_state(second) is JobState.PENDING
    reason = service.describe(second)["pending_reason"]
    assert "quota: team-a has 1/1 cpu, asks 1; no cohort to borrow from" in reason


def test_cohort_membership_lets_a_tenant_borrow(service: SchedulerService) -> None:
    with service.db.write() as session:
        for name in ("team-a", "team-b"):
            tenant = repo.get_or_create_tenant(session, name)
            tenant.cohort = "lab"
            session.add(Quota(tenant_id=tenant.id, accelerator="cpu", nominal=1))
    job = service.submit(make_spec(tenant="team-a", resources__pool="cpu", resources__devices=2))
    service.tick()
    assert service.job_state(job) is JobState.RUNNING
    admitted = [e["reason"] for e in service.describe(job)["events"] if e["to"] == "ADMITTED"]
    assert "borrows 1 from cohort lab" in admitted[0]
    with service.db.read() as session:
        assert session.scalar(select(Tenant.cohort).where(Tenant.name == "team-b")) == "lab"
