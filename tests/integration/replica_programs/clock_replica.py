"""One ``corral server`` replica whose pools run on the clock test backend.

    python -m tests.integration.replica_programs.clock_replica URL PORT FOLDER HOLDER

The fail-over test starts several of these over one PostgreSQL database, kills them with
SIGKILL and starts them again. Everything but the backend is the real server: the REST API,
the replica loop with its lease, the scheduler service.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from api.server import serve
from api.settings import Settings
from tests.integration.clock_backend import ClockBackend

SECONDS_PER_STEP = 0.05
TICK_INTERVAL_S = 0.1
LEASE_TTL_S = 1.0
UNLAUNCHED_TIMEOUT_S = 3.0


def main() -> None:
    url, port, folder, holder = sys.argv[1:5]
    logging.basicConfig(level=logging.WARNING, format=f"{holder} %(name)s: %(message)s")
    settings = Settings(database_url=url, port=int(port), home=Path(folder) / "home",
                        tick_interval_s=TICK_INTERVAL_S, lease_ttl_s=LEASE_TTL_S,
                        replica_id=holder, max_pending_jobs=None, submissions_per_minute=None,
                        unlaunched_timeout_s=UNLAUNCHED_TIMEOUT_S)
    backend = ClockBackend(Path(folder), seconds_per_step=SECONDS_PER_STEP, holder=holder)
    serve(settings, backends={"clock": backend})


if __name__ == "__main__":
    main()
