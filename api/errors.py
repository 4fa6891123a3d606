"""Every failure as ``{"error": {"code", "message"}}`` with the status the REST contract names.

==========================  ======  ==================
raised                      status  code
==========================  ======  ==================
Unauthorized (no token)     401     unauthorized (+ ``WWW-Authenticate: Bearer``)
ForbiddenError              403     forbidden
NotFoundError               404     not_found
ConflictError               409     conflict
TransitionError             409     conflict
RequestValidationError      422     invalid_request (names the field, never echoes the value)
undecodable body            422     invalid_request (FastAPI's own answer is a 400)
unknown path, method        404     not_found, 405 method_not_allowed
UnschedulableError          422     unschedulable
SpecError                   422     invalid_spec
CorralError, PlanError      422     invalid_request (an admin value the rules refuse)
body above the limit        413     too_large (api.body_limit)
LimitError                  429     rate_limited (+ ``Retry-After: <seconds>``): a tenant
                                    limit, or failed authentications (api.throttle)
BackendError, lease lost    503     unavailable
Unavailable, DB unreachable 503     unavailable (+ ``Retry-After: 1``)
anything else               500     internal (logged without its message, which may hold data)
==========================  ======  ==================
"""

from __future__ import annotations

import logging
import math
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.db.health import UNAVAILABLE_ERRORS
from scheduler.domain.errors import (
    BackendError,
    ConflictError,
    CorralError,
    ForbiddenError,
    LimitError,
    NotFoundError,
    SpecError,
    StaleLeaderError,
    TransitionError,
    UnschedulableError,
)

log = logging.getLogger("corral.api")

# Most specific first: UnschedulableError is a SpecError.
ERROR_STATUS: tuple[tuple[type[CorralError], int, str], ...] = (
    (ForbiddenError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (TransitionError, 409, "conflict"),
    (UnschedulableError, 422, "unschedulable"),
    (SpecError, 422, "invalid_spec"),
    (LimitError, 429, "rate_limited"),
    (BackendError, 503, "unavailable"),
    (StaleLeaderError, 503, "unavailable"),
    (CorralError, 422, "invalid_request"),
)

HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "too_large",
              415: "unsupported_media_type", 422: "invalid_request", 429: "rate_limited",
              503: "unavailable"}


class Unauthorized(Exception):
    """The request carries no valid bearer token."""


class Unavailable(Exception):
    """This replica cannot serve now (database unreachable or at another schema)."""


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def corral_error(_request: Request, exc: Exception) -> JSONResponse:
    for kind, status, code in ERROR_STATUS:
        if isinstance(exc, kind):
            headers = None
            if isinstance(exc, LimitError):
                headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
            return error_response(status, code, str(exc), headers)
    raise AssertionError("CorralError is the last row")  # pragma: no cover


def unauthorized(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(401, "unauthorized", str(exc), {"WWW-Authenticate": "Bearer"})


def unavailable(_request: Request, exc: Exception) -> JSONResponse:
    # A database error's text may hold the statement's parameters: say only what kind it is.
    message = str(exc) if isinstance(exc, Unavailable) else (
        f"the database is unavailable ({type(exc).__name__}); retry shortly")
    return error_response(503, "unavailable", message, {"Retry-After": "1"})


def validation_message(errors: list[Any]) -> str:
    """``body.spec: field required; query.limit: ...``: where and what, never the value sent
    (a body may carry secrets)."""
    parts = []
    for item in errors:
        where = ".".join(str(part) for part in item.get("loc", ())) or "request"
        if item.get("type") == "extra_forbidden":
            what = "unknown field; remove it (a job's fields go inside spec)"
        elif item.get("type") == "json_invalid":
            where = "body"
            what = f"malformed JSON at character {item['loc'][-1]}; send a JSON object"
        elif item.get("type") == "missing":
            what = "required field is missing"
        else:
            what = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {what}")
    return "; ".join(parts) or "the request does not match the API schema"


def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", validation_message(list(exc.errors())))


def http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot decode: the contract calls that 422.
        return error_response(422, "invalid_request", "body: could not be read; send a JSON "
                                                      "object encoded in UTF-8")
    code = HTTP_CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


class CatchAll:
    """Answer 500 for an unexpected exception and log its type and stack, not its message.

    Starlette's own handler re-raises after answering, and servers then log ``str(exc)``,
    which for a database error holds the statement's parameters (a job spec, its secrets).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error("%s %s failed with %s:\n%s", scope.get("method"), scope.get("path"),
                      type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
            if started:
                raise RuntimeError("response interrupted") from None
            response = error_response(500, "internal", "internal error; the server log has "
                                                       "the details")
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(CorralError, corral_error)
    app.add_exception_handler(Unauthorized, unauthorized)
    app.add_exception_handler(Unavailable, unavailable)
    for kind in UNAVAILABLE_ERRORS:
        app.add_exception_handler(kind, unavailable)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(CatchAll)
