"""Several scheduler URLs for one client: a preferred replica and failover to the others.

A scheduler URL may list replicas separated by commas
(``http://scheduler:8000,http://scheduler-b:8000``). ``FailoverTransport`` is an httpx
transport that sends each request to the first replica that is not marked down, in an
order that starts at a preferred replica (chosen from a key such as the learner id, so
that learners spread over the replicas). A replica that refuses the connection, or
answers 502/503/504, is marked down for ``cooldown_s`` and the same request goes to the
next one; once the cooldown is over the preferred replica is tried first again.

Only failures where the request cannot have been applied (connect errors and timeouts)
or that a proxy or an overloaded replica answered are failed over; a read timeout is
raised to the caller, whose own retry is safe (outcomes are idempotent by episode id,
overrides carry ``If-Match``). All replicas must serve the same database.

``SchedulerClient`` uses it through ``connect`` (base URL and transport for a URL text).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

import httpx

logger = logging.getLogger(__name__)

FAILOVER_STATUS = frozenset({502, 503, 504})
"""Answers after which the request is sent to the next replica (when there is one)."""

DEFAULT_COOLDOWN_S = 10.0
"""How long a failed replica is skipped before it is tried again."""


def split_urls(text: str) -> tuple[str, ...]:
    """``"http://a:8000, http://b:8000/"`` -> ``("http://a:8000", "http://b:8000")``."""
    urls = tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())
    if not urls:
        raise ValueError(f"no scheduler URL in {text!r}")
    for url in urls:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"not an http(s) URL: {url!r}")
    if len(set(urls)) != len(urls):
        raise ValueError(f"a scheduler URL is listed twice in {text!r}")
    return urls


def preferred_index(key: str | None, count: int) -> int:
    """The replica a client prefers: a stable hash of ``key`` (0 without a key)."""
    if key is None or count <= 1:
        return 0
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


class FailoverTransport(httpx.BaseTransport):
    """Sends each request to the preferred live replica; fails over on connect errors/5xx."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        preferred: int = 0,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        inner: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("FailoverTransport needs at least one URL")
        self.urls = tuple(httpx.URL(u.rstrip("/")) for u in urls)
        self.base = self.urls[0]
        """Requests are built against this URL; its prefix is swapped for the chosen one."""
        n = len(self.urls)
        start = preferred % n
        self.order = tuple((start + i) % n for i in range(n))
        self.cooldown_s = cooldown_s
        self._inner = inner if inner is not None else httpx.HTTPTransport()
        self._clock = clock
        self._down_until = [0.0] * n
        self._lock = threading.Lock()

    @property
    def preferred_url(self) -> str:
        """The replica tried first while it is up."""
        return str(self.urls[self.order[0]])

    def candidates(self) -> list[int]:
        """Replica indices to try, in order: the live ones first, then the ones marked down."""
        now = self._clock()
        with self._lock:
            up = [i for i in self.order if self._down_until[i] <= now]
            down = sorted(
                (i for i in self.order if self._down_until[i] > now),
                key=lambda i: self._down_until[i],
            )
        return up + down

    def mark_down(self, index: int) -> None:
        """Skip replica ``index`` for ``cooldown_s``."""
        with self._lock:
            self._down_until[index] = self._clock() + self.cooldown_s

    def _rewrite(self, request: httpx.Request, index: int) -> httpx.Request:
        """``request`` sent to replica ``index`` (same path below the base, body, headers)."""
        target = self.urls[index]
        url = request.url
        base_path = self.base.path.rstrip("/")
        if (url.scheme, url.host, url.port) != (
            self.base.scheme,
            self.base.host,
            self.base.port,
        ) or not url.path.startswith(base_path):
            return request  # not built from the base URL: send it where it points
        path = target.path.rstrip("/") + url.path[len(base_path) :]
        new_url = url.copy_with(scheme=target.scheme, host=target.host, port=target.port, path=path)
        headers = httpx.Headers(request.headers)
        headers["Host"] = new_url.netloc.decode("ascii")
        return httpx.Request(
            request.method,
            new_url,
            headers=headers,
            content=request.content,
            extensions=request.extensions,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send to the first replica that takes it; the last failure if none does."""
        request.read()  # the body is sent again on failover
        order = self.candidates()
        last_error: httpx.TransportError | None = None
        for position, index in enumerate(order):
            is_last = position == len(order) - 1
            try:
                response = self._inner.handle_request(self._rewrite(request, index))
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                self.mark_down(index)
                logger.info("scheduler %s unreachable (%s); trying the next", self.urls[index], exc)
                last_error = exc
                continue
            if response.status_code in FAILOVER_STATUS and not is_last:
                response.close()
                self.mark_down(index)
                logger.info(
                    "scheduler %s answered %d; trying the next",
                    self.urls[index],
                    response.status_code,
                )
                continue
            return response
        assert last_error is not None
        raise last_error

    def close(self) -> None:
        """Close the pooled connections."""
        self._inner.close()


def connect(
    url_text: str, *, key: str | None = None, cooldown_s: float = DEFAULT_COOLDOWN_S
) -> tuple[str, FailoverTransport | None]:
    """Base URL and transport for an httpx client of ``url_text`` (one URL or a list).

    One URL: ``(url, None)``, the default transport. Several: the first URL as the base
    and a ``FailoverTransport`` preferring the replica picked by ``key``.
    """
    urls = split_urls(url_text)
    if len(urls) == 1:
        return urls[0], None
    transport = FailoverTransport(
        urls, preferred=preferred_index(key, len(urls)), cooldown_s=cooldown_s
    )
    return urls[0], transport
