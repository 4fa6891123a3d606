"""A real multi-node Ray cluster on this machine for the Ray backend's tests (``make test-ray``).

``ray.cluster_utils.Cluster`` starts a head (no CPU for tasks: only the gangs' keepers land
there) and worker raylets of one CPU each, every process bound to 127.0.0.1. Ray turns a
loopback address into the machine's own unless told the cluster is local
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read by ``ray._private.services``), so the tests set it
before anything of Ray starts; the scheduler's Ray driver inherits it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
CANARIES = {"CORRAL_CANARY_SECRET": "db-password-1", "RAY_CANARY_SECRET": "ray-token-1"}
"""In every raylet's and Ray worker's environment (they inherit this process's): a rank's
environment must hold neither (its allowlist keeps the service's and Ray's variables out)."""
os.environ.update(CANARIES)

from ray.cluster_utils import Cluster  # noqa: E402

from api.embedded import open_embedded  # noqa: E402
from scheduler.domain.spec import JobSpec, parse_spec  # noqa: E402
from scheduler.domain.state import JobState  # noqa: E402
from scheduler.service import SchedulerService  # noqa: E402

pytestmark = pytest.mark.ray

EXAMPLE = Path(__file__).parents[2] / "examples" / "pretrain-tiny.yaml"
LOOPBACK = "127.0.0.1"
CPU_PEAK_TFLOPS = 0.05
"""Peak per CPU device for the synced CPU pool (the catalog has none); only plans use it."""
FINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


@dataclass
class RayCluster:
    cluster: Cluster
    address: str

    def add_cpu_node(self) -> Any:
        node = self.cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK,
                                     include_dashboard=False)
        self.cluster.wait_for_nodes()
        return node

    def is_head(self, node_id: str) -> bool:
        return bool(self.cluster.head_node.node_id == node_id)

    def node_by_id(self, node_id: str) -> Any:
        return next(node for node in self.cluster.worker_nodes if node.node_id == node_id)


def start_cluster(workers: int = 2) -> RayCluster:
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "node_ip_address": LOOPBACK})
    ray_cluster = RayCluster(cluster, cluster.address)
    for _ in range(workers):
        ray_cluster.add_cpu_node()
    return ray_cluster


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """Head plus two one-CPU worker raylets, shared by a module's tests."""
    started = start_cluster()
    yield started
    started.cluster.shutdown()


@pytest.fixture
def ray_service(tmp_path: Path, ray_cluster: RayCluster) -> Iterator[SchedulerService]:
    """An embedded scheduler whose ``ray-cpu`` pool is the cluster's CPU nodes (synced)."""
    service = open_embedded(home=tmp_path / "home")
    service.sync_pools("ray", {"address": ray_cluster.address}, "ray", CPU_PEAK_TFLOPS)
    yield service
    stop_all(service)


def stop_all(service: SchedulerService) -> None:
    """Cancel what a test left running (a failed test must not hold the cluster's CPUs for the
    next one), then stop the service's Ray driver."""
    for job in service.queue():
        if JobState(job["state"]) not in FINAL:
            service.cancel(job["id"])
    service.backends.close()


def tiny_spec(steps: int, interval: int = 10, devices: int = 2, **changes: Any) -> JobSpec:
    """The pretrain example, shortened, on the Ray CPU pool."""
    import yaml

    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["work"] = {"steps": steps, "eval_batches": 2}
    raw["checkpoint"] = {"interval_steps": interval, "keep": 3}
    raw["resources"] = {"devices": devices, "pool": "ray-cpu"}
    raw.update(changes)
    return parse_spec(raw)


def tick_until(service: SchedulerService, job_id: int, done: Any, timeout_s: float = 240.0,
               every_s: float = 0.5) -> dict[str, Any]:
    """Tick until ``done(job)`` holds for ``service.describe(job_id)``; its description."""
    deadline = time.monotonic() + timeout_s
    while True:
        service.tick()
        job = service.describe(job_id)
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} after {timeout_s} s: "
                                 f"{[event['reason'] for event in job['events']][-8:]}")
        time.sleep(every_s)


def in_state(*states: JobState) -> Any:
    return lambda job: JobState(job["state"]) in states


def at_step(step: int) -> Any:
    return lambda job: (job.get("step") or 0) >= step or JobState(job["state"]) in FINAL


def step_losses(run_dir: str, attempt: int | None = None) -> dict[int, float]:
    """Step -> loss from rank 0's progress file (this machine holds every raylet's disk)."""
    import json

    losses: dict[int, float] = {}
    for line in (Path(run_dir) / "progress.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "step" and (attempt is None or event["attempt"] == attempt):
            losses[event["step"]] = event["loss"]
    return losses
