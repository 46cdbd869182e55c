"""Guarantee 6 (hand-made input): bad requests are 4xx, never 5xx, and change nothing.

NaN and ``1e309``, negative shares and shares summing to 0, unknown clips and runs,
empty and oversize batches, one bad item in a good batch (the whole batch is rejected),
a 50 MB chunked body (413 after reading about the cap, not the whole body: the bytes the
app pulled from the stream are counted), 10,000 nested arrays: each is a 4xx, and the
run's state, history and audit log are the same afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from tests.guarantee_support import record_guarantee
from tests.scheduler_service.helpers import create_run, outcome, post_outcomes, running_app

pytestmark = pytest.mark.anyio

BODY_CAP = 8 * 1024 * 1024
"""The service's default ``max_body_bytes``."""
HUGE = 50 * 1024 * 1024
CHUNK = 64 * 1024


def outcome_text(value: str) -> bytes:
    """An outcome batch whose ``return`` is the raw JSON token ``value``."""
    return (
        b'{"learner_id": "l", "outcomes": [{"episode_id": "bad-1", "clip": "Walk", "steps": 5,'
        b' "return": ' + value.encode() + b', "success": 1}]}'
    )


BAD_REQUESTS: list[tuple[str, str, str, bytes]] = [
    ("NaN return", "POST", "/runs/r/outcomes", outcome_text("NaN")),
    ("1e309 return", "POST", "/runs/r/outcomes", outcome_text("1e309")),
    ("Infinity return", "POST", "/runs/r/outcomes", outcome_text("Infinity")),
    ("negative share", "PUT", "/runs/r/targets", b'{"target_usage": {"Walk": -0.1}}'),
    (
        "shares summing to 0",
        "PUT",
        "/runs/r/targets",
        orjson.dumps({"target_usage": dict.fromkeys(("Idle", "Walk", "Back", "Run", "Sprint"), 0)}),
    ),
    ("NaN share", "PUT", "/runs/r/targets", b'{"target_usage": {"Walk": NaN}}'),
    ("unknown clip in targets", "PUT", "/runs/r/targets", b'{"target_usage": {"Fly": 0.5}}'),
    ("unknown clip probs", "PUT", "/runs/r/clip-probs", b'{"clip_probs": {"Fly": 0.5}}'),
    (
        "unknown clip in outcomes",
        "POST",
        "/runs/r/outcomes",
        orjson.dumps({"learner_id": "l", "outcomes": [outcome("Fly")]}),
    ),
    (
        "unknown run outcomes",
        "POST",
        "/runs/nope/outcomes",
        orjson.dumps({"learner_id": "l", "outcomes": [outcome("Walk")]}),
    ),
    ("unknown run targets", "PUT", "/runs/nope/targets", b'{"target_usage": {"Walk": 0.5}}'),
    ("unknown run state", "GET", "/runs/nope", b""),
    ("empty batch", "POST", "/runs/r/outcomes", b'{"learner_id": "l", "outcomes": []}'),
    (
        "oversize batch (1025)",
        "POST",
        "/runs/r/outcomes",
        orjson.dumps({"learner_id": "l", "outcomes": [outcome("Walk") for _ in range(1025)]}),
    ),
    (
        "one bad item in a good batch",
        "POST",
        "/runs/r/outcomes",
        orjson.dumps(
            {
                "learner_id": "l",
                "outcomes": [outcome("Walk"), outcome("Idle"), outcome("Run", success=1.5)],
            }
        ),
    ),
    ("deep JSON (10,000 arrays)", "POST", "/runs/r/outcomes", b"[" * 10_000 + b"]" * 10_000),
    (
        "deep JSON run spec",
        "POST",
        "/runs",
        b'{"name": "x", "clips": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    ),
    ("malformed JSON", "POST", "/runs/r/outcomes", b'{"learner_id": '),
    ("n out of range", "GET", "/runs/r/next-clips?n=0", b""),
    ("bad If-Match", "PUT", "/runs/r/targets", b'{"target_usage": {"Walk": 0.5}}'),
]


async def snapshot(client: httpx.AsyncClient) -> dict[str, Any]:
    """Everything the API shows of run ``r`` and the run list."""
    return {
        "state": (await client.get("/runs/r")).json(),
        "history": (await client.get("/runs/r/history")).json(),
        "audit": (await client.get("/runs/r/audit")).json(),
        "runs": (await client.get("/runs")).json(),
    }


async def test_bad_requests_are_4xx_and_change_nothing(sqlite_url: str) -> None:
    async with running_app(sqlite_url) as client:
        await create_run(client, "r", strategy={"kind": "controller", "update_every_steps": 50})
        await post_outcomes(client, "r", [outcome(i % 5, steps=20) for i in range(10)])
        before = await snapshot(client)
        statuses: dict[str, int] = {}
        for name, method, path, body in BAD_REQUESTS:
            headers = {"Content-Type": "application/json"}
            if name == "bad If-Match":
                headers["If-Match"] = "yesterday"
            response = await client.request(method, path, content=body, headers=headers)
            statuses[name] = response.status_code
        rejected_item = await client.post(
            "/runs/r/outcomes",
            json={"learner_id": "l", "outcomes": [outcome("Walk"), outcome("Run", success=1.5)]},
        )
        after = await snapshot(client)
    not_4xx = {n: s for n, s in statuses.items() if not 400 <= s < 500}
    record_guarantee(
        6,
        f"{len(BAD_REQUESTS)} hand-made bad requests: all 4xx ({sorted(set(statuses.values()))}),"
        f" 5xx=0, run state unchanged: {after == before}",
        hand_made=len(BAD_REQUESTS),
        statuses=statuses,
        not_4xx=len(not_4xx),
        state_unchanged=after == before,
    )
    assert not not_4xx, not_4xx
    assert statuses["oversize batch (1025)"] == 413
    assert statuses["unknown run state"] == 404
    assert rejected_item.status_code == 422
    assert rejected_item.json()["detail"][0]["loc"] == ["body", "outcomes", 1, "success"]
    assert after == before


async def test_a_50_mb_chunked_body_is_413_without_being_read_whole(sqlite_url: str) -> None:
    consumed = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal consumed
        block = b" " * CHUNK
        for _ in range(HUGE // CHUNK):
            consumed += CHUNK
            yield block

    async with running_app(sqlite_url) as client:
        await create_run(client, "r")
        before = await snapshot(client)
        response = await client.post(
            "/runs/r/outcomes", content=chunks(), headers={"Content-Type": "application/json"}
        )
        declared = await client.post(
            "/runs/r/outcomes",
            content=b"{}",
            headers={"Content-Type": "application/json", "Content-Length": str(HUGE)},
        )
        after = await snapshot(client)
    record_guarantee(
        6,
        f"50 MB chunked body: {response.status_code} after the app pulled "
        f"{consumed / 2**20:.2f} MiB (cap {BODY_CAP / 2**20:.0f} MiB); declared 50 MB: "
        f"{declared.status_code}",
        streamed_status=response.status_code,
        streamed_bytes_consumed=consumed,
        body_cap=BODY_CAP,
        declared_status=declared.status_code,
    )
    assert response.status_code == 413
    assert consumed <= BODY_CAP + 2 * CHUNK
    assert declared.status_code == 413
    assert after == before
