"""The Ray backend against the local backend, in the same process and on the same machine.

1. Admission to first step: the same pretrain job (examples/pretrain-tiny.yaml, 2 DDP ranks,
   a few steps), admitted by the same embedded scheduler on the local pool and on a Ray pool of
   two one-CPU raylets; from the ADMITTED event to rank 0's first ``step`` event. Runs
   alternate, ``--repeats`` each; medians and their ratio.
2. Launch latency of ``--gangs`` one-rank gangs, one after another, on a Ray cluster of three
   raylets, and on the local backend as the baseline: from ``launch()`` to the rank's first
   line of its own (the stand-in rank of the backend tests writes a marker file at start);
   p50 and p99 of each, and their ratios.

    make bench-ray        (or: .venv/bin/python bench/ray_launch.py --repeats 3 --gangs 100)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep Ray on 127.0.0.1

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ray.cluster_utils import Cluster  # noqa: E402

from api.embedded import open_embedded  # noqa: E402
from scheduler.gangs.backend import GangPhase  # noqa: E402
from scheduler.gangs.protocol import LaunchRequest  # noqa: E402
from scheduler.service import SchedulerService  # noqa: E402
from tests.ray.conftest import tick_until, tiny_spec  # noqa: E402
from workers.backends.local import LocalBackend  # noqa: E402
from workers.backends.ray import RayBackend  # noqa: E402

STAND_IN = "tests.integration.rank_programs.gang_rank"


def cluster(workers: int) -> Cluster:
    started = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    for _ in range(workers):
        started.add_node(num_cpus=1, node_ip_address="127.0.0.1", include_dashboard=False)
    started.wait_for_nodes()
    return started


def admission_to_first_step(service: SchedulerService, pool: str) -> float:
    spec = tiny_spec(steps=3, interval=1000)
    raw = spec.model_dump(mode="json")
    raw["resources"]["pool"] = pool
    from scheduler.domain.spec import parse_spec

    job_id = service.submit(parse_spec(raw))
    job = tick_until(service, job_id, lambda j: j["state"] in ("SUCCEEDED", "FAILED"),
                     every_s=0.05)
    assert job["state"] == "SUCCEEDED", job["events"][-3:]
    admitted = next(e["time"] for e in job["events"] if e["to"] == "ADMITTED")
    first = next(json.loads(line)["time"] for line in
                 (Path(job["run_dir"]) / "progress.jsonl").read_text().splitlines()
                 if json.loads(line)["event"] == "step")
    return first - datetime.fromisoformat(admitted).timestamp()


def launch_latency(backend: LocalBackend | RayBackend, folder: Path, gangs: int) -> list[float]:
    seconds = []
    for index in range(gangs):
        run = folder / f"gang-{index}"
        run.mkdir(parents=True)
        job_file = run / "job.json"
        job_file.write_text(json.dumps({"marker_dir": str(run), "sleep_s": {"default": 0}}))
        request = LaunchRequest(job_id=index, attempt=1, world_size=1,
                                log_path=str(folder / "logs" / f"{index}.log"),
                                job_file=str(job_file), module=STAND_IN, run_dir=str(run),
                                accelerator="cpu")
        started = time.perf_counter()
        handle = backend.launch(request)
        while not (run / "pid.0").exists():
            time.sleep(0.002)
        seconds.append(time.perf_counter() - started)
        while backend.poll(handle).phase is GangPhase.RUNNING:
            time.sleep(0.02)
    return seconds


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gangs", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="corral-bench-ray-"))

    two = cluster(2)
    try:
        service = open_embedded(home=work / "home")
        service.sync_pools("ray", {"address": two.address}, "ray", 0.05)
        local_s, ray_s = [], []
        for _ in range(args.repeats):
            local_s.append(admission_to_first_step(service, "local"))
            ray_s.append(admission_to_first_step(service, "ray-cpu"))
        service.backends.close()
    finally:
        two.shutdown()
    local_med, ray_med = statistics.median(local_s), statistics.median(ray_s)
    print(f"admission -> first step, 2 DDP ranks, median of {args.repeats}: "
          f"local {local_med:.2f} s, ray {ray_med:.2f} s, ray/local {ray_med / local_med:.2f}")

    three = cluster(3)
    try:
        ray = RayBackend(three.address, keep_s=30.0)
        ray_launch = launch_latency(ray, work / "ray", args.gangs)
        ray.close()
    finally:
        three.shutdown()
    local_launch = launch_latency(LocalBackend(), work / "local", args.gangs)
    for name, values in (("local", local_launch), ("ray", ray_launch)):
        print(f"launch -> rank running, {args.gangs} one-rank gangs, {name}: "
              f"p50 {percentile(values, 0.5) * 1e3:.0f} ms, "
              f"p99 {percentile(values, 0.99) * 1e3:.0f} ms")
    print(f"ray/local: p50 {percentile(ray_launch, 0.5) / percentile(local_launch, 0.5):.2f}, "
          f"p99 {percentile(ray_launch, 0.99) / percentile(local_launch, 0.99):.2f}")


if __name__ == "__main__":
    main()
