"""Submission throughput and latency of the REST API: 8 clients, 2,000 submissions.

A real ``corral server`` process (API only: ``--no-scheduler``, so nothing else competes for the
database) listens on 127.0.0.1; 8 client threads in this process submit
``examples/pretrain-tiny.yaml`` 2,000 times in all through the SDK (bearer token, a fresh
Idempotency-Key each), on SQLite and on a throw-away PostgreSQL server. Each submission is
validated, planned by the cost model (the model's parameters from its config, every plan on the
cluster's pools), checked against the tenant's limits and committed before the reply.

Baseline, in the same process and database: ``SchedulerService.submit_request`` called directly
(no HTTP, no server process, one thread), the same spec the same number of times; the ratio says
what the API adds (HTTP, JSON, auth, a second process) per submission.

    .venv/bin/python bench/api_submit.py [--submissions 2000] [--clients 8] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.client import CorralClient  # noqa: E402
from api.model_inputs import submit_profile  # noqa: E402
from scheduler import auth  # noqa: E402
from scheduler.db import repo  # noqa: E402
from scheduler.db.migrate import upgrade  # noqa: E402
from scheduler.db.session import Database  # noqa: E402
from scheduler.db.submissions import SubmitLimits  # noqa: E402
from scheduler.domain.spec import load_spec_file  # noqa: E402
from scheduler.service import SchedulerService  # noqa: E402
from tests.pg_server import PgUnavailable, free_port, throwaway_database  # noqa: E402

EXAMPLE = ROOT / "examples" / "pretrain-tiny.yaml"
NO_LIMITS = SubmitLimits()


def prepare(url: str) -> str:
    """Migrate, add a CPU pool the example fits, and issue an admin token; return the token."""
    db = Database(url)
    upgrade(db)
    with db.write() as session:
        repo.add_pool(session, "cpu", "local", "cpu", nodes=4, devices_per_node=8,
                      peak_flops=1e11)
    token, _ = auth.issue_token(db, "bench", "admin", "bench")
    db.dispose()
    return token


def direct_baseline(url: str, count: int, runs_dir: Path) -> list[float]:
    """Latencies (s) of ``count`` direct submit_request calls, no HTTP."""
    db = Database(url)
    service = SchedulerService(db, {}, runs_dir=runs_dir)
    spec = load_spec_file(EXAMPLE)
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        service.submit_request(spec, submit_profile(service, spec),
                               idempotency_key=uuid.uuid4().hex, request_sha256="x",
                               limits=NO_LIMITS)
        latencies.append(time.perf_counter() - start)
    db.dispose()
    return latencies


def start_server(url: str, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_MAX_PENDING_JOBS": "1000000",
           "CORRAL_SUBMISSIONS_PER_MINUTE": "1000000"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "corral"), "server", "--no-scheduler", "--port",
         str(port), "--database-url", url], env=env, stdout=subprocess.DEVNULL,
        stderr=(home.parent / f"server-{home.name}.log").open("wb"))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"corral server did not become ready on {base}")


def through_api(base: str, token: str, count: int, clients: int) -> tuple[list[float], float]:
    """Latencies (s) of ``count`` submissions over ``clients`` threads, and the wall time."""
    spec = load_spec_file(EXAMPLE).model_dump(mode="json", exclude_unset=True)
    latencies: list[float] = []
    lock = threading.Lock()
    share = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]

    def client(n: int) -> None:
        sdk = CorralClient(base, token=token)
        mine = []
        for _ in range(n):
            start = time.perf_counter()
            sdk.submit(spec)
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in share]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def measure(label: str, url: str, folder: Path, submissions: int, clients: int) -> None:
    token = prepare(url)
    direct = direct_baseline(url, min(submissions, 300), folder / f"runs-{label}")
    direct_rate = len(direct) / sum(direct)
    server, base = start_server(url, folder / f"home-{label}")
    try:
        latencies, wall_s = through_api(base, token, submissions, clients)
    finally:
        server.terminate()
        server.wait(timeout=30)
    rate = len(latencies) / wall_s
    print(f"{label:<10} {len(latencies):>6} {clients:>7} {rate:>9.1f} "
          f"{percentile(latencies, 50) * 1e3:>8.1f} {percentile(latencies, 99) * 1e3:>8.1f} "
          f"{direct_rate:>12.1f} {statistics.median(direct) * 1e3:>10.1f} "
          f"{rate / direct_rate:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    print(f"{'database':<10} {'jobs':>6} {'clients':>7} {'jobs/s':>9} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'direct job/s':>12} {'direct p50':>10} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(os.environ.get("BENCH_FOLDER") or tmp)
        measure("sqlite", f"sqlite:///{folder}/bench.db", folder, args.submissions,
                args.clients)
        if args.sqlite_only:
            return
        try:
            with throwaway_database("bench") as url:
                measure("postgresql", url, folder, args.submissions, args.clients)
        except PgUnavailable as err:
            print(f"postgresql: {err}; skipped")


if __name__ == "__main__":
    main()
