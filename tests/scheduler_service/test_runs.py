"""Creating, listing and reading runs through the REST API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from scheduler_service.domain import DESIGN_NOTE_TARGETS
from tests.scheduler_service.helpers import NOTE_CLIPS, create_run, run_spec

pytestmark = pytest.mark.anyio


def by_name(state: dict[str, Any], field: str) -> dict[str, float]:
    return {c["name"]: c[field] for c in state["clips"]}


async def test_design_note_preset_fills_every_setting_in_one_line(
    client: httpx.AsyncClient,
) -> None:
    state = await create_run(client, "note", preset="design-note")
    assert state["strategy"]["kind"] == "controller"
    assert state["strategy"]["eta"] == 1.0
    assert state["strategy"]["update_every_steps"] == 50_000
    aggregation = state["aggregation"]
    assert (aggregation["kind"], aggregation["temperature"]) == ("lse", 0.3)
    assert aggregation["adaptive_weights"] and aggregation["weight_lr"] == 0.5
    assert aggregation["curriculum"]["clips"] == ["Idle", "Walk", "Back"]
    assert by_name(state, "target_usage") == pytest.approx(DESIGN_NOTE_TARGETS)
    assert by_name(state, "clip_prob") == pytest.approx(DESIGN_NOTE_TARGETS)
    # initial w = u*, with the early-curriculum boost on Idle, Walk and Back
    weights = by_name(state, "reward_weight")
    assert sum(weights.values()) == pytest.approx(1.0)
    assert (
        weights["Walk"] / weights["Run"] > DESIGN_NOTE_TARGETS["Walk"] / DESIGN_NOTE_TARGETS["Run"]
    )
    assert state["state_version"] == 1


async def test_fields_given_with_a_preset_override_it(client: httpx.AsyncClient) -> None:
    state = await create_run(
        client, "note-ucb", preset="design-note", strategy={"kind": "ucb", "ucb_c": 2.0}
    )
    assert state["strategy"]["kind"] == "ucb"
    assert state["strategy"]["ucb_c"] == 2.0
    assert state["strategy"]["update_every_steps"] == 50_000  # still the preset's


async def test_without_a_preset_a_run_is_static_uniform_and_max(client: httpx.AsyncClient) -> None:
    state = await create_run(client, "plain", clips=("a", "b", "c", "d"))
    assert state["strategy"]["kind"] == "static"
    assert state["aggregation"]["kind"] == "max"
    assert by_name(state, "target_usage") == pytest.approx(dict.fromkeys("abcd", 0.25))


async def test_targets_per_group_are_split_equally_inside_a_group(
    client: httpx.AsyncClient,
) -> None:
    clips = [
        {"name": "Idle", "group": "calm"},
        {"name": "Walk", "group": "gait"},
        {"name": "Run", "group": "gait"},
        {"name": "Sprint", "group": "fast"},
    ]
    response = await client.post(
        "/runs",
        json={
            "name": "groups",
            "clips": clips,
            "target_usage_by_group": {"calm": 1, "gait": 2, "fast": 1},
        },
    )
    assert response.status_code == 201, response.text
    targets = by_name(response.json(), "target_usage")
    assert targets == pytest.approx({"Idle": 0.25, "Walk": 0.25, "Run": 0.25, "Sprint": 0.25})


async def test_partial_targets_keep_the_other_clips_relative_shares(
    client: httpx.AsyncClient,
) -> None:
    state = await create_run(client, "partial", clips=("a", "b", "c"), target_usage={"a": 0.5})
    assert by_name(state, "target_usage") == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.25})


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"clips": [{"name": "a"}, {"name": "a"}]}, ["body", "clips", 1, "name"]),
        ({"target_usage": {"Idle": -0.1}}, ["body", "target_usage", "Idle"]),
        ({"target_usage": dict.fromkeys(NOTE_CLIPS, 0.0)}, ["body", "target_usage"]),
        ({"target_usage": {"Nope": 0.5}}, ["body", "target_usage", "Nope"]),
        ({"target_usage": {"Idle": 0.7, "Walk": 0.6}}, ["body", "target_usage"]),
        ({"target_usage_by_group": {"nogroup": 1.0}}, ["body", "target_usage_by_group", "nogroup"]),
        ({"strategy": {"p_min": 0.5}}, ["body", "strategy", "p_min"]),
        ({"strategy": {"kind": "greedy"}}, ["body", "strategy", "kind"]),
        ({"clips": []}, ["body", "clips"]),
        ({"name": "has space"}, ["body", "name"]),
        ({"unknown": 1}, ["body", "unknown"]),
        ({"preset": "fancy"}, ["body", "preset"]),
        (
            {"aggregation": {"curriculum": {"clips": ["Nope"]}}},
            ["body", "aggregation", "curriculum", "clips", 0],
        ),
    ],
)
async def test_bad_run_specs_get_422_naming_the_field_and_create_nothing(
    client: httpx.AsyncClient, body: dict[str, Any], loc: list[Any]
) -> None:
    response = await client.post("/runs", json={**run_spec("bad"), **body})
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in response.json()["detail"]]
    assert (await client.get("/runs/bad")).status_code == 404
    assert (await client.get("/runs")).json()["runs"] == []


async def test_nan_and_infinite_targets_are_rejected(client: httpx.AsyncClient) -> None:
    for literal in (b"NaN", b"Infinity", b"1e309"):
        body = b'{"name": "x", "clips": [{"name": "a"}], "target_usage": {"a": ' + literal + b"}}"
        response = await client.post(
            "/runs", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (literal, response.text)
    assert (await client.get("/runs")).json()["runs"] == []


async def test_a_taken_run_name_is_a_conflict(client: httpx.AsyncClient) -> None:
    await create_run(client, "twice")
    response = await client.post("/runs", json=run_spec("twice"))
    assert response.status_code == 409
    assert "twice" in response.json()["detail"]


async def test_runs_are_listed_with_their_totals(client: httpx.AsyncClient) -> None:
    await create_run(client, "b-run", preset="design-note")
    await create_run(client, "a-run", clips=("x", "y"))
    runs = (await client.get("/runs")).json()["runs"]
    assert [(r["name"], r["clip_count"], r["strategy"]) for r in runs] == [
        ("a-run", 2, "static"),
        ("b-run", 5, "controller"),
    ]
    assert runs[0]["totals"] == {"episodes": 0, "steps": 0, "updates": 0}


async def test_run_state_carries_its_version_as_etag(client: httpx.AsyncClient) -> None:
    await create_run(client, "etag")
    response = await client.get("/runs/etag")
    assert response.headers["ETag"] == f'"{response.json()["state_version"]}"'


async def test_unknown_runs_are_404(client: httpx.AsyncClient) -> None:
    for path in ("/runs/ghost", "/runs/ghost/history", "/runs/ghost/audit"):
        assert (await client.get(path)).status_code == 404, path
    assert (await client.get("/runs/ghost/next-clips", params={"n": 1})).status_code == 404


async def test_health_names_the_database(client: httpx.AsyncClient, database_url: str) -> None:
    answer = (await client.get("/health")).json()
    assert answer["status"] == "ok"
    assert answer["database"] == ("sqlite" if database_url.startswith("sqlite") else "postgresql")
