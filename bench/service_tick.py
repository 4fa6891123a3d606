"""One scheduler tick over a real database: 10,000 pending jobs on 1,000 nodes × 8 devices.

Unlike ``bench/cycle_speed.py`` (the pure cycle on an in-memory snapshot) this runs the whole
``SchedulerService.tick`` — reconcile, snapshot read from the database, cycle, the admitting
transaction, dispatch to a fake backend — on SQLite and on a throw-away PostgreSQL server, in
two states:

- ``cold``: every device free, so the tick admits and dispatches gangs until the cluster is
  full (thousands of allocation rows and launches in one tick: the worst case);
- ``full``: the tick after, every device held, every running gang polled, the whole queue read
  and ordered, nothing fits.

Baseline, in the same process and database: reading the pending jobs' rows and nothing else
(``SELECT * FROM job WHERE state = 'PENDING'``), the least any tick must do; the ratio says what
everything else costs on top.

    .venv/bin/python bench/service_tick.py [--pending 10000] [--nodes 1000] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.db import repo  # noqa: E402
from scheduler.db.migrate import upgrade  # noqa: E402
from scheduler.db.models import Job, JobEvent  # noqa: E402
from scheduler.db.session import Database  # noqa: E402
from scheduler.domain.spec import parse_spec  # noqa: E402
from scheduler.domain.state import JobState  # noqa: E402
from scheduler.service import SchedulerService  # noqa: E402
from tests.pg_server import PgUnavailable, throwaway_database  # noqa: E402
from workers.backends.fake import FakeBackend  # noqa: E402

GANG_SIZES = (1, 1, 2, 4, 8, 16)


def spec_for(index: int, devices: int) -> dict[str, object]:
    return parse_spec({
        "name": f"bench-{index}", "kind": "pretrain", "tenant": f"team-{index % 8}",
        "model": {"architecture": "llama",
                  "config": {"hidden_size": 64, "num_hidden_layers": 2,
                             "num_attention_heads": 4}},
        "data": {"source": "generated", "seq_len": 64},
        "work": {"steps": 100}, "batch": {"global_batch": 16 * devices},
        "resources": {"accelerator": "H100-SXM", "devices": devices,
                      "priority": random.choice((0, 0, 1, 5))},
    }).model_dump(mode="json")


def populate(db: Database, pending: int, nodes: int) -> None:
    """Pools and pending jobs in bulk (a few statements, not one transaction per job)."""
    random.seed(0)
    with db.write() as session:
        repo.add_pool(session, "h100", "fake", "H100-SXM", nodes=nodes, devices_per_node=8,
                      price_per_device_hour=3.5)
        tenants = {f"team-{i}": repo.get_or_create_tenant(session, f"team-{i}").id
                   for i in range(8)}
        rows = []
        for index in range(pending):
            devices = random.choice(GANG_SIZES)
            spec = spec_for(index, devices)
            rows.append({"tenant_id": tenants[str(spec["tenant"])], "name": spec["name"],
                         "kind": "pretrain", "spec": spec, "state": JobState.PENDING.value,
                         "priority": spec["resources"]["priority"],  # type: ignore[index]
                         "max_attempts": 3, "total_steps": 100})
        ids = session.scalars(insert(Job).returning(Job.id), rows).all()
        session.execute(insert(JobEvent), [
            {"job_id": job_id, "from_state": None, "to_state": JobState.PENDING.value,
             "reason": "submitted"} for job_id in ids])


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def run(label: str, url: str, pending: int, nodes: int, runs_dir: Path) -> None:
    db = Database(url)
    upgrade(db)
    populate(db, pending, nodes)
    service = SchedulerService(db, {"fake": FakeBackend()}, runs_dir=runs_dir)

    def read_pending() -> None:
        with db.read() as session:
            list(session.scalars(select(Job).where(Job.state == JobState.PENDING.value)))

    baseline_s = min(timed(read_pending) for _ in range(3))
    for state in ("cold", "full"):
        start = time.perf_counter()
        report = service.tick()
        total_s = time.perf_counter() - start
        steps = "  ".join(f"{name} {seconds * 1e3:.0f}" for name, seconds
                          in report.step_seconds.items())
        print(f"{label:<10} {state:<5} {pending:>8} {nodes:>6} {total_s * 1e3:>9.0f} "
              f"{baseline_s * 1e3:>9.1f} {total_s / baseline_s:>7.1f} {len(report.admitted):>9}"
              f"   {steps}")
    db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=1_000)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    print(f"{'database':<10} {'state':<5} {'pending':>8} {'nodes':>6} {'tick ms':>9} "
          f"{'read ms':>9} {'ratio':>7} {'admitted':>9}   steps (ms)")
    with tempfile.TemporaryDirectory() as folder:
        run("sqlite", f"sqlite:///{folder}/bench.db", args.pending, args.nodes,
            Path(folder) / "runs-sqlite")
        if args.sqlite_only:
            return
        try:
            with throwaway_database("bench") as url:
                run("postgresql", url, args.pending, args.nodes, Path(folder) / "runs-pg")
        except PgUnavailable as err:
            print(f"postgresql: {err}; skipped")


if __name__ == "__main__":
    main()
