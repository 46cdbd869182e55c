"""Prometheus metrics of the scheduler: a per-app registry, request middleware and ``/metrics``.

Each app owns its ``CollectorRegistry`` (never the process-global one), so several apps in one
process (tests, replicas) do not share or clash on series. Three kinds of series:

- **requests**: a counter and a latency histogram per route template, method and status,
  recorded by a pure-ASGI middleware (the template comes from the matched route, so
  ``/runs/{run}`` is one series however many runs exist);
- **outcomes**: per run, outcomes accepted and duplicated (read from the answer of
  ``POST /runs/{run}/outcomes``) and batches accepted or rejected (409/413/422);
- **run state**: read on each scrape through a ``state_provider`` callable that returns
  run states in their wire form (``GET /runs/{run}``): totals, learners, the collapse
  alarms of every run, and usage, target usage, probability, reward weight and success
  per clip only for runs with at most ``max_clips`` clips, which bounds the series count.

The scrape runs in a worker thread; the default state provider calls back into the event
loop to read the service, so a slow database never blocks other requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.from_thread
import anyio.to_thread
import orjson
from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler_service.api.deps import ReadService
from scheduler_service.api.schemas import RunStateOut
from scheduler_service.domain import RunState
from scheduler_service.errors import NotFound

logger = logging.getLogger(__name__)

DEFAULT_MAX_CLIPS = 100
"""Runs with more clips than this get no per-clip series."""

DEFAULT_MAX_RUN_LABELS = 1000
"""Distinct ``run`` labels the outcome counters keep; later runs count under ``_other``."""

OUTCOMES_ROUTE = "/runs/{run}/outcomes"
"""The route whose answers the outcome counters read."""

_REJECTED_STATUSES = frozenset({409, 413, 422})
"""Statuses of a batch rejected whole (conflict, too large, invalid)."""

StateProvider = Callable[[], Iterable[Mapping[str, Any]]]
"""Returns every run's state in the wire form of ``GET /runs/{run}`` (alarms included)."""

_CLIP_GAUGES = (
    ("usage", "scheduler_clip_usage", "usage share u_i the controller steers"),
    ("target_usage", "scheduler_clip_target_usage", "target usage share u*_i"),
    ("clip_prob", "scheduler_clip_prob", "sampling probability p_i"),
    ("reward_weight", "scheduler_clip_reward_weight", "reward weight w_i"),
    ("success", "scheduler_clip_success", "moving average of episode success J^_i"),
)
"""Per-clip gauges: run-state field, metric name, help."""

Family = GaugeMetricFamily | CounterMetricFamily


