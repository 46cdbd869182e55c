"""Outcome ingestion: counting, idempotency, whole-batch rejection, normaliser moments."""

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


def clip_counts(state: dict[str, Any]) -> list[tuple[int, int]]:
    return [(c["episodes"], c["steps"]) for c in state["clips"]]


async def state_of(client: httpx.AsyncClient, run: str) -> dict[str, Any]:
    response = await client.get(f"/runs/{run}")
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


async def test_accepted_outcomes_are_counted_per_clip_learner_and_run(
    client: httpx.AsyncClient,
) -> None:
    await create_run(client, "count", clips=("a", "b", "c"))
    batch = [
        outcome("a", steps=10, success=1.0, episode_return=2.0),
        outcome(1, steps=20, success=0.0, episode_return=4.0),
        outcome("a", steps=30, success=0.5, episode_return=6.0),
    ]
    answer = await post_outcomes(client, "count", batch, learner="seed0")
    assert answer == {"accepted": 3, "duplicates": [], "state_version": 1, "updated": False}
    state = await state_of(client, "count")
    assert clip_counts(state) == [(2, 40), (1, 20), (0, 0)]
    a, b, c = state["clips"]
    assert a["success_mean"] == pytest.approx(0.75)
    assert a["return_mean"] == pytest.approx(4.0)
    assert b["success"] == 0.0 and c["success"] is None
    assert a["usage_total"] == pytest.approx(2 / 3)
    assert state["totals"] == {"episodes": 3, "steps": 60, "updates": 0}
    (learner,) = state["learners"]
    assert (learner["learner_id"], learner["episodes"], learner["steps"]) == ("seed0", 3, 60)
    assert learner["usage"] == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert learner["stale"] is False


async def test_a_repeated_batch_is_counted_once_and_listed_as_duplicates(
    client: httpx.AsyncClient,
) -> None:
    await create_run(client, "dups", clips=("a", "b"))
    batch = [outcome("a"), outcome("b")]
    await post_outcomes(client, "dups", batch)
    before = await state_of(client, "dups")
    again = await post_outcomes(client, "dups", [*batch, outcome("b", episode_id="new-1")])
    assert again["accepted"] == 1
    assert sorted(again["duplicates"]) == sorted(o["episode_id"] for o in batch)
    after = await state_of(client, "dups")
    assert before["totals"]["episodes"] + 1 == after["totals"]["episodes"]


async def test_an_episode_repeated_inside_one_batch_is_counted_once(
    client: httpx.AsyncClient,
) -> None:
    await create_run(client, "inner", clips=("a",))
    one = outcome("a", episode_id="same")
    answer = await post_outcomes(client, "inner", [one, one])
    assert (answer["accepted"], answer["duplicates"]) == (1, ["same"])


async def test_the_same_id_with_another_payload_is_409_and_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    await create_run(client, "clash", clips=("a", "b"))
    await post_outcomes(client, "clash", [outcome("a", episode_id="ep-1", steps=10)])
    before = await state_of(client, "clash")
    response = await client.post(
        "/runs/clash/outcomes",
        json={
            "learner_id": "l0",
            "outcomes": [
                outcome("b", episode_id="fresh"),
                outcome("a", episode_id="ep-1", steps=11),
            ],
        },
    )
    assert response.status_code == 409
    assert "ep-1" in response.json()["detail"]
    assert await state_of(client, "clash") == before


