"""Concurrent clients against real servers: every outcome counted exactly once.

Two uvicorn servers (two "replicas", each with its own engine and writer thread) share
one database; eight client threads post batches to them, re-posting some batches as a
client with retries would, while asking for clips. The counters must equal the sum of
the distinct outcomes, and every update interval must be handled at most once.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import httpx

from scheduler_service.config import Settings
from scheduler_service.server import serve_in_thread
from tests.scheduler_service.helpers import outcome, run_spec

CLIPS = ("a", "b", "c", "d")
CLIENTS = 8
BATCHES_PER_CLIENT = 12
BATCH_SIZE = 64
UPDATE_EVERY_STEPS = 5_000


def post_with_retries(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """Post until answered 200 (503 and transport errors are retried)."""
    for _ in range(50):
        try:
            response = client.post("/runs/shared/outcomes", json=body)
        except httpx.TransportError:
            continue
        if response.status_code == 200:
            answer: dict[str, Any] = response.json()
            return answer
        assert response.status_code == 503, response.text
    raise AssertionError("the batch was never accepted")


def client_loop(
    url: str, seed: int, sent: list[dict[str, Any]], answers: list[dict[str, Any]]
) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for b in range(BATCHES_PER_CLIENT):
            batch = [
                outcome(
                    rng.choice(CLIPS),
                    steps=rng.randint(1, 100),
                    success=rng.random(),
                    episode_id=f"c{seed}-b{b}-e{i}",
                )
                for i in range(BATCH_SIZE)
            ]
            body = {"learner_id": f"learner-{seed}", "outcomes": batch}
            sent.extend(batch)
            answers.append(post_with_retries(client, body))
            if rng.random() < 0.3:  # the answer was "lost": the client posts the batch again
                answers.append(post_with_retries(client, body))
            assert client.get("/runs/shared/next-clips", params={"n": 16}).status_code == 200


def test_counters_equal_the_accepted_outcomes_under_concurrent_clients_and_replicas(
    database_url: str,
) -> None:
    with (
        serve_in_thread(Settings(database_url=database_url)) as first,
        serve_in_thread(Settings(database_url=database_url)) as second,
    ):
        spec = run_spec(
            "shared",
            clips=CLIPS,
            strategy={"kind": "controller", "update_every_steps": UPDATE_EVERY_STEPS},
        )
        assert httpx.post(f"{first}/runs", json=spec).status_code == 201
        sent: list[list[dict[str, Any]]] = [[] for _ in range(CLIENTS)]
        answers: list[list[dict[str, Any]]] = [[] for _ in range(CLIENTS)]
        threads = [
            threading.Thread(
                target=client_loop,
                args=((first, second)[i % 2], i, sent[i], answers[i]),
            )
            for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120.0)
        assert not any(thread.is_alive() for thread in threads)
        state = httpx.get(f"{second}/runs/shared").json()
        history = httpx.get(f"{first}/runs/shared/history").json()["updates"]

    outcomes = [o for per_client in sent for o in per_client]
    assert len({o["episode_id"] for o in outcomes}) == len(outcomes)
    accepted = sum(a["accepted"] for per_client in answers for a in per_client)
    assert accepted == len(outcomes)
    episodes = Counter(o["clip"] for o in outcomes)
    steps: Counter[str] = Counter()
    for o in outcomes:
        steps[o["clip"]] += o["steps"]
    assert {c["name"]: c["episodes"] for c in state["clips"]} == {c: episodes[c] for c in CLIPS}
    assert {c["name"]: c["steps"] for c in state["clips"]} == {c: steps[c] for c in CLIPS}
    total_steps = sum(steps.values())
    assert state["totals"]["episodes"] == len(outcomes)
    assert state["totals"]["steps"] == total_steps
    assert sum(learner["episodes"] for learner in state["learners"]) == len(outcomes)
    # each interval at most once, in order
    assert [row["update"] for row in history] == list(range(1, len(history) + 1))
    intervals = [row["total_steps"] // UPDATE_EVERY_STEPS for row in history]
    assert intervals == sorted(set(intervals))
    assert 1 <= len(history) <= total_steps // UPDATE_EVERY_STEPS
    assert state["totals"]["updates"] == len(history)
