"""The scheduler service over a real database, with a fake backend standing in for GPU pools."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scheduler.db import repo
from scheduler.db.models import Job, JobEvent, utcnow
from scheduler.domain.errors import SpecError, UnschedulableError
from scheduler.domain.plan import Plan, Strategy
from scheduler.domain.state import JobState
from scheduler.gangs.backend import BackendLog, FileLog, GangPhase
from scheduler.gangs.protocol import EXIT_PREEMPTED, append_progress
from scheduler.service import SchedulerService
from tests.builders import make_spec
from workers.backends.fake import FakeBackend


def _job_count(service: SchedulerService) -> int:
    with service.db.read() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def _moves(service: SchedulerService, job_id: int) -> list[str]:
    with service.db.read() as session:
        return [f"{e.from_state}->{e.to_state}" for e in repo.events(session, job_id) if e.to_state]


def test_submit_admit_run_succeed(service: SchedulerService, fake_backend: FakeBackend) -> None:
    job_id = service.submit(
        make_spec(resources__pool="cpu", resources__devices=2, batch__micro_batch=1)
    )
    report = service.tick()
    assert report.started == [job_id]
    (request,) = fake_backend.launched
    job_file = request.job
    assert job_file is not None
    plan = Plan.from_dict(job_file.plan)
    assert (plan.strategy, plan.world_size, plan.micro_batch, plan.grad_accum) == (
        Strategy.DDP,
        2,
        1,
        2,
    )
    assert request.world_size == 2 and job_file.resume_from is None
    assert service.describe(job_id)["devices"] == {"cpu-0": [0, 1]}

    fake_backend.finish(job_id, GangPhase.SUCCEEDED)
    assert service.tick().ended == {job_id: "SUCCEEDED"}
    info = service.describe(job_id)
    assert info["devices"] == {}
    assert _moves(service, job_id) == [
        "None->PENDING",
        "PENDING->ADMITTED",
        "ADMITTED->RUNNING",
        "RUNNING->SUCCEEDED",
    ]


def test_pending_job_says_why(service: SchedulerService) -> None:
    first = service.submit(make_spec(resources__pool="cpu", resources__devices=2))
    second = service.submit(make_spec(resources__pool="cpu", resources__devices=1))
    service.tick()
    assert service.job_state(first) is JobState.RUNNING
    reason = service.describe(second)["pending_reason"]
    assert "waiting for 1 devices in pool cpu (" in reason and "0/2 free" in reason


def test_progress_is_ingested_and_failure_retries_from_checkpoint(
    service: SchedulerService, fake_backend: FakeBackend
) -> None:
    job_id = service.submit(make_spec(resources__pool="cpu", resources__devices=1))
    service.tick()
    run_dir = Path(service.describe(job_id)["run_dir"])
    checkpoint = run_dir / "checkpoints" / "step-00000002"
    checkpoint.mkdir(parents=True)
    progress = run_dir / "progress.jsonl"
    append_progress(progress, "step", step=2, loss=3.5, tokens_per_s=100.0, step_time_s=0.1)
    append_progress(progress, "checkpoint", step=2, path=str(checkpoint))
    fake_backend.finish(job_id, GangPhase.FAILED, 1, "rank 1 killed by SIGKILL")
    service.tick()  # settles the failure and requeues
    info = service.describe(job_id)
    assert (info["step"], info["loss"]) == (2, 3.5)
    assert info["checkpoints"] == [{"step": 2, "path": str(checkpoint), "exists": True}]
    assert "RUNNING->FAILED" in _moves(service, job_id)
    assert service.job_state(job_id) in (JobState.PENDING, JobState.RUNNING)
    if service.job_state(job_id) is JobState.PENDING:
        service.tick()
    second = fake_backend.launched[-1]
    assert second.attempt == 2
    assert second.job is not None and second.job.resume_from == str(checkpoint)


def test_a_requeued_job_forgets_the_gang_of_its_last_attempt(
    service: SchedulerService, fake_backend: FakeBackend
) -> None:
    job_id = service.submit(make_spec(resources__pool="cpu", resources__devices=1))
    service.tick()
    fake_backend.finish(job_id, GangPhase.FAILED, 1, "rank 0 exited 1")
    fake_backend.fail_launch = True  # the retry waits ADMITTED-free, as after a lost dispatch
    with service.db.write() as session:
        job = repo.get_job(session, job_id, lock=True)
        assert job.backend_handle == f"fake:{job_id}:1"
    service.reconciler.reconcile()
    with service.db.read() as session:
        job = repo.get_job(session, job_id)
        assert (job.state, job.backend_handle) == (JobState.PENDING.value, None)
    fake_backend.fail_launch = False
    service.tick()
    service.tick()  # the old gang is not polled again: the second attempt keeps running
    assert service.job_state(job_id) is JobState.RUNNING
    assert fake_backend.launched[-1].attempt == 2
    reasons = [event["reason"] for event in service.describe(job_id)["events"]]
    assert not any("unknown gang" in reason for reason in reasons)


def test_gives_up_after_max_attempts(service: SchedulerService, fake_backend: FakeBackend) -> None:
    job_id = service.submit(make_spec(resources__pool="cpu", resources__max_attempts=2))
    for _ in range(2):
        service.tick()
        fake_backend.finish(job_id, GangPhase.FAILED, 3, "boom")
    service.tick()
    assert service.job_state(job_id) is JobState.FAILED
    assert len(fake_backend.launched) == 2
    events = [e["reason"] for e in service.describe(job_id)["events"]]
    assert any("gave up after 2 failures" in reason for reason in events)


def test_preempted_gang_is_requeued(service: SchedulerService, fake_backend: FakeBackend) -> None:
    job_id = service.submit(make_spec(resources__pool="cpu"))
    service.tick()
    fake_backend.finish(job_id, GangPhase.PREEMPTED, EXIT_PREEMPTED)
    service.tick()
    assert "RUNNING->PREEMPTED" in _moves(service, job_id)
    assert "PREEMPTED->PENDING" in _moves(service, job_id)


def test_cancel_pending_and_running(service: SchedulerService, fake_backend: FakeBackend) -> None:
    running = service.submit(make_spec(resources__pool="cpu", resources__devices=2))
    waiting = service.submit(make_spec(resources__pool="cpu", resources__devices=2))
    service.tick()
    assert service.cancel(waiting) == "CANCELLED"
    assert service.cancel(running) == "CANCELLED"
    assert service.describe(running)["devices"] == {}
    assert service.cancel(running) == "CANCELLED"  # idempotent


def test_launch_failure_fails_and_retries(
    service: SchedulerService, fake_backend: FakeBackend
) -> None:
    fake_backend.fail_launch = True
    job_id = service.submit(make_spec(resources__pool="cpu", resources__max_attempts=1))
    service.tick()
    assert service.job_state(job_id) is JobState.FAILED
    assert "launch failed: fake backend told to refuse launches" in str(
        service.describe(job_id)["events"]
    )
    assert service.describe(job_id)["devices"] == {}


def test_multi_node_gang_on_gpu_pool(service: SchedulerService, fake_backend: FakeBackend) -> None:
    job_id = service.submit(
        make_spec(resources__accelerator="h100-sxm", resources__devices=16, batch__global_batch=32)
    )
    service.tick()
    (request,) = fake_backend.launched
    assert request.nodes == 2 and sorted(request.devices) == ["h100-0", "h100-1"]
    assert service.job_state(job_id) is JobState.RUNNING


BAD_REQUESTS = [
    (
        {"resources__devices": 17, "resources__pool": "h100"},
        UnschedulableError,
        "can run a gang of at most 16",
    ),
    ({"resources__pool": "tpu"}, UnschedulableError, "unknown pool 'tpu'"),
    ({"resources__accelerator": "TPU-v5p"}, UnschedulableError, "no pool has accelerator"),
    (
        {"data__source": "file", "data__path": "/nonexistent/corpus.txt"},
        SpecError,
        "data.path: /nonexistent/corpus.txt does not exist",
    ),
]


@pytest.mark.parametrize(("overrides", "error", "message"), BAD_REQUESTS)
def test_impossible_requests_are_rejected_and_nothing_is_stored(
    service: SchedulerService, overrides: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        service.submit(make_spec(**overrides))
    assert _job_count(service) == 0


def test_admitted_job_whose_scheduler_died_is_taken_back(
    service: SchedulerService, fake_backend: FakeBackend
) -> None:
    job_id = service.submit(make_spec(resources__pool="cpu", resources__devices=2))
    with service.db.write() as session:  # a scheduler admitted it, then died before launching
        job = repo.get_job(session, job_id)
        nodes = repo.load_pool_views(session)[0].nodes
        repo.allocate(session, job, [(nodes[0].node_id, 0), (nodes[0].node_id, 1)])
        event = repo.transition(session, job, JobState.ADMITTED, "admitted by a dead scheduler")
        event.time = utcnow() - timedelta(minutes=10)
    service.tick()
    assert "ADMITTED->FAILED" in _moves(service, job_id)
    assert service.job_state(job_id) is JobState.RUNNING
    assert len(fake_backend.launched) == 1
    with service.db.read() as session:
        reasons = [e.reason for e in session.query(JobEvent).filter_by(job_id=job_id)]
    assert any("not launched within 120 s" in reason for reason in reasons)


LLAMA_1B = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
            "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 8,
            "intermediate_size": 5632, "tie_word_embeddings": False}


def test_admission_uses_the_cost_models_best_plan(service: SchedulerService,
                                                   fake_backend: FakeBackend) -> None:
    spec = make_spec(resources__pool="h100", resources__devices=8, batch__global_batch=32,
                     data__seq_len=2048, precision="bf16")
    job_id = service.submit(spec, LLAMA_1B)
    service.tick()
    (request,) = fake_backend.launched
    assert request.job is not None
    plan = Plan.from_dict(request.job.plan)
    assert plan.world_size == 8 and plan.global_batch == 32
    with service.db.read() as session:
        job = repo.get_job(session, job_id)
        assert job.model_profile is not None and job.model_profile["layers"] == 16
        assert job.predicted_step_time_s is not None and job.predicted_step_time_s > 0
    admitted = [e for e in service.describe(job_id)["events"] if e["to"] == "ADMITTED"]
    assert "predicted" in admitted[0]["reason"]
    assert admitted[0]["detail"]["prediction"]["memory_bytes"] > 0


def test_a_model_that_fits_no_pool_is_refused_at_submit(service: SchedulerService) -> None:
    huge = dict(LLAMA_1B, hidden_size=16384, num_hidden_layers=126, num_attention_heads=128,
                intermediate_size=53248)
    with pytest.raises(UnschedulableError, match="fits no pool: needs .* GiB per device"):
        service.submit(make_spec(resources__devices=1, data__seq_len=8192), huge)
    assert _job_count(service) == 0


def test_a_log_is_read_through_the_backend_that_ran_its_attempt(
    service: SchedulerService, fake_backend: FakeBackend
) -> None:
    job_id = service.submit(make_spec(resources__pool="cpu", resources__devices=1))
    assert service.log_source(job_id) is None  # not started
    service.tick()
    Path(fake_backend.launched[-1].log_path).write_text("hello from rank 0\n")
    source = service.log_source(job_id)
    assert isinstance(source, BackendLog) and source.read(6, 4) == b"from"
    assert source.size() == len("hello from rank 0\n")
    # A replica without that backend: the file the service recorded.
    api_only = SchedulerService(service.db, {}, runs_dir=service.runs_dir,
                                records_dir=service.records_dir)
    fallback = api_only.log_source(job_id, attempt=1)
    assert isinstance(fallback, FileLog) and fallback.read(0, 5) == b"hello"
