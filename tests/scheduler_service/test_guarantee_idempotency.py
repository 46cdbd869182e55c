"""Guarantee 2: retries are idempotent and the duplicate check costs in proportion to the batch.

The same episode id with the same payload is counted once (a retry); with a different
payload it is a 409 that names the id and stores nothing of the batch. Posting 256
outcomes (fresh, then the same batch again as a retry) takes about as long against a run
holding 100k stored outcomes as against one holding 1k: the check reads only the ids of
the batch (primary-key lookups), never the run's history.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from scheduler_service.api.app import create_app
from scheduler_service.config import Settings
from scheduler_service.service import SchedulerService
from scheduler_service.store.engine import WRITE_OPTIONS
from tests.guarantee_support import record_guarantee
from tests.scheduler_service.helpers import create_run, outcome, post_outcomes

pytestmark = pytest.mark.anyio

BATCH = 256
REPEATS = 7
MAX_RATIO = 3.0


@asynccontextmanager
async def app_with_service(
    database_url: str,
) -> AsyncIterator[tuple[httpx.AsyncClient, SchedulerService]]:
    """The real app on ``database_url``: an in-process client and the app's service."""
    app = create_app(Settings(database_url=database_url))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://scheduler") as client,
    ):
        yield client, app.state.service


def store_history(service: SchedulerService, run: str, count: int) -> None:
    """Insert ``count`` stored outcomes of ``run`` through the repository in one transaction."""
    with service.engine.connect().execution_options(**WRITE_OPTIONS) as conn, conn.begin():
        run_id = conn.execute(text("SELECT id FROM runs WHERE name = :n"), {"n": run}).scalar_one()
        for start in range(0, count, 10_000):
            service.repo.insert_outcomes(
                conn,
                [
                    {
                        "run_id": run_id,
                        "episode_id": f"history-{i:09d}",
                        "clip_id": i % 5,
                        "learner_id": "history",
                        "steps": 10,
                        "episode_return": 1.0,
                        "success": 1.0,
                        "payload_hash": f"{i:032x}",
                        "received_at": 0.0,
                    }
                    for i in range(start, min(count, start + 10_000))
                ],
            )


async def batch_times(client: httpx.AsyncClient, run: str) -> tuple[float, float]:
    """Median seconds of a fresh 256-outcome post and of its retry (all duplicates)."""
    fresh: list[float] = []
    retried: list[float] = []
    for _ in range(REPEATS):
        batch = [outcome(i % 5, steps=1) for i in range(BATCH)]
        started = time.perf_counter()
        first = await post_outcomes(client, run, batch)
        fresh.append(time.perf_counter() - started)
        started = time.perf_counter()
        again = await post_outcomes(client, run, batch)
        retried.append(time.perf_counter() - started)
        assert first["accepted"] == BATCH and again["accepted"] == 0
        assert len(again["duplicates"]) == BATCH
    return statistics.median(fresh), statistics.median(retried)


async def test_a_retried_outcome_is_counted_once(sqlite_url: str) -> None:
    async with app_with_service(sqlite_url) as (client, _):
        await create_run(client, "r")
        batch = [outcome("Walk", episode_id="same-1"), outcome("Idle", episode_id="same-2")]
        for _ in range(3):
            await post_outcomes(client, "r", batch)
        within = await post_outcomes(client, "r", [outcome("Run", episode_id="x")] * 2)
        state = (await client.get("/runs/r")).json()
    assert within["accepted"] == 1 and within["duplicates"] == ["x"]
    assert state["totals"]["episodes"] == 3
    assert sum(c["episodes"] for c in state["clips"]) == 3


async def test_the_same_id_with_another_payload_is_409_naming_it(sqlite_url: str) -> None:
    async with app_with_service(sqlite_url) as (client, _):
        await create_run(client, "r")
        await post_outcomes(client, "r", [outcome("Walk", episode_id="ep-7", steps=10)])
        before = (await client.get("/runs/r")).json()
        response = await client.post(
            "/runs/r/outcomes",
            json={
                "learner_id": "l0",
                "outcomes": [outcome("Idle"), outcome("Walk", episode_id="ep-7", steps=11)],
            },
        )
        after = (await client.get("/runs/r")).json()
    assert response.status_code == 409
    assert "ep-7" in response.json()["detail"]
    assert after == before  # nothing of that batch was stored


async def test_the_duplicate_check_does_not_grow_with_the_stored_history(tmp_path: Path) -> None:
    figures: dict[str, Any] = {}
    for history in (1_000, 100_000):
        url = f"sqlite:///{tmp_path / f'history-{history}.db'}"
        async with app_with_service(url) as (client, service):
            await create_run(client, "r")
            store_history(service, "r", history)
            await batch_times(client, "r")  # warm-up: caches, prepared statements
            figures[history] = await batch_times(client, "r")
    fresh_ratio = figures[100_000][0] / figures[1_000][0]
    retry_ratio = figures[100_000][1] / figures[1_000][1]
    record_guarantee(
        2,
        f"256-outcome post, 100k vs 1k stored: fresh {figures[100_000][0] * 1e3:.1f} vs "
        f"{figures[1_000][0] * 1e3:.1f} ms (ratio {fresh_ratio:.2f}), retry "
        f"{figures[100_000][1] * 1e3:.1f} vs {figures[1_000][1] * 1e3:.1f} ms "
        f"(ratio {retry_ratio:.2f}); same id counted once, other payload 409",
        fresh_ms_1k=round(figures[1_000][0] * 1e3, 2),
        fresh_ms_100k=round(figures[100_000][0] * 1e3, 2),
        retry_ms_1k=round(figures[1_000][1] * 1e3, 2),
        retry_ms_100k=round(figures[100_000][1] * 1e3, 2),
        fresh_ratio=round(fresh_ratio, 3),
        retry_ratio=round(retry_ratio, 3),
    )
    assert fresh_ratio < MAX_RATIO
    assert retry_ratio < MAX_RATIO
