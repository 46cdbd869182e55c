"""HTTP plumbing below the routes: a request body cap and strict, fast JSON parsing.

``BodySizeLimit`` is a pure ASGI middleware: it refuses a declared ``Content-Length``
over the cap at once and counts the bytes of streamed (chunked) bodies as they arrive,
answering 413 as soon as the cap is crossed without reading the rest.
``OrjsonRoute`` checks the bearer token (when tokens are configured) before anything
reads the body, so an unauthenticated request is a 401 whatever its body, and parses
JSON bodies with orjson, which rejects ``NaN``, ``Infinity`` and
numbers that overflow to infinity (``1e309``) as malformed JSON, where the standard
library would turn them into floats: the 422 then names the field and item that held it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler_service.api.deps import WRITE_METHODS, require_any_token

logger = logging.getLogger(__name__)


class KeepConnectionOnError:
    """Pure ASGI middleware: an unexpected exception becomes a 500 JSON answer here.

    Starlette's outermost error middleware answers 500 and then re-raises, and uvicorn
    closes a keep-alive connection when an exception escapes the app after its answer:
    the client's *next* request on that connection failed too. Handled here, the error is
    logged once and the connection stays open.
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
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # half an answer is out: nothing to do but close
                raise
            body = orjson.dumps({"detail": "internal server error"})
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode())]  # fmt: skip
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})


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


def first_non_finite(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where the first NaN or infinity sits in parsed JSON (keys and indices), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = first_non_finite(item, (*path, key))
        if found is not None:
            return found
    return None


class OrjsonRequest(Request):
    """A request whose ``json()`` is orjson's strict parser."""

    async def json(self) -> Any:
        """The body as JSON; ``orjson.JSONDecodeError`` (a ``json.JSONDecodeError``) if bad."""
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json

    async def refuse_non_finite(self) -> None:
        """Raise a 422 naming the field and item of a ``NaN``, ``Infinity`` or overflowing
        number (``1e309``) in a JSON body.

        orjson refuses them with a byte offset only; such a body is read again by the
        standard parser (which takes them) just to find where the number sits
        (``outcomes[3].return``). Any other malformed body is left to :meth:`json`.
        """
        body = await self.body()
        if not body:
            return
        try:
            self._json = orjson.loads(body)
            return
        except orjson.JSONDecodeError:
            pass
        try:
            where = first_non_finite(json.loads(body))
        except (ValueError, RecursionError):
            return
        if where is not None:
            error = {"type": "finite_number", "loc": ("body", *where),
                     "msg": "Input should be a finite number"}  # fmt: skip
            raise RequestValidationError([error])


def refuse_cross_site_writes(request: Request) -> None:
    """403 for a state-changing request a browser sent from another site.

    Without tokens (loopback mode), any web page on the operator's machine could post a
    form to the scheduler and pause a run. Browsers mark such requests: ``Sec-Fetch-Site``
    is ``cross-site`` or ``same-site`` (another port is another origin), and ``Origin``
    names the page's origin. Requests from scripts and the client carry neither, or the
    scheduler's own origin (the dashboard). A form cannot send ``application/json``, so
    ``require_json_body`` closes the rest.
    """
    if request.method not in WRITE_METHODS:
        return
    fetch_site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if fetch_site in ("cross-site", "same-site") or (origin is not None and origin != own):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site requests cannot change state")


def require_json_body(request: Request) -> None:
    """415 for a write whose body is not ``application/json`` (what a form posts)."""
    if request.method not in WRITE_METHODS:
        return
    has_body = request.headers.get("content-length", "0") not in ("", "0") or (
        "transfer-encoding" in request.headers
    )
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if has_body and kind != "application/json":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "a request body must be application/json"
        )


PUBLIC_PATHS = frozenset({"/health"})
"""Routes served without a token even when tokens are configured."""


class OrjsonRoute(APIRoute):
    """A route that checks the bearer token first, then parses its body with orjson."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler so that body parsing goes through orjson."""
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            refuse_cross_site_writes(request)  # before anything else, tokens or not
            if request.url.path not in PUBLIC_PATHS:
                require_any_token(request)  # 401 before the body is read or decoded
            require_json_body(request)
            parsed = OrjsonRequest(request.scope, request.receive)
            if request.method in ("POST", "PUT", "PATCH"):
                await parsed.refuse_non_finite()
            return await handler(parsed)

        return orjson_handler
