"""A restart keeps every number: close the app, reopen it on the same database."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from tests.scheduler_service.helpers import (
    create_run,
    outcome,
    post_outcomes,
    running_app,
)

pytestmark = pytest.mark.anyio


async def snapshot(client: httpx.AsyncClient) -> dict[str, Any]:
    """Everything the API shows about the runs, minus the freshly sampled clip ids."""
    views: dict[str, Any] = {"runs": (await client.get("/runs")).json()}
    for run in ("note", "bandit"):
        views[run] = (await client.get(f"/runs/{run}")).json()
        views[f"{run}/history"] = (await client.get(f"/runs/{run}/history")).json()
        views[f"{run}/audit"] = (await client.get(f"/runs/{run}/audit")).json()
        answer = (await client.get(f"/runs/{run}/next-clips", params={"n": 1})).json()
        views[f"{run}/actor"] = (answer["state_version"], answer["actor_config"])
    return views


async def test_a_restart_keeps_every_number(database_url: str) -> None:
    rng = np.random.default_rng(3)
    async with running_app(database_url) as client:
        await create_run(client, "note", preset="design-note", strategy={"update_every_steps": 700})
        await create_run(
            client,
            "bandit",
            clips=("x", "y"),
            strategy={"kind": "thompson", "update_every_steps": 300},
        )
        for round_ in range(6):
            batch = [
                outcome(
                    int(rng.integers(5)),
                    steps=int(rng.integers(1, 60)),
                    success=float(rng.random()),
                    episode_return=float(rng.normal()),
                    terms={"pose": {"count": 5, "mean": float(rng.normal()), "m2": 1.5}},
                )
                for _ in range(25)
            ]
            await post_outcomes(client, "note", batch, learner=f"seed{round_ % 2}")
            await post_outcomes(
                client, "bandit", [outcome("x", steps=40, success=0.2), outcome("y", steps=40)]
            )
        await client.put("/runs/note/targets", json={"target_usage": {"Run": 0.3}})
        await client.put("/runs/bandit/clip-probs", json={"freeze": True})
        await client.post("/runs/bandit/pause")
        before = await snapshot(client)
    assert before["note"]["totals"]["updates"] > 0 and before["bandit"]["totals"]["updates"] > 0

    async with running_app(database_url) as client:
        after = await snapshot(client)
        assert after == before
        # and the run carries on from where it was: duplicates are still recognised
        again = await post_outcomes(
            client, "bandit", [outcome("x", episode_id="late"), outcome("x", episode_id="late")]
        )
        assert again["accepted"] == 1
