"""The Ray backend on a real multi-node Ray cluster: gangs across raylets, cancel, preemption
with a bitwise-equal resume, a raylet lost mid-run, a fail-over, and the cluster gone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from api.embedded import open_embedded
from scheduler.db import repo
from scheduler.db.models import Node
from scheduler.domain.state import JobState
from scheduler.service import SchedulerService
from tests.ray.conftest import (
    CANARIES,
    CPU_PEAK_TFLOPS,
    RayCluster,
    at_step,
    in_state,
    start_cluster,
    step_losses,
    stop_all,
    tick_until,
    tiny_spec,
)
from workers.backends import ray as ray_backend

pytestmark = pytest.mark.ray


def _handle(job: dict) -> dict:
    started = [event for event in job["events"] if event["to"] == "RUNNING"]
    return json.loads(started[-1]["detail"]["handle"])


def _processes(*parts: bytes) -> list[int]:
    """Live processes whose command line holds every one of ``parts``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if all(part in command for part in parts):
            found.append(int(entry))
    return found


def _rank_processes(job_file_part: str) -> list[int]:
    """The ranks whose job file's path holds ``job_file_part``."""
    return _processes(job_file_part.encode(), b"workers.jobs.run")


def test_pools_follow_the_cluster_nodes_by_accelerator(
        ray_service: SchedulerService, ray_cluster: RayCluster) -> None:
    pools = {pool["name"]: pool for pool in ray_service.pools()}
    assert pools["ray-cpu"]["backend"] == "ray" and pools["ray-cpu"]["devices"] == 2
    gpu_node = ray_cluster.cluster.add_node(num_cpus=1, num_gpus=2, node_ip_address="127.0.0.1",
                                            include_dashboard=False,
                                            resources={"accelerator_type:H100": 1})
    ray_cluster.cluster.wait_for_nodes()
    rows = ray_service.sync_pools("ray", {"address": ray_cluster.address}, "ray",
                                  CPU_PEAK_TFLOPS)
    added = [row for row in rows if row["pool"] == "ray-h100"]
    assert [(row["devices"], row["state"], row["change"]) for row in added] == \
        [(2, "ready", "added")]
    assert {pool["name"]: pool["devices"] for pool in ray_service.pools()}["ray-h100"] == 2
    # The node leaves: the scheduler's own refresh marks it down (no new gangs on it).
    ray_cluster.cluster.remove_node(gpu_node)
    ray_service.ticker._next_inventory = float("-inf")
    ray_service.tick()
    with ray_service.db.read() as session:
        state = session.scalar(select(Node.state).where(Node.name == added[0]["node"]))
    assert state == "down"


def test_a_ddp_gang_spans_two_raylets_and_its_loss_falls(
        ray_service: SchedulerService) -> None:
    job_id = ray_service.submit(tiny_spec(steps=30))
    job = tick_until(ray_service, job_id, in_state(JobState.SUCCEEDED, JobState.FAILED))
    assert job["state"] == "SUCCEEDED", job["events"][-3:]
    assert job["step"] == 30 and job["loss"] < job["first_loss"] - 1.0
    assert len(_handle(job)["nodes"]) == 2  # one rank on each one-CPU raylet
    log = ray_service.log_source(job_id)
    assert log is not None
    text = log.read(0, log.size()).decode()
    assert "step 30/30" in text and "rank0" in text
    # Progress came back through the backend: rank 0's checkpoints are recorded.
    assert [checkpoint["step"] for checkpoint in job["checkpoints"]][-1] == 30


def test_cancel_stops_every_rank_and_frees_the_bundles(
        ray_service: SchedulerService) -> None:
    job_id = ray_service.submit(tiny_spec(steps=5000, interval=1000))
    tick_until(ray_service, job_id, at_step(2))
    ranks = _rank_processes(f"job-{job_id}/attempt-1.rank-")
    assert len(ranks) == 2
    for pid in ranks:  # nothing of the service's or of Ray's environment reaches a rank
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not [item for item in environ if b"CANARY" in item or item.startswith(b"RAY_")]
        assert any(item.startswith(b"RANK=") for item in environ)
    hosts = _processes(b"ray::RankHost")  # the rank hosts' own environment has them
    assert hosts and all(b"CORRAL_CANARY_SECRET=db-password-1" in Path(
        f"/proc/{pid}/environ").read_bytes() for pid in hosts), CANARIES
    assert ray_service.cancel(job_id) == "CANCELLED"
    assert _rank_processes(f"job-{job_id}/attempt-1.rank-") == []
    # The bundles are free again: the next gang places at once.
    second = ray_service.submit(tiny_spec(steps=2))
    job = tick_until(ray_service, second, in_state(JobState.SUCCEEDED, JobState.FAILED))
    assert job["state"] == "SUCCEEDED"


