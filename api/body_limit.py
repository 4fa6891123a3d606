"""A bound on request bodies: one above ``Settings.max_body_bytes`` answers 413 ``too_large``.

A pure ASGI middleware, so the bound holds before a route, or FastAPI's body parsing, holds the
body in memory:

1. a ``Content-Length`` above the bound is answered at once, without reading the body;
2. a body without one (``Transfer-Encoding: chunked``) is counted as it streams in: the chunk
   that crosses the bound raises :class:`BodyTooLarge` instead of reaching the app. FastAPI's
   body parsing lets an ``HTTPException`` through (any other error it turns into a 400), so
   the app's handler answers the 413; should the exception reach this middleware instead, it
   answers the 413 itself while no answer has started.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response


def too_large_message(max_bytes: int) -> str:
    """What a 413 says: the limit, and what to do."""
    mib = max_bytes / (1024 * 1024)
    return (f"the request body is larger than the limit of {max_bytes} bytes ({mib:g} MiB); "
            f"a job spec is a few kilobytes: send less (the server's CORRAL_MAX_BODY_BYTES sets "
            f"the limit)")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the streamed body crosses the bound."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, too_large_message(max_bytes))


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``; None when it has none (or one the server would refuse)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    """Answer 413 to a request whose body is above ``max_bytes`` (module docstring)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "too_large", too_large_message(self.max_bytes),
                                  {"Connection": "close"})
        await response(scope, receive, send)
