"""Helpers of the scheduler service tests: a running app, run specs, scripted outcomes."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np

from scheduler_service.api.app import create_app
from scheduler_service.config import Settings

NOTE_CLIPS = ("Idle", "Walk", "Back", "Run", "Sprint")


@asynccontextmanager
async def running_app(database_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (lifespan and all) on ``database_url``, with an in-process client."""
    app = create_app(Settings(database_url=database_url, **settings))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://scheduler") as client,
    ):
        yield client


def run_spec(name: str, clips: Sequence[str] = NOTE_CLIPS, **fields: Any) -> dict[str, Any]:
    """A ``POST /runs`` body."""
    return {"name": name, "clips": [{"name": c} for c in clips], **fields}


async def create_run(client: httpx.AsyncClient, name: str, **fields: Any) -> dict[str, Any]:
    """Create a run and return its state (asserts 201)."""
    response = await client.post("/runs", json=run_spec(name, **fields))
    assert response.status_code == 201, response.text
    state: dict[str, Any] = response.json()
    return state


_episode_counter = itertools.count()


def outcome(
    clip: int | str,
    *,
    steps: int = 10,
    success: float = 1.0,
    episode_return: float = 1.0,
    episode_id: str | None = None,
    terms: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """One outcome in wire form (a fresh episode id unless given)."""
    body: dict[str, Any] = {
        "episode_id": episode_id or f"ep-{next(_episode_counter):09d}",
        "clip": clip,
        "steps": steps,
        "return": episode_return,
        "success": success,
    }
    if terms is not None:
        body["reward_terms"] = terms
    return body


async def post_outcomes(
    client: httpx.AsyncClient, run: str, outcomes: Sequence[dict[str, Any]], learner: str = "l0"
) -> dict[str, Any]:
    """Post a batch (asserts 200) and return the answer."""
    response = await client.post(
        f"/runs/{run}/outcomes", json={"learner_id": learner, "outcomes": list(outcomes)}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def next_clips(client: httpx.AsyncClient, run: str, n: int, **params: Any) -> dict[str, Any]:
    """``GET next-clips`` (asserts 200)."""
    response = await client.get(f"/runs/{run}/next-clips", params={"n": n, **params})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def scripted_learner(
    client: httpx.AsyncClient,
    run: str,
    *,
    episodes: int,
    lengths: Sequence[int],
    success: Sequence[float],
    rng: np.random.Generator,
    envs: int = 512,
    learner: str = "scripted",
) -> None:
    """Play ``episodes`` episodes: clips from next-clips, lengths and success per clip.

    Each round asks for one clip per env, finishes every episode and posts the outcomes,
    so the controller's updates fall between rounds as they would in training.
    """
    played = 0
    while played < episodes:
        n = min(envs, episodes - played)
        answer = await next_clips(client, run, n)
        batch = [
            outcome(
                clip,
                steps=int(lengths[clip]),
                success=float(rng.random() < success[clip]),
            )
            for clip in answer["clip_ids"]
        ]
        for start in range(0, len(batch), 1024):
            await post_outcomes(client, run, batch[start : start + 1024], learner=learner)
        played += n
