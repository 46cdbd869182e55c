"""Collapse alarms in ``GET /runs/{run}``."""

from __future__ import annotations

import httpx
import pytest

from tests.scheduler_service.helpers import create_run, outcome, post_outcomes

pytestmark = pytest.mark.anyio


async def test_fresh_run_state_lists_alarms_and_none_is_starved(
    client: httpx.AsyncClient,
) -> None:
    await create_run(client, "fresh", preset="design-note")
    state = (await client.get("/runs/fresh")).json()
    alarms = {a["name"]: a for a in state["alarms"]}
    assert set(alarms) >= {"effective_clips", "top1_share", "max_target_gap", "starved_clips"}
    assert not alarms["starved_clips"]["firing"]


async def test_run_fed_only_one_clip_fires_collapse_alarms(client: httpx.AsyncClient) -> None:
    created = await create_run(client, "collapsed", preset="design-note")
    only = created["clips"][0]["name"]
    for _ in range(5):
        await post_outcomes(client, "collapsed", [outcome(only) for _ in range(50)])
    state = (await client.get("/runs/collapsed")).json()
    alarms = {a["name"]: a for a in state["alarms"]}
    assert alarms["top1_share"]["firing"]
    assert alarms["top1_share"]["clips"] == [only]
    assert alarms["starved_clips"]["firing"]
    others = {c["name"] for c in created["clips"]} - {only}
    assert set(alarms["starved_clips"]["clips"]) == others
