"""``corral server``: run one replica of the REST API and scheduler (:mod:`api.server`)."""

from __future__ import annotations

import logging
from typing import Any

import click
from pydantic import ValidationError

from scheduler.domain.errors import CorralError
from scheduler.policies.config import ORDERINGS, Ordering

POLICY_OPTIONS = [
    click.option("--ordering", type=click.Choice(ORDERINGS), default="fair_share",
                 show_default=True, help="Which pending job goes first."),
    click.option("--preemption/--no-preemption", default=True, show_default=True,
                 help="Stop lower-priority jobs (or borrowers) for a job that cannot fit."),
    click.option("--backfill/--no-backfill", default=True, show_default=True,
                 help="Let short jobs run ahead of a blocked job when they cannot delay it."),
    click.option("--moldable/--no-moldable", default=True, show_default=True,
                 help="Pick a device-range job's size by earliest predicted completion."),
]


def policy_options(command: Any) -> Any:
    """The scheduling-policy switches ``corral scheduler`` and ``corral server`` share."""
    for option in reversed(POLICY_OPTIONS):
        command = option(command)
    return command


@click.command()
@click.option("--host", default=None, help="Address to listen on [default: 127.0.0.1; "
              "$CORRAL_HOST]. Any address but loopback needs auth and an admin token.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port [default: 8000; $CORRAL_PORT].")
@click.option("--database-url", default=None, help="SQLAlchemy URL [default: "
              "$CORRAL_DATABASE_URL, else the SQLite file under $CORRAL_HOME]; PostgreSQL "
              "(postgresql+psycopg://...) for a team and for several replicas. A URL with a "
              "password belongs in $CORRAL_DATABASE_URL: ps shows flags.")
@click.option("--no-auth", is_flag=True, help="Serve without tokens, every request as admin "
              "of tenant default (loopback addresses only).")
@click.option("--no-scheduler", is_flag=True,
              help="Serve the API only; other replicas schedule.")
@policy_options
@click.option("--tick-interval-s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds between scheduler ticks [default: 1; $CORRAL_TICK_INTERVAL_S].")
@click.option("--lease-ttl-s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds the scheduler lease lasts unrenewed [default: 10; "
                   "$CORRAL_LEASE_TTL_S].")
def server(host: str | None, port: int | None, database_url: str | None, no_auth: bool,
           no_scheduler: bool, ordering: Ordering, preemption: bool, backfill: bool,
           moldable: bool, tick_interval_s: float | None, lease_ttl_s: float | None) -> None:
    """Serve the REST API (and, unless --no-scheduler, lead or stand by as a scheduler replica)
    until SIGTERM or Ctrl-C; settings also come from CORRAL_* variables."""
    from api.server import serve
    from api.settings import Settings

    overrides: dict[str, Any] = {name: value for name, value in (
        ("host", host), ("port", port), ("database_url", database_url),
        ("tick_interval_s", tick_interval_s), ("lease_ttl_s", lease_ttl_s)) if value is not None}
    if no_auth:
        overrides["auth"] = False
    try:
        settings = Settings(**overrides)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in err.errors())
        raise CorralError(f"invalid server settings: {problems}") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    serve(settings, scheduler=not no_scheduler, ordering=ordering, preemption=preemption,
          backfill=backfill, moldable=moldable)
