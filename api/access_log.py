"""Uvicorn's access log without secrets: no query values, no token anywhere in a path.

Uvicorn logs each request's path with its query string. A client that puts its token in the
URL (``?token=crl_...``, ``?access_token=...``) is refused, but the token would stay in the log
for anyone who reads it. :class:`RedactSecrets`, a filter on the ``uvicorn.access`` logger,
rewrites the path before the line is formatted:

- every query value becomes ``***`` (the names stay, for debugging): no list of "secret
  looking" names to keep up to date, and Corral's own parameters (``limit``, ``tenant``)
  matter little in an access log;
- a Corral token anywhere else in the path (``/v1/crl_...``) becomes ``crl_***``.
"""

from __future__ import annotations

import logging
import re

ACCESS_LOGGER = "uvicorn.access"
MASK = "***"
_QUERY_VALUE = re.compile(r"=[^&;#]*")
# A token may reach the log percent-encoded: crl%5F...
_TOKEN = re.compile(r"crl(?:_|%5[fF])[A-Za-z0-9_%\-]+")


def redact_target(target: str) -> str:
    """``/v1/jobs?token=crl_x&limit=5`` -> ``/v1/jobs?token=***&limit=***``."""
    path, mark, query = target.partition("?")
    path = _TOKEN.sub(f"crl_{MASK}", path)
    if not mark:
        return path
    return f"{path}?{_QUERY_VALUE.sub(f'={MASK}', _TOKEN.sub(f'crl_{MASK}', query))}"


class RedactSecrets(logging.Filter):
    """Redact every string argument of an access-log record (uvicorn passes the path as one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_target(arg) if isinstance(arg, str) else arg
                                for arg in record.args)
        return True


def install_redaction() -> None:
    """Add :class:`RedactSecrets` to the ``uvicorn.access`` logger, once."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(existing, RedactSecrets) for existing in logger.filters):
        logger.addFilter(RedactSecrets())
