"""HTTP plumbing below the routes: a request body cap and strict, fast JSON parsing.

``BodySizeLimit`` is a pure ASGI middleware: it refuses a declared ``Content-Length``
over the cap at once and counts the bytes of streamed (chunked) bodies as they arrive,
answering 413 as soon as the cap is crossed without reading the rest.
``OrjsonRoute`` checks the bearer token (when tokens are configured) before anything
reads the body, so an unauthenticated request is a 401 whatever its body, and parses
JSON bodies with orjson, which rejects ``NaN``, ``Infinity`` and
numbers that overflow to infinity (``1e309``) as malformed JSON (a 422), where the
standard library would turn them into floats.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler_service.api.deps import require_any_token


class _BodyTooLarge(Exception):
    """Raised inside the app's ``receive`` once the body crosses the cap."""


class BodySizeLimit:
    """Answer 413 to any request whose body is larger than ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to the failed read is replaced by our 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if exceeded and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps({"detail": f"request body larger than {self.max_bytes} bytes"})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class OrjsonRequest(Request):
    """A request whose ``json()`` is orjson's strict parser."""

    async def json(self) -> Any:
        """The body as JSON; ``orjson.JSONDecodeError`` (a ``json.JSONDecodeError``) if bad."""
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


PUBLIC_PATHS = frozenset({"/health"})
"""Routes served without a token even when tokens are configured."""


class OrjsonRoute(APIRoute):
    """A route that checks the bearer token first, then parses its body with orjson."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler so that body parsing goes through orjson."""
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            if request.url.path not in PUBLIC_PATHS:
                require_any_token(request)  # 401 before the body is read or decoded
            return await handler(OrjsonRequest(request.scope, request.receive))

        return orjson_handler
