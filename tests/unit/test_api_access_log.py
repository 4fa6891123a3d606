"""The access-log filter (api.access_log): query values and tokens never reach the log."""

from __future__ import annotations

import logging

import pytest

from api.access_log import RedactSecrets, redact_target

TARGETS = [
    ("no query", "/v1/jobs", "/v1/jobs"),
    ("token parameter", "/v1/jobs?token=crl_SECRET", "/v1/jobs?token=***"),
    ("access_token among others", "/v1/jobs?limit=5&access_token=abc.def&all=true",
     "/v1/jobs?limit=***&access_token=***&all=***"),
    ("token without a name", "/v1/jobs?crl_SECRET", "/v1/jobs?crl_***"),
    ("percent-encoded token", "/v1/jobs?x=crl%5FSECRET", "/v1/jobs?x=***"),
    ("token in the path", "/v1/jobs/crl_SECRET/logs", "/v1/jobs/crl_***/logs"),
    ("empty value", "/v1/jobs?token=", "/v1/jobs?token=***"),
]


@pytest.mark.parametrize(("case", "target", "logged"), TARGETS, ids=[c for c, _, _ in TARGETS])
def test_query_values_and_tokens_are_masked(case: str, target: str, logged: str) -> None:
    assert redact_target(target) == logged, case


def test_the_filter_rewrites_uvicorns_access_line() -> None:
    # uvicorn's own call: client, method, path with query, HTTP version, status.
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/v1/jobs?token=crl_SECRET", "1.1", 401),
                               None)
    assert RedactSecrets().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /v1/jobs?token=*** HTTP/1.1" 401'