@dataclass(frozen=True)
class Metrics:
    """The metric objects of one app."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    outcomes: Counter
    outcome_batches: Counter
    max_clips: int = DEFAULT_MAX_CLIPS
    max_run_labels: int = DEFAULT_MAX_RUN_LABELS
    _runs_seen: set[str] = field(default_factory=set, init=False, repr=False)
    _runs_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def run_label(self, run: str) -> str:
        """``run``, or ``_other`` once ``max_run_labels`` distinct runs have been labelled."""
        with self._runs_lock:
            if run in self._runs_seen:
                return run
            if len(self._runs_seen) < self.max_run_labels:
                self._runs_seen.add(run)
                return run
        return "_other"

    def record_outcomes(self, run: str, accepted: int, duplicates: int) -> None:
        """Count one accepted batch: its new and its duplicate outcomes."""
        label = self.run_label(run)
        self.outcomes.labels(label, "accepted").inc(accepted)
        self.outcomes.labels(label, "duplicate").inc(duplicates)
        self.outcome_batches.labels(label, "accepted").inc()

    def record_rejected_batch(self, run: str) -> None:
        """Count one batch rejected whole (nothing of it was stored)."""
        self.outcome_batches.labels(self.run_label(run), "rejected").inc()

    def render(self) -> bytes:
        """The text exposition of every series (reads the run states: call off the loop)."""
        return generate_latest(self.registry)


def new_metrics(
    max_clips: int = DEFAULT_MAX_CLIPS, max_run_labels: int = DEFAULT_MAX_RUN_LABELS
) -> Metrics:
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
        outcomes=Counter(
            "scheduler_outcomes",
            "posted outcomes by run: accepted (stored once) or duplicate (already stored)",
            ("run", "outcome"),
            registry=registry,
        ),
        outcome_batches=Counter(
            "scheduler_outcome_batches",
            "outcome batches by run: accepted, or rejected whole (409, 413, 422)",
            ("run", "result"),
            registry=registry,
        ),
        max_clips=max_clips,
        max_run_labels=max_run_labels,
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
        """Pass the request on, recording its status and duration (and outcome counts)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()
        ingest: list[bytes] | None = None  # the answer of an accepted outcome batch

        async def send_wrapper(message: Message) -> None:
            nonlocal status, ingest
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if status == 200 and self._is_ingest(scope):
                    ingest = []
            elif message["type"] == "http.response.body" and ingest is not None:
                ingest.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            labels = (_route_template(scope), str(scope["method"]), str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)
            if self._is_ingest(scope):
                self._count_outcomes(scope, status, ingest)

    @staticmethod
    def _is_ingest(scope: Scope) -> bool:
        return scope["method"] == "POST" and _route_template(scope) == OUTCOMES_ROUTE

    def _count_outcomes(self, scope: Scope, status: int, body: list[bytes] | None) -> None:
        run = str(scope.get("path_params", {}).get("run", ""))
        if status in _REJECTED_STATUSES:
            self.metrics.record_rejected_batch(run)
        elif status == 200 and body is not None:
            try:
                answer = orjson.loads(b"".join(body))
                accepted, duplicates = int(answer["accepted"]), len(answer["duplicates"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                logger.warning("could not read the outcome counts of an ingest answer")
                return
            self.metrics.record_outcomes(run, accepted, duplicates)


class RunStateCollector(Collector):
    """Per-run gauges read from the run states on each scrape (per-clip ones bounded)."""

    def __init__(self, state_provider: StateProvider, max_clips: int) -> None:
        self.state_provider = state_provider
        self.max_clips = max_clips

    def describe(self) -> Iterable[Metric]:
        """The families this collector yields (so registering it reads no state)."""
        return list(self._families().values())

    def _families(self) -> dict[str, Family]:
        run, clip, alarm = ["run"], ["run", "clip"], ["run", "alarm"]
        families: dict[str, Family] = {
            "up": GaugeMetricFamily(
                "scheduler_run_state_up", "1 if the run states could be read for this scrape"
            ),
            "clips": GaugeMetricFamily("scheduler_run_clips", "clips in the run", labels=run),
            "state_version": GaugeMetricFamily(
                "scheduler_run_state_version", "state version of the run", labels=run
            ),
            "paused": GaugeMetricFamily(
                "scheduler_run_paused", "1 if adaptation is paused", labels=run
            ),
            "episodes": CounterMetricFamily(
                "scheduler_run_episodes", "episodes counted by the run", labels=run
            ),
            "steps": CounterMetricFamily(
                "scheduler_run_steps", "env steps counted by the run", labels=run
            ),
            "updates": CounterMetricFamily(
                "scheduler_run_updates", "controller updates of the run", labels=run
            ),
            "learners": GaugeMetricFamily(
                "scheduler_run_learners", "learners that posted to the run", labels=run
            ),
            "stale_learners": GaugeMetricFamily(
                "scheduler_run_stale_learners", "learners silent past the stale limit", labels=run
            ),
            "alarm_value": GaugeMetricFamily(
                "scheduler_alarm_value", "measured value of a collapse alarm", labels=alarm
            ),
            "alarm_threshold": GaugeMetricFamily(
                "scheduler_alarm_threshold", "threshold of a collapse alarm", labels=alarm
            ),
            "alarm_firing": GaugeMetricFamily(
                "scheduler_alarm_firing", "1 if the collapse alarm fires", labels=alarm
            ),
        }
        for key, name, help_text in _CLIP_GAUGES:
            families[key] = GaugeMetricFamily(
                name, f"{help_text} (runs with at most the configured clip count)", labels=clip
            )
        return families

    def collect(self) -> Iterator[Metric]:
        """Read every run state and yield its gauges."""
        families = self._families()
        try:
            states = list(self.state_provider())
        except Exception:
            logger.exception("metrics: could not read the run states")
            states = []
            families["up"].add_metric([], 0.0)
        else:
            families["up"].add_metric([], 1.0)
        for state in states:
            self._add_run(families, state)
        yield from families.values()

    def _add_run(self, families: Mapping[str, Family], state: Mapping[str, Any]) -> None:
        name = str(state["name"])
        clips: list[Mapping[str, Any]] = list(state.get("clips", []))
        totals: Mapping[str, Any] = state.get("totals", {})
        learners: list[Mapping[str, Any]] = list(state.get("learners", []))
        families["clips"].add_metric([name], float(len(clips)))
        families["state_version"].add_metric([name], float(state.get("state_version", 0)))
        families["paused"].add_metric([name], 1.0 if state.get("paused") else 0.0)
        for key in ("episodes", "steps", "updates"):
            families[key].add_metric([name], float(totals.get(key, 0)))
        families["learners"].add_metric([name], float(len(learners)))
        families["stale_learners"].add_metric(
            [name], float(sum(1 for learner in learners if learner.get("stale")))
        )
        for alarm in state.get("alarms") or []:
            labels = [name, str(alarm["name"])]
            families["alarm_value"].add_metric(labels, float(alarm["value"]))
            families["alarm_threshold"].add_metric(labels, float(alarm["threshold"]))
            families["alarm_firing"].add_metric(labels, 1.0 if alarm["firing"] else 0.0)
        if len(clips) > self.max_clips:
            return
        for clip in clips:
            labels = [name, str(clip["name"])]
            for key, _, _ in _CLIP_GAUGES:
                value = clip.get(key)
                if value is not None:
                    families[key].add_metric(labels, float(value))


def service_state_provider(app: FastAPI) -> StateProvider:
    """Run states read through the app's service, from a worker thread of the scrape."""

    async def gather() -> list[RunState]:
        service = app.state.service
        states = []
        for summary in await service.list_runs():
            try:
                states.append(await service.get_run_state(summary.name))
            except NotFound:  # pragma: no cover - runs are never deleted
                continue
        return states

    def provide() -> list[dict[str, Any]]:
        # the reads run on the loop (the service hands them to its reader threads); the
        # wire form is built here, in the scrape's worker thread, off the loop
        states = anyio.from_thread.run(gather)
        return [RunStateOut.from_state(state).model_dump(mode="json") for state in states]

    return provide


def install_metrics(
    app: FastAPI,
    metrics: Metrics | None = None,
    state_provider: StateProvider | None = None,
) -> Metrics:
    """Add the request middleware and ``GET /metrics`` to ``app``; return its metrics.

    ``state_provider`` defaults to reading every run through ``app.state.service``.
    ``/metrics`` needs a read token when tokens are configured.
    """
    metrics = metrics or new_metrics()
    metrics.registry.register(
        RunStateCollector(state_provider or service_state_provider(app), metrics.max_clips)
    )
    app.state.metrics = metrics
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    async def scrape(_: ReadService) -> Response:
        body = await anyio.to_thread.run_sync(metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics
