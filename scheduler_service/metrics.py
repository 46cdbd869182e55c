"""Prometheus metrics of the scheduler: a per-app registry, request middleware and ``/metrics``.

Each app owns its ``CollectorRegistry`` (never the process-global one), so several apps in one
process (tests, replicas) do not share or clash on series.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class Metrics:
    """The metric objects of one app."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram


def new_metrics() -> Metrics:
    """Fresh metrics on a fresh registry."""
    registry = CollectorRegistry(auto_describe=True)
    labels = ("route", "method", "status")
    return Metrics(
        registry=registry,
        requests=Counter(
            "scheduler_http_requests", "HTTP requests by route template", labels, registry=registry
        ),
        latency=Histogram(
            "scheduler_http_request_seconds",
            "HTTP request latency by route template",
            labels,
            registry=registry,
        ),
    )


def _route_template(scope: Scope) -> str:
    """The matched route's path template (``/runs/{run}``, set by the router), or ``unmatched``."""
    return str(getattr(scope.get("route"), "path", "unmatched"))


class RequestMetrics:
    """Pure-ASGI middleware counting requests and timing them by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, recording its status and duration."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            labels = (
                _route_template(scope),
                str(scope["method"]),
                str(status),
            )
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)


def install_metrics(app: FastAPI) -> Metrics:
    """Add the request middleware and ``GET /metrics`` to ``app``; return its metrics."""
    metrics = new_metrics()
    app.state.metrics = metrics
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