async def test_an_id_twice_in_one_batch_with_different_payloads_is_409(
    client: httpx.AsyncClient,
) -> None:
    await create_run(client, "clash2", clips=("a",))
    response = await client.post(
        "/runs/clash2/outcomes",
        json={
            "learner_id": "l0",
            "outcomes": [outcome("a", episode_id="x"), outcome("a", episode_id="x", steps=99)],
        },
    )
    assert response.status_code == 409
    assert (await state_of(client, "clash2"))["totals"]["episodes"] == 0


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"success": 1.5}, "success"),
        ({"success": -0.1}, "success"),
        ({"steps": 0}, "steps"),
        ({"clip": "Nope"}, "clip"),
        ({"clip": 7}, "clip"),
        ({"clip": -1}, "clip"),
        ({"episode_id": ""}, "episode_id"),
        ({"reward_terms": {"pose": {"count": 1, "mean": 0.0, "m2": -1.0}}}, "reward_terms"),
        ({"bogus": 1}, "bogus"),
    ],
)
async def test_one_bad_item_rejects_the_whole_batch_naming_index_and_field(
    client: httpx.AsyncClient, bad: dict[str, Any], field: str
) -> None:
    await create_run(client, "whole", clips=("a", "b"))
    batch = [outcome("a"), outcome("b"), {**outcome("a"), **bad}, outcome("b")]
    response = await client.post(
        "/runs/whole/outcomes", json={"learner_id": "l", "outcomes": batch}
    )
    assert response.status_code == 422, response.text
    locs = [error["loc"] for error in response.json()["detail"]]
    assert any(loc[:4] == ["body", "outcomes", 2, field] for loc in locs), locs
    state = await state_of(client, "whole")
    assert state["totals"]["episodes"] == 0 and state["learners"] == []


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e309"])
async def test_non_finite_numbers_in_a_batch_are_rejected(
    client: httpx.AsyncClient, literal: bytes
) -> None:
    await create_run(client, "finite", clips=("a",))
    body = (
        b'{"learner_id": "l", "outcomes": [{"episode_id": "e", "clip": 0, "steps": 1, '
        b'"return": ' + literal + b', "success": 1}]}'
    )
    response = await client.post(
        "/runs/finite/outcomes", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert (await state_of(client, "finite"))["totals"]["episodes"] == 0


async def test_malformed_json_is_a_422_with_a_clear_message(client: httpx.AsyncClient) -> None:
    await create_run(client, "malformed", clips=("a",))
    response = await client.post(
        "/runs/malformed/outcomes",
        content=b'{"learner_id": "l", "outcomes": [',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert (error["type"], error["msg"]) == ("json_invalid", "JSON decode error")


async def test_an_empty_batch_is_422(client: httpx.AsyncClient) -> None:
    await create_run(client, "empty", clips=("a",))
    response = await client.post("/runs/empty/outcomes", json={"learner_id": "l", "outcomes": []})
    assert response.status_code == 422


async def test_outcomes_for_an_unknown_run_are_404(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/runs/ghost/outcomes", json={"learner_id": "l", "outcomes": [outcome(0)]}
    )
    assert response.status_code == 404


async def test_a_batch_over_the_limit_is_413_and_stores_nothing(database_url: str) -> None:
    async with running_app(database_url, max_outcomes_per_batch=8) as client:
        await create_run(client, "big", clips=("a",))
        response = await client.post(
            "/runs/big/outcomes",
            json={"learner_id": "l", "outcomes": [outcome("a") for _ in range(9)]},
        )
        assert response.status_code == 413
        assert (await state_of(client, "big"))["totals"]["episodes"] == 0
        assert (await post_outcomes(client, "big", [outcome("a") for _ in range(8)]))[
            "accepted"
        ] == 8


async def test_the_default_limit_is_1024_outcomes(client: httpx.AsyncClient) -> None:
    await create_run(client, "limit", clips=("a",))
    assert (await post_outcomes(client, "limit", [outcome("a") for _ in range(1024)]))[
        "accepted"
    ] == 1024
    response = await client.post(
        "/runs/limit/outcomes",
        json={"learner_id": "l", "outcomes": [outcome("a") for _ in range(1025)]},
    )
    assert response.status_code == 413


async def test_reward_term_moments_merge_to_the_moments_of_all_samples(
    client: httpx.AsyncClient,
) -> None:
    """Per-episode (count, mean, m2) posted in several batches equal the pooled moments."""
    await create_run(client, "moments", clips=("a", "b"))
    rng = np.random.default_rng(7)
    samples: dict[tuple[str, str], list[np.ndarray]] = {}
    for _batch in range(3):
        batch = []
        for _episode in range(20):
            clip = str(rng.choice(["a", "b"]))
            terms = {}
            for term, scale in (("pose", 1.0), ("root", 50.0)):
                values = rng.normal(scale, scale, size=int(rng.integers(1, 30)))
                samples.setdefault((clip, term), []).append(values)
                mean = float(values.mean())
                terms[term] = {
                    "count": values.size,
                    "mean": mean,
                    "m2": float(((values - mean) ** 2).sum()),
                }
            batch.append(outcome(clip, terms=terms))
        await post_outcomes(client, "moments", batch)
    state = await state_of(client, "moments")
    for clip in state["clips"]:
        for term, stats in clip["normalizers"].items():
            pooled = np.concatenate(samples[(clip["name"], term)])
            assert stats["count"] == pooled.size
            assert stats["mean"] == pytest.approx(pooled.mean(), rel=1e-9)
            assert stats["std"] == pytest.approx(pooled.std(), rel=1e-9)