def test_preempted_gang_checkpoints_requeues_and_resumes_bitwise(
        ray_service: SchedulerService) -> None:
    steps = 40
    reference = ray_service.submit(tiny_spec(steps=steps, name="reference"))
    done = tick_until(ray_service, reference, in_state(JobState.SUCCEEDED, JobState.FAILED))
    assert done["state"] == "SUCCEEDED"
    stopped = ray_service.submit(tiny_spec(steps=steps, name="stopped"))
    tick_until(ray_service, stopped, at_step(12))
    with ray_service.db.write() as session:  # what the cycle does for a higher-priority job
        repo.get_job(session, stopped, lock=True).preempt_requested = True
    job = tick_until(ray_service, stopped, in_state(JobState.SUCCEEDED, JobState.FAILED))
    assert job["state"] == "SUCCEEDED", job["events"][-4:]
    reasons = [event["reason"] for event in job["events"]]
    assert "preempted: the gang checkpointed and stopped" in reasons
    assert job["attempts"] == 2
    first, second = step_losses(job["run_dir"], 1), step_losses(job["run_dir"], 2)
    resumed_at = min(second) - 1
    assert 12 <= resumed_at < steps and max(first) >= resumed_at
    expected = step_losses(done["run_dir"])
    assert {**first, **second} == {step: expected[step] for step in expected}  # bitwise


def test_a_lost_raylet_fails_the_gang_naming_the_node_and_the_job_resumes(
        ray_service: SchedulerService, ray_cluster: RayCluster) -> None:
    spare = ray_cluster.add_cpu_node()  # room for the retry once one raylet is gone
    ray_service.sync_pools("ray", {"address": ray_cluster.address}, "ray", CPU_PEAK_TFLOPS)
    job_id = ray_service.submit(tiny_spec(steps=60))
    job = tick_until(ray_service, job_id, at_step(14))
    victim = _handle(job)["nodes"][0]
    assert not ray_cluster.is_head(victim)  # ranks only on workers; the keeper on the head
    ray_cluster.cluster.remove_node(ray_cluster.node_by_id(victim), allow_graceful=False)
    job = tick_until(ray_service, job_id, in_state(JobState.SUCCEEDED, JobState.FAILED),
                     timeout_s=300)
    assert job["state"] == "SUCCEEDED", job["events"][-4:]
    reasons = [event["reason"] for event in job["events"]]
    lost = [reason for reason in reasons if "lost on Ray node" in reason]
    assert lost and victim[:12] in lost[0]
    assert any("resumes from checkpoint" in reason for reason in reasons), reasons
    assert job["attempts"] == 2
    assert _handle(job)["nodes"] and victim not in _handle(job)["nodes"]
    del spare


def test_a_new_scheduler_adopts_a_running_gang(
        tmp_path: Path, ray_cluster: RayCluster) -> None:
    home = tmp_path / "home"
    first = open_embedded(home=home)
    first.sync_pools("ray", {"address": ray_cluster.address}, "ray", CPU_PEAK_TFLOPS)
    job_id = first.submit(tiny_spec(steps=30))
    tick_until(first, job_id, at_step(3))
    first.backends.close()  # the leader dies: its Ray driver with it; the gang runs on
    second = open_embedded(home=home)
    try:
        job = tick_until(second, job_id, in_state(JobState.SUCCEEDED, JobState.FAILED))
        assert job["state"] == "SUCCEEDED" and job["attempts"] == 1, [
            event["reason"] for event in job["events"]]
        log = second.log_source(job_id)
        assert log is not None and b"step 30/30" in log.read(0, log.size())
    finally:
        stop_all(second)


def test_a_cluster_that_is_gone_is_a_clear_error_and_loses_no_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_backend, "CONNECT_TIMEOUT_S", 8.0)
    monkeypatch.setattr(ray_backend, "CALL_TIMEOUT_S", 8.0)
    monkeypatch.setattr(ray_backend, "RETRY_AFTER_S", 0.0)
    doomed = start_cluster(workers=2)
    service = open_embedded(home=tmp_path / "home")
    try:
        service.sync_pools("ray", {"address": doomed.address}, "ray", CPU_PEAK_TFLOPS)
        running = service.submit(tiny_spec(steps=5000, interval=1000, devices=1))
        tick_until(service, running, at_step(1))
    finally:
        doomed.cluster.shutdown()
    service.tick()  # polls a gang on a cluster that is gone: no exception, nothing lost
    assert service.job_state(running) is JobState.RUNNING
    assert "Ray cluster at" in service.reconciler.unreachable[running]
    waiting = service.submit(tiny_spec(steps=5, devices=1))  # the other raylet's device
    service.tick()
    job = service.describe(waiting)
    assert job["state"] == "PENDING" and job["attempts"] == 0
    assert job["pending_reason"].startswith("held: ")
    assert doomed.address in job["pending_reason"]
    service.backends.close()
