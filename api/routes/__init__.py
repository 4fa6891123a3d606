"""Routers per resource, and the error answers each route documents in the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from api.schemas import ErrorBody

ERROR_DESCRIPTIONS = {
    401: "no valid bearer token (code unauthorized)",
    403: "the caller's role or tenant may not do this (code forbidden)",
    404: "no such object, or one of another tenant (code not_found)",
    409: "the request contradicts what is stored (code conflict)",
    413: "the request body is above the server's limit, 1 MiB by default (code too_large)",
    422: "the request or the job spec is invalid (codes invalid_request, invalid_spec, "
         "unschedulable)",
    429: "a tenant limit is reached, or this client address sent too many unknown or revoked "
         "tokens (code rate_limited)",
    503: "the database is unavailable (code unavailable)",
}

ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait before trying again",
                          "schema": {"type": "integer", "minimum": 1}}},
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, plus 413 and 503 that any request may
    get (api.body_limit, the database), all with the error body."""
    answers: dict[int | str, dict[str, Any]] = {}
    for status in (*statuses, 413, 503):
        answer: dict[str, Any] = {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]}
        if status in ERROR_HEADERS:
            answer["headers"] = ERROR_HEADERS[status]
        answers[status] = answer
    return answers


AUTHED = (401, 422, 429)
"""What any route behind a token may answer: no token, parameters that fail the schema, or a
client address throttled after failed authentications (api.throttle)."""
