"""The REST API application: :func:`create_app` builds one over a scheduler service.

The app needs no backend: it stores jobs, reads the database and records cancellations; the
leading replica's scheduler loop (``corral server``) launches and stops gangs. State on the
app: ``app.state.settings``, ``app.state.service``, ``app.state.metrics`` (:class:`ApiMetrics`),
``app.state.auth_throttle`` (:class:`AuthThrottle`) and, when ``corral server`` runs a
scheduler, ``app.state.replica`` (with ``.is_leader``).

Request bodies are never logged: a job spec may carry secret environment values. A body above
``settings.max_body_bytes`` answers 413 (:mod:`api.body_limit`). ``/docs`` is off unless
``settings.api_docs`` (:mod:`api.docs_ui`: never from a CDN); ``/redoc`` is always off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.routing import APIRoute

from api import docs_ui, errors
from api.body_limit import BodyLimit
from api.metrics import ApiMetrics
from api.routes import admin, health, job_history, jobs, plan, pools
from api.settings import Settings
from api.throttle import AuthThrottle
from scheduler.db.session import Database
from scheduler.service import SchedulerService

DESCRIPTION = """Corral schedules LLM pretraining, finetuning and compression jobs on pools of
accelerators. Authenticate with `Authorization: Bearer <token>`; every error answers
`{"error": {"code": ..., "message": ...}}`. See docs/api.md."""


def _version() -> str:
    try:
        return version("corral")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


def _operation_id(route: APIRoute) -> str:
    """``submit_job``, ``list_pools``...: the route function's name, for generated clients."""
    return route.name


def create_app(settings: Settings, service: SchedulerService | None = None) -> FastAPI:
    """The API over ``service``, or over a backend-less service on ``settings.database_url``
    (whose engine the app then disposes of when it shuts down)."""
    owned = service is None
    if service is None:
        service = SchedulerService(Database(settings.database_url), {},
                                   runs_dir=settings.runs_dir, grace_s=settings.grace_s,
                                   trust=settings.job_trust())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            service.db.dispose()

    app = FastAPI(title="Corral", version=_version(), description=DESCRIPTION,
                  lifespan=lifespan, generate_unique_id_function=_operation_id,
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None)
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = ApiMetrics(service.db)
    app.state.auth_throttle = AuthThrottle(settings.auth_failure_limit,
                                           settings.auth_failure_window_s)
    app.state.replica = None
    # Added before errors.install's CatchAll, so it runs inside it: a 413 is never a 500.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    errors.install(app)
    if settings.api_docs:
        docs_ui.install(app, docs_ui.bundled_assets())
    for module in (jobs, job_history, plan, pools, admin, health):
        app.include_router(module.router)
    return app
