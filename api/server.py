"""``corral server``: the REST API and a scheduler replica in one process.

:func:`serve` runs, in order:

1. open the database of ``settings.database_url`` and check its schema is at head (an SQLite
   file upgrades itself, as in embedded mode; PostgreSQL needs ``corral db upgrade --url``);
2. refuse a non-loopback address unless auth is on and an unrevoked admin token exists
   (:func:`check_exposure`), so a fresh server is never reachable by everyone as admin;
3. register this machine as the ``local`` pool (once) when the database is SQLite and this
   replica schedules: a one-machine server runs its jobs where it runs, like embedded mode. A
   PostgreSQL database serves a team whose replicas need not be worker machines, and an
   API-only replica launches nothing: there an admin registers the pools (``corral pools
   add``), never a replica as it starts;
4. build the app (:func:`api.app.create_app`) over a :class:`SchedulerService` with the
   backends, and start a :class:`Replica` in a daemon thread (unless ``scheduler`` is False: an
   API-only replica); each of its ticks feeds the Prometheus metrics;
5. serve with uvicorn in the main thread until SIGTERM or SIGINT, then stop the replica, which
   releases the scheduler lease so another replica leads at once, and return (exit status 0).

Uvicorn's access log has one line per request (client, method, path, status): no bodies and no
headers, so neither job specs nor tokens reach the log; query values and a token pasted into a
path are masked (:mod:`api.access_log`).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

import uvicorn

from api.access_log import install_redaction
from api.app import create_app
from api.backends import registry
from api.embedded import ensure_local_pool
from api.model_inputs import warm_up
from api.settings import Settings, is_loopback
from scheduler import auth
from scheduler.db.migrate import current_revision, head_revision, upgrade
from scheduler.db.session import Database, shown_url
from scheduler.domain.errors import CorralError
from scheduler.gangs.backend import Backend
from scheduler.home import audit_home, prepare_home
from scheduler.replica import Replica
from scheduler.service import SchedulerService
from scheduler.trust import JobTrust, identity_name
from workers.backends.environment import service_environment
from workers.backends.local import LocalBackend

log = logging.getLogger("corral.server")
REPLICA_STOP_WAIT_S = 30.0
IDENTITY_CHECK_TIMEOUT_S = 60.0
"""How long shutdown waits for a tick in progress before leaving the lease to lapse."""


def has_admin_token(db: Database) -> bool:
    """Whether some unrevoked admin token exists (someone can manage tenants and tokens)."""
    return any(row["role"] == "admin" and not row["revoked"] for row in auth.list_tokens(db))


def check_schema(db: Database) -> None:
    """Bring an SQLite schema to head; refuse any other database that is not at head."""
    head, current = head_revision(), current_revision(db)
    if current == head:
        return
    if db.is_sqlite:
        upgrade(db)
        return
    raise CorralError(f"database schema is at {current or 'nothing'}, this Corral expects "
                      f"{head}: run `corral db upgrade --url {shown_url(db.url)}` first")


def check_exposure(settings: Settings, db: Database) -> None:
    """Refuse to listen beyond this machine without auth and an admin who can manage tokens."""
    if is_loopback(settings.host):
        return
    if not settings.auth:
        raise CorralError(f"refusing to listen on {settings.host} with auth off: anyone who "
                          f"reaches it would be admin; drop --no-auth or use --host 127.0.0.1")
    if not has_admin_token(db):
        raise CorralError(
            f"refusing to listen on {settings.host}: the database has no admin token yet, so "
            f"nobody could manage tenants and tokens; first run `CORRAL_DATABASE_URL="
            f"{shown_url(db.url)} corral admin token issue --tenant ops --role admin` (keep "
            f"the token it prints), or use --host 127.0.0.1")


def check_job_identity(trust: JobTrust, python: str) -> None:
    """Say whom jobs run as; refuse to start when that identity cannot run the interpreter
    (a pyenv build under a 0700 /root, say): every job would fail at launch."""
    identity = trust.job_user
    if identity is None:
        who = "root" if os.geteuid() == 0 else f"this server's user (uid {os.geteuid()})"
        log.warning("tenants' jobs run as %s: a job can read this server's database file and "
                    "environment. Run the server as root with a job user (CORRAL_JOB_USER, "
                    "default nobody) to keep jobs away from them (docs/security.md)", who)
        return
    try:
        done = subprocess.run([python, "-c", "import scheduler.gangs.protocol"],
                              env=service_environment(os.environ, python), cwd="/",
                              user=identity.uid, group=identity.gid, extra_groups=[],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=IDENTITY_CHECK_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        problem = str(err)
    else:
        problem = done.stderr.strip().splitlines()[-1] if done.returncode else ""
    if problem:
        raise CorralError(
            f"job user {identity_name(identity)} cannot run {python} with Corral: {problem}. "
            f"Install Corral where that user can read it, or let it pass through the folders "
            f"above the interpreter (chmod o+x), or set CORRAL_JOB_USER (docs/security.md)")
    log.info("tenants' jobs run as %s unless their tenant names another",
             identity_name(identity))


def serve(settings: Settings, backends: Mapping[str, Backend] | None = None,
          scheduler: bool = True, **policies: Any) -> None:
    """Run one server replica until SIGTERM or SIGINT (module docstring); ``policies`` are
    :class:`SchedulerService`'s ordering and preemption, backfill and moldable switches."""
    trust = settings.job_trust()
    prepare_home(settings.home, traverse=os.geteuid() == 0)
    db = Database(settings.database_url)
    for problem in audit_home(settings.home, os.geteuid() == 0, db.sqlite_path):
        log.warning("%s", problem)
    check_schema(db)
    check_exposure(settings, db)
    given = dict(backends) if backends is not None else {"local": LocalBackend()}
    local = given.get("local")
    if scheduler and isinstance(local, LocalBackend):
        check_job_identity(trust, local.python)
    if scheduler and db.is_sqlite and isinstance(local, LocalBackend):
        ensure_local_pool(db, local)
    service = SchedulerService(db, registry(given),
                               runs_dir=settings.runs_dir,
                               grace_s=settings.grace_s,
                               unlaunched_timeout_s=settings.unlaunched_timeout_s,
                               trust=trust, **policies)
    app = create_app(settings, service)
    warm_up()
    stop = threading.Event()
    replica: Replica | None = None
    thread: threading.Thread | None = None
    if scheduler:
        try:
            replica = Replica(service, settings.replica_id, ttl_s=settings.lease_ttl_s,
                              tick_interval_s=settings.tick_interval_s,
                              on_tick=app.state.metrics.observe_tick)
        except ValueError as err:
            raise CorralError(str(err)) from None
        thread = threading.Thread(target=replica.run, args=(stop,), name="corral-scheduler",
                                  daemon=True)
    app.state.replica = replica
    if settings.auth and not has_admin_token(db):
        log.warning("no admin token exists: issue one with `CORRAL_DATABASE_URL=%s corral admin "
                    "token issue --tenant ops --role admin`", shown_url(db.url))
    install_redaction()
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port,
                                           log_level="info", access_log=True,
                                           log_config=None))
    previous = _keep_signals_for_shutdown(stop)
    log.info("replica %s serving http://%s:%d over %s (%s)", settings.replica_id, settings.host,
             settings.port, shown_url(db.url), "API and scheduler" if scheduler else "API only")
    try:
        if thread is not None:
            thread.start()
        server.run()
    finally:
        stop.set()
        if thread is not None:
            thread.join(REPLICA_STOP_WAIT_S)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        service.backends.close()
        db.dispose()
    log.info("replica %s stopped", settings.replica_id)


def _keep_signals_for_shutdown(stop: threading.Event) -> dict[int, Any]:
    """Make SIGTERM and SIGINT mean "stop" outside uvicorn's own handling too.

    Uvicorn handles both while it serves, then raises the signal again under the handlers it
    found; with Python's defaults that would kill the process (SIGTERM) or raise
    KeyboardInterrupt (SIGINT) before the replica releases its lease and the server exits 0."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def note(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    return {signum: signal.signal(signum, note) for signum in (signal.SIGTERM, signal.SIGINT)}
