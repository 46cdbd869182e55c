"""Collapse alarms in ``GET /runs/{run}``."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from scheduler_service.algorithms.alarms import AlarmThresholds
from scheduler_service.config import Settings
from tests.scheduler_service.helpers import create_run, outcome, post_outcomes, running_app

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


async def test_alarm_thresholds_come_from_settings(sqlite_url: str) -> None:
    # top-1 share of a run fed evenly over 5 clips is ~0.2: a 0.1 threshold fires
    async with running_app(sqlite_url, alarms=AlarmThresholds(max_top1_share=0.1)) as client:
        created = await create_run(client, "strict", preset="design-note")
        names = [c["name"] for c in created["clips"]]
        await post_outcomes(client, "strict", [outcome(n) for n in names * 10])
        alarms = {a["name"]: a for a in (await client.get("/runs/strict")).json()["alarms"]}
        assert alarms["top1_share"]["threshold"] == pytest.approx(0.1)
        assert alarms["top1_share"]["firing"]


def test_alarm_thresholds_read_from_the_environment_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIPSCHED_ALARMS", '{"max_top1_share": 0.6, "stalled_updates": 10}')
    settings = Settings()
    assert settings.alarms == AlarmThresholds(max_top1_share=0.6, stalled_updates=10)
    monkeypatch.setenv("CLIPSCHED_ALARMS", '{"max_top1_share": 1.5}')
    with pytest.raises(ValidationError, match="max_top1_share"):
        Settings()
