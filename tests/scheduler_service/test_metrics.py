"""Prometheus ``/metrics``: request counters and latency by route template."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.scheduler_service.helpers import create_run

pytestmark = pytest.mark.anyio


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await create_run(client, "m1", preset="design-note")
    for _ in range(3):
        assert (await client.get("/runs/m1")).status_code == 200
    assert (await client.get("/runs/missing")).status_code == 404
    text = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counts = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in families["scheduler_http_requests"].samples
        if s.name == "scheduler_http_requests_total"
    }
    assert counts[("/runs/{run}", "GET", "200")] == 3
    assert counts[("/runs/{run}", "GET", "404")] == 1
    assert counts[("/runs", "POST", "201")] == 1
    latency = families["scheduler_http_request_seconds"].samples
    assert any(s.name.endswith("_count") and s.value == 3 for s in latency)
