"""Guarantee 4: operator overrides and controller updates race without losing an override.

Each round sends ``PUT /targets`` with ``If-Match`` (the last state version the operator
saw) concurrently with an outcome batch that crosses ``update_every_steps`` (so a
controller update bumps the state version in the same transaction). Whichever commits
first wins: an acknowledged override is in the audit log with its values and version,
a stale one is a 412 that changed nothing, the final targets equal the last acknowledged
override, and they survive a restart.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from tests.guarantee_support import record_guarantee
from tests.scheduler_service.helpers import create_run, outcome, running_app

pytestmark = pytest.mark.anyio

CLIPS = ("a", "b", "c", "d")
UPDATE_EVERY = 100


async def race(database_url: str, rounds: int) -> dict[str, Any]:
    """Run the racing rounds, then restart; the figures."""
    rng = np.random.default_rng(4)
    acknowledged: list[tuple[int, dict[str, float]]] = []  # (state_version, targets sent)
    stale = 0
    stale_wrong = 0
    async with running_app(database_url) as client:
        state = await create_run(
            client, "race", clips=CLIPS, strategy={"kind": "controller", "update_every_steps": 100}
        )
        seen = state["state_version"]
        for r in range(rounds):
            raw = rng.uniform(0.05, 1.0, len(CLIPS))
            targets = dict(zip(CLIPS, (raw / raw.sum()).tolist(), strict=True))
            batch = [outcome(CLIPS[r % len(CLIPS)], steps=UPDATE_EVERY)]
            put_call = client.put(
                "/runs/race/targets",
                json={"target_usage": targets},
                headers={"If-Match": f'"{seen}"', "X-Operator": f"op-{r}"},
            )
            post_call = client.post(
                "/runs/race/outcomes", json={"learner_id": "l", "outcomes": batch}
            )
            # who reaches the writer first is left to a coin: both orders must be safe
            if rng.random() < 0.5:
                put, post = await asyncio.gather(put_call, post_call)
            else:
                post, put = await asyncio.gather(post_call, put_call)
            assert post.status_code == 200, post.text
            if put.status_code == 200:
                acknowledged.append((put.json()["state_version"], targets))
                seen = put.json()["state_version"]
            else:
                assert put.status_code == 412, put.text
                stale += 1
                current = put.json()["state_version"]
                stale_wrong += int(current <= seen)
                seen = current
            seen = max(seen, post.json()["state_version"])
        final = (await client.get("/runs/race")).json()
        audit = (await client.get("/runs/race/audit", params={"limit": 1000})).json()["entries"]
    async with running_app(database_url) as client:
        restarted = (await client.get("/runs/race")).json()

    overrides = {e["state_version"]: e for e in audit if e["action"] == "set_target_usage"}
    missing = 0
    for version, targets in acknowledged:
        entry = overrides.get(version)
        if entry is None or not all(
            abs(entry["new"]["target_usage"][c] - v) < 1e-9 for c, v in targets.items()
        ):
            missing += 1
    last = max(acknowledged, key=lambda a: a[0])[1] if acknowledged else {}
    final_targets = {c["name"]: c["target_usage"] for c in final["clips"]}
    restarted_targets = {c["name"]: c["target_usage"] for c in restarted["clips"]}
    return {
        "rounds": rounds,
        "acknowledged": len(acknowledged),
        "stale_412": stale,
        "stale_412_not_newer": stale_wrong,
        "audit_overrides": len(overrides),
        "acknowledged_missing_from_audit": missing,
        "controller_updates": final["totals"]["updates"],
        "final_equals_last": all(abs(final_targets[c] - v) < 1e-9 for c, v in last.items()),
        "restart_equals_final": restarted_targets == final_targets
        and restarted["state_version"] == final["state_version"],
    }


async def test_overrides_racing_controller_updates_are_never_lost(sqlite_url: str) -> None:
    figures = await race(sqlite_url, rounds=500)
    record_guarantee(
        4,
        f"{figures['rounds']} racing rounds: {figures['acknowledged']} overrides acknowledged "
        f"(missing from audit: {figures['acknowledged_missing_from_audit']}), "
        f"{figures['stale_412']} stale -> 412, {figures['controller_updates']} controller "
        f"updates, final = last acknowledged: {figures['final_equals_last']}, "
        f"survives restart: {figures['restart_equals_final']}",
        **figures,
    )
    assert figures["acknowledged"] > 0
    assert figures["acknowledged_missing_from_audit"] == 0
    assert figures["audit_overrides"] == figures["acknowledged"]
    assert figures["acknowledged"] + figures["stale_412"] == figures["rounds"]
    assert figures["stale_412_not_newer"] == 0
    assert figures["controller_updates"] > 0
    assert figures["final_equals_last"]
    assert figures["restart_equals_final"]
