"""Operator overrides: targets, probabilities, weights, pause; If-Match and the audit log."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.scheduler_service.helpers import create_run, outcome, post_outcomes

pytestmark = pytest.mark.anyio


def by_name(state: dict[str, Any], field: str) -> dict[str, float]:
    return {c["name"]: c[field] for c in state["clips"]}


async def audit_of(client: httpx.AsyncClient, run: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = (await client.get(f"/runs/{run}/audit")).json()["entries"]
    return entries


async def test_a_stale_if_match_is_412_with_the_current_version_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    await create_run(client, "stale", clips=("a", "b"))
    ok = await client.put(
        "/runs/stale/targets", json={"target_usage": {"a": 0.7}}, headers={"If-Match": "1"}
    )
    assert ok.status_code == 200 and ok.json()["state_version"] == 2
    assert ok.headers["ETag"] == '"2"'
    response = await client.put(
        "/runs/stale/targets", json={"target_usage": {"a": 0.1}}, headers={"If-Match": "1"}
    )
    assert response.status_code == 412
    assert response.json()["state_version"] == 2
    state = (await client.get("/runs/stale")).json()
    assert by_name(state, "target_usage") == pytest.approx({"a": 0.7, "b": 0.3})
    assert [e["action"] for e in await audit_of(client, "stale")] == [
        "create_run",
        "set_target_usage",
    ]


@pytest.mark.parametrize("header", ['"3"', 'W/"3"', "3", "*"])
async def test_if_match_accepts_plain_quoted_and_weak_versions(
    client: httpx.AsyncClient, header: str
) -> None:
    await create_run(client, "forms", clips=("a", "b"))
    await client.post("/runs/forms/pause")
    await client.post("/runs/forms/resume")  # version 3
    response = await client.post("/runs/forms/pause", headers={"If-Match": header})
    assert response.status_code == 200, response.text


async def test_a_malformed_if_match_is_422(client: httpx.AsyncClient) -> None:
    await create_run(client, "garbage", clips=("a",))
    response = await client.post("/runs/garbage/pause", headers={"If-Match": "yesterday"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "If-Match"]


async def test_a_controller_update_makes_an_operators_view_stale(
    client: httpx.AsyncClient,
) -> None:
    state = await create_run(
        client, "race", clips=("a", "b"), strategy={"kind": "controller", "update_every_steps": 10}
    )
    seen = state["state_version"]
    await post_outcomes(client, "race", [outcome("a", steps=10)])  # an update lands meanwhile
    response = await client.put(
        "/runs/race/clip-probs", json={"clip_probs": {"a": 0.9}}, headers={"If-Match": str(seen)}
    )
    assert response.status_code == 412


async def test_an_update_starts_from_the_overridden_probabilities(
    client: httpx.AsyncClient,
) -> None:
    await create_run(
        client, "keep", clips=("a", "b"), strategy={"kind": "controller", "update_every_steps": 20}
    )
    await client.put("/runs/keep/clip-probs", json={"clip_probs": {"a": 0.8, "b": 0.2}})
    # usage equals the (uniform) targets, so the controller leaves p where the operator put it
    answer = await post_outcomes(client, "keep", [outcome("a"), outcome("b")])
    assert answer["updated"]
    state = (await client.get("/runs/keep")).json()
    assert by_name(state, "clip_prob") == pytest.approx({"a": 0.8, "b": 0.2})


async def test_partial_targets_keep_the_others_relative_shares_and_are_audited(
    client: httpx.AsyncClient,
) -> None:
    await create_run(client, "partial", clips=("a", "b", "c"), target_usage={"b": 0.5})
    response = await client.put(
        "/runs/partial/targets",
        json={"target_usage": {"a": 0.4}},
        headers={"X-Operator": "alice"},
    )
    assert response.status_code == 200
    # b and c shared 0.5 / 0.25 of what a leaves (0.6): 0.4 and 0.2
    targets = by_name(response.json(), "target_usage")
    assert targets == pytest.approx({"a": 0.4, "b": 0.4, "c": 0.2})
    entry = (await audit_of(client, "partial"))[-1]
    assert (entry["actor"], entry["action"]) == ("alice", "set_target_usage")
    assert entry["old"]["target_usage"] == pytest.approx({"a": 0.25, "b": 0.5, "c": 0.25})
    assert entry["new"]["target_usage"] == pytest.approx(targets)
    assert entry["state_version"] == response.json()["state_version"]


async def test_naming_every_clip_gives_relative_targets(client: httpx.AsyncClient) -> None:
    await create_run(client, "relative", clips=("a", "b", "c"))
    response = await client.put(
        "/runs/relative/targets", json={"target_usage": {"a": 2, "b": 1, "c": 1}}
    )
    assert by_name(response.json(), "target_usage") == pytest.approx(
        {"a": 0.5, "b": 0.25, "c": 0.25}
    )


async def test_targets_can_be_overridden_per_group(client: httpx.AsyncClient) -> None:
    clips = [{"name": "Walk", "group": "gait"}, {"name": "Run", "group": "gait"}, {"name": "Idle"}]
    response = await client.post("/runs", json={"name": "groups", "clips": clips})
    assert response.status_code == 201
    response = await client.put(
        "/runs/groups/targets", json={"target_usage_by_group": {"gait": 0.8}}
    )
    assert response.status_code == 200
    targets = by_name(response.json(), "target_usage")
    assert targets == pytest.approx({"Walk": 0.4, "Run": 0.4, "Idle": 0.2})


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"target_usage": {"a": 0.8, "b": 0.5}}, ["body", "target_usage"]),
        ({"target_usage": {"zzz": 0.1}}, ["body", "target_usage", "zzz"]),
        ({"target_usage": {"a": -1}}, ["body", "target_usage", "a"]),
        ({"target_usage": {"a": 0, "b": 0, "c": 0}}, ["body", "target_usage"]),
        ({"target_usage": {"a": 0.1}, "target_usage_by_group": {"g": 1}}, ["body", "target_usage"]),
        ({}, ["body", "target_usage"]),
        ({"target_usage_by_group": {"nope": 0.5}}, ["body", "target_usage_by_group", "nope"]),
    ],
)
async def test_bad_target_overrides_are_422_and_change_nothing(
    client: httpx.AsyncClient, body: dict[str, Any], loc: list[Any]
) -> None:
    before = await create_run(client, "bad", clips=("a", "b", "c"))
    response = await client.put("/runs/bad/targets", json=body)
    assert response.status_code == 422, response.text
    assert loc in [e["loc"] for e in response.json()["detail"]]
    after = (await client.get("/runs/bad")).json()
    assert after["state_version"] == before["state_version"]
    assert by_name(after, "target_usage") == by_name(before, "target_usage")


async def test_nan_in_an_override_is_rejected(client: httpx.AsyncClient) -> None:
    await create_run(client, "nan", clips=("a", "b"))
    response = await client.put(
        "/runs/nan/clip-probs",
        content=b'{"clip_probs": {"a": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422


async def test_freeze_alone_toggles_without_changing_values(client: httpx.AsyncClient) -> None:
    state = await create_run(client, "toggle", clips=("a", "b"), clip_probs={"a": 0.6})
    frozen = await client.put("/runs/toggle/clip-probs", json={"freeze": True})
    assert frozen.json()["frozen"]["clip_probs"] is True
    assert by_name(frozen.json(), "clip_prob") == by_name(state, "clip_prob")
    thawed = await client.put("/runs/toggle/clip-probs", json={"freeze": False})
    assert thawed.json()["frozen"]["clip_probs"] is False
    entry = (await audit_of(client, "toggle"))[-1]
    assert (entry["old"]["frozen"], entry["new"]["frozen"]) == (True, False)
    assert (await client.put("/runs/toggle/clip-probs", json={})).status_code == 422


async def test_frozen_reward_weights_stay_as_set(client: httpx.AsyncClient) -> None:
    await create_run(
        client,
        "weights",
        clips=("a", "b"),
        strategy={"kind": "controller", "update_every_steps": 10},
        aggregation={"kind": "lse", "adaptive_weights": True},
    )
    response = await client.put(
        "/runs/weights/reward-weights", json={"reward_weights": {"a": 3, "b": 1}, "freeze": True}
    )
    assert by_name(response.json(), "reward_weight") == pytest.approx({"a": 0.75, "b": 0.25})
    for _ in range(3):
        await post_outcomes(client, "weights", [outcome("b", steps=10)])
    state = (await client.get("/runs/weights")).json()
    assert state["totals"]["updates"] == 3
    assert by_name(state, "reward_weight") == pytest.approx({"a": 0.75, "b": 0.25})


async def test_pausing_twice_changes_nothing_the_second_time(client: httpx.AsyncClient) -> None:
    await create_run(client, "twice", clips=("a",))
    first = (await client.post("/runs/twice/pause")).json()
    second = (await client.post("/runs/twice/pause")).json()
    assert first["state_version"] == second["state_version"] == 2
    assert [e["action"] for e in await audit_of(client, "twice")] == ["create_run", "pause"]


async def test_overrides_reach_actors_through_a_new_state_version(
    client: httpx.AsyncClient,
) -> None:
    await create_run(client, "reach", clips=("a", "b"))
    response = await client.put(
        "/runs/reach/reward-weights", json={"reward_weights": {"a": 1, "b": 0}}
    )
    version = response.json()["state_version"]
    answer = (
        await client.get("/runs/reach/next-clips", params={"n": 1, "known_version": version - 1})
    ).json()
    assert answer["state_version"] == version
    assert answer["actor_config"]["reward_weights"] == [1.0, 0.0]
