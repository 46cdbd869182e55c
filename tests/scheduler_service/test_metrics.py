"""Prometheus ``/metrics``: requests by route template, outcome counters, run gauges, alarms."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scheduler_service.metrics import DEFAULT_MAX_CLIPS, RunStateCollector
from tests.scheduler_service.helpers import create_run, outcome, post_outcomes, running_app

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _labelled(samples: Samples, name: str, **labels: str) -> list[dict[str, str]]:
    """Label sets of the samples called ``name`` that carry ``labels``."""
    return [
        dict(key)
        for (sample, key) in samples
        if sample == name and labels.items() <= dict(key).items()
    ]


async def _scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return _samples(response.text)


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


async def test_metrics_count_accepted_duplicate_and_rejected_outcomes_per_run(
    client: httpx.AsyncClient,
) -> None:
    await create_run(client, "m2")
    batch = [outcome("Walk") for _ in range(5)]
    await post_outcomes(client, "m2", batch)
    await post_outcomes(client, "m2", [*batch[:2], outcome("Run")])  # 2 duplicates, 1 new
    bad = await client.post(
        "/runs/m2/outcomes",
        json={"learner_id": "l0", "outcomes": [outcome("Walk"), outcome("Nope")]},
    )
    assert bad.status_code == 422
    samples = await _scrape(client)
    assert _value(samples, "scheduler_outcomes_total", run="m2", outcome="accepted") == 6
    assert _value(samples, "scheduler_outcomes_total", run="m2", outcome="duplicate") == 2
    assert _value(samples, "scheduler_outcome_batches_total", run="m2", result="accepted") == 2
    assert _value(samples, "scheduler_outcome_batches_total", run="m2", result="rejected") == 1
    assert _value(samples, "scheduler_run_episodes_total", run="m2") == 6


async def test_metrics_export_run_gauges_and_alarms_matching_the_run_state(
    client: httpx.AsyncClient,
) -> None:
    await create_run(client, "m3", preset="design-note")
    await post_outcomes(client, "m3", [outcome("Walk") for _ in range(40)])
    await post_outcomes(client, "m3", [outcome("Idle") for _ in range(4)], learner="l1")
    samples = await _scrape(client)
    state = (await client.get("/runs/m3")).json()

    assert _value(samples, "scheduler_run_state_up") == 1
    assert _value(samples, "scheduler_run_clips", run="m3") == len(state["clips"])
    assert _value(samples, "scheduler_run_learners", run="m3") == 2
    assert _value(samples, "scheduler_run_steps_total", run="m3") == state["totals"]["steps"]
    for clip in state["clips"]:
        labels = {"run": "m3", "clip": clip["name"]}
        assert _value(samples, "scheduler_clip_usage", **labels) == pytest.approx(clip["usage"])
        assert _value(samples, "scheduler_clip_target_usage", **labels) == pytest.approx(
            clip["target_usage"]
        )
        assert _value(samples, "scheduler_clip_prob", **labels) == pytest.approx(clip["clip_prob"])
    for alarm in state["alarms"]:
        labels = {"run": "m3", "alarm": alarm["name"]}
        assert _value(samples, "scheduler_alarm_value", **labels) == pytest.approx(alarm["value"])
        assert _value(samples, "scheduler_alarm_firing", **labels) == float(alarm["firing"])
    assert _value(samples, "scheduler_alarm_firing", run="m3", alarm="top1_share") == 1


async def test_per_clip_series_vanish_above_the_clip_limit_but_alarms_stay(
    client: httpx.AsyncClient,
) -> None:
    big = [f"clip{i:03d}" for i in range(DEFAULT_MAX_CLIPS + 1)]
    await create_run(client, "small")
    await create_run(client, "big", clips=big)
    samples = await _scrape(client)
    assert _value(samples, "scheduler_run_clips", run="big") == len(big)
    assert len(_labelled(samples, "scheduler_clip_usage", run="small")) == 5
    for name in ("scheduler_clip_usage", "scheduler_clip_target_usage", "scheduler_clip_prob"):
        assert _labelled(samples, name, run="big") == []
    assert len(_labelled(samples, "scheduler_alarm_firing", run="big")) == 6


def _run(name: str, clips: int) -> dict[str, Any]:
    """A run state in wire form, as ``GET /runs/{run}`` answers it."""
    return {
        "name": name,
        "state_version": 1,
        "paused": False,
        "totals": {"episodes": 10, "steps": 100, "updates": 0},
        "learners": [{"learner_id": "a", "stale": False}, {"learner_id": "b", "stale": True}],
        "clips": [
            {
                "name": f"c{i}",
                "usage": 1 / clips,
                "target_usage": 1 / clips,
                "clip_prob": 1 / clips,
                "reward_weight": 1 / clips,
                "success": None,
            }
            for i in range(clips)
        ],
        "alarms": [{"name": "top1_share", "value": 0.9, "threshold": 0.5, "firing": True}],
    }


def _collect(provider: Any, max_clips: int) -> Samples:
    registry = CollectorRegistry()
    registry.register(RunStateCollector(provider, max_clips))
    return _samples(generate_latest(registry).decode())


def test_collector_honours_a_configured_clip_limit() -> None:
    def provider() -> Iterable[Mapping[str, Any]]:
        return [_run("three", 3), _run("four", 4)]

    samples = _collect(provider, max_clips=3)
    assert len(_labelled(samples, "scheduler_clip_prob", run="three")) == 3
    assert _labelled(samples, "scheduler_clip_prob", run="four") == []
    assert _labelled(samples, "scheduler_clip_success") == []  # no estimate yet: no sample
    assert _value(samples, "scheduler_run_stale_learners", run="four") == 1
    assert _value(samples, "scheduler_alarm_firing", run="four", alarm="top1_share") == 1


def test_collector_reports_down_instead_of_failing_when_states_cannot_be_read() -> None:
    def provider() -> Iterable[Mapping[str, Any]]:
        raise RuntimeError("database unreachable")

    samples = _collect(provider, max_clips=3)
    assert _value(samples, "scheduler_run_state_up") == 0
    assert _labelled(samples, "scheduler_run_clips") == []


async def test_metrics_need_a_token_when_tokens_are_configured(sqlite_url: str) -> None:
    async with running_app(sqlite_url, read_token="r-secret") as client:
        assert (await client.get("/metrics")).status_code == 401
        scraped = await client.get("/metrics", headers={"Authorization": "Bearer r-secret"})
        assert scraped.status_code == 200
        assert "scheduler_run_state_up 1.0" in scraped.text
