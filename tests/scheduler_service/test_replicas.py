"""Two scheduler processes on one PostgreSQL database serve one run consistently.

Two real ``clipsched serve`` processes (uvicorn) on loopback share a fresh schema. Three
posting clients send 5,000 outcomes each in batches, alternating between the replicas,
with retries: some batches are re-posted whole to the other replica (a lost answer),
some carry earlier outcomes again, and some are posted to both replicas at the same
moment. Meanwhile an operator overrides target usage with ``If-Match`` on either replica
and, after every acknowledged override, asks the *other* replica for clips once.

Then: counters equal the unique outcomes; the controller updated exactly once per
interval; every acknowledged override is in the audit log and the last one is in effect;
the other replica served the new state version on the first request.
Skipped unless ``CLIPSCHED_TEST_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from sqlalchemy import create_engine, text

from tests.service_processes import (
    VENV_BIN,
    Process,
    base_env,
    free_port,
    postgres_schema,
    stopping,
    wait_healthy,
)

pytestmark = pytest.mark.postgres

RUN = "replicas"
CLIPS = [f"clip{i}" for i in range(8)]
CLIENTS = 3
OUTCOMES_PER_CLIENT = 5_000
BATCH = 250
MAX_STEPS = 40
UPDATE_EVERY = BATCH * MAX_STEPS
"""A batch holds at most ``UPDATE_EVERY`` steps, so it crosses at most one interval boundary:
exactly one controller update per interval is then ``updates == total_steps // UPDATE_EVERY``."""
MAX_OVERRIDE_ATTEMPTS = 400
LOAD_DEADLINE_S = 45.0


@dataclass
class LoadResult:
    """What the load did, as the clients saw it, and what the scheduler says afterwards."""

    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """episode_id -> the one payload sent for it (whatever the number of posts)."""
    learner_of: dict[str, str] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    """learner_id -> sum of ``accepted`` over its acknowledged posts."""
    duplicate_posts: int = 0
    racing_posts: int = 0
    acks: list[tuple[int, list[float]]] = field(default_factory=list)
    """(state_version, normalised target_usage) of every acknowledged override."""
    conflicts: int = 0
    """Overrides refused with 412 (someone changed the run in between)."""
    seen_after_ack: list[tuple[int, int]] = field(default_factory=list)
    """(acknowledged version, version the other replica served on the next request)."""
    freeze_check: tuple[int, list[float], int, list[float]] | None = None
    """(version and clip_probs acknowledged by A, version and clip_probs B served next)."""
    state: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    stored_outcomes: int = 0


def _post_retrying(clients: list[httpx.Client], first: int, body: bytes) -> dict[str, Any]:
    """POST outcomes, moving to the other replica on a transport error or 5xx (bounded)."""
    for attempt in range(8):
        client = clients[(first + attempt) % len(clients)]
        try:
            response = client.post(
                f"/runs/{RUN}/outcomes",
                content=body,
                headers={"Content-Type": "application/json"},
            )
        except httpx.TransportError:
            time.sleep(0.05 * 2**attempt)
            continue
        if response.status_code >= 500:
            time.sleep(0.05 * 2**attempt)
            continue
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer
    raise AssertionError("a batch was refused by both replicas 8 times")


def _poster(index: int, urls: list[str], result: LoadResult, stop_at: float) -> None:
    """One learner: fresh outcomes in batches, with re-posts, repeats and racing posts."""
    rng = np.random.default_rng(100 + index)
    learner_id = f"learner-{index}"
    sent: list[dict[str, Any]] = []
    accepted = 0
    clients = [httpx.Client(base_url=u, timeout=30.0) for u in urls]
    try:
        with ThreadPoolExecutor(max_workers=2) as race_pool:
            for b in range(OUTCOMES_PER_CLIENT // BATCH):
                assert time.monotonic() < stop_at, "load deadline passed"
                fresh = []
                for i in range(BATCH):
                    steps = int(rng.integers(1, MAX_STEPS + 1))
                    outcome = {
                        "episode_id": f"{learner_id}-{b * BATCH + i:06d}",
                        "clip": CLIPS[int(rng.integers(len(CLIPS)))],
                        "steps": steps,
                        "return": round(float(rng.normal(50.0, 10.0)), 3),
                        "success": float(rng.random() < 0.6),
                        "reward_terms": {
                            "pose": {
                                "count": steps,
                                "mean": round(float(rng.random()), 4),
                                "m2": round(float(rng.random()) * steps, 4),
                            }
                        },
                    }
                    fresh.append(outcome)
                    result.outcomes[outcome["episode_id"]] = outcome
                    result.learner_of[outcome["episode_id"]] = learner_id
                repeats: list[dict[str, Any]] = []
                if sent and rng.random() < 0.3:  # earlier outcomes again, exact same payload
                    picks = rng.choice(len(sent), size=min(25, len(sent)), replace=False)
                    repeats = [sent[int(j)] for j in picks]
                items = repeats + fresh
                body = orjson.dumps({"learner_id": learner_id, "outcomes": items})
                first = (index + b) % 2
                if rng.random() < 0.2:  # the same batch to both replicas at the same moment
                    result.racing_posts += 1
                    answers = list(
                        race_pool.map(
                            functools.partial(_post_retrying, clients, body=body),
                            (first, 1 - first),
                        )
                    )
                    got = sum(a["accepted"] for a in answers)
                    assert got == len(fresh), answers
                    accepted += got
                else:
                    answer = _post_retrying(clients, first, body)
                    assert answer["accepted"] == len(fresh), answer
                    assert set(answer["duplicates"]) == {o["episode_id"] for o in repeats}
                    accepted += answer["accepted"]
                    if rng.random() < 0.3:  # the answer was "lost": the whole batch again
                        result.duplicate_posts += 1
                        again = _post_retrying(clients, 1 - first, body)
                        assert again["accepted"] == 0, again
                        assert len(again["duplicates"]) == len(items)
                sent.extend(fresh)
    finally:
        for client in clients:
            client.close()
    result.accepted[learner_id] = accepted


def _operator(urls: list[str], result: LoadResult, posters_done: threading.Event) -> None:
    """Targets overrides with If-Match on a random replica; then one read on the other.

    A 412 answer carries the current version: the operator retries with it, as a client
    of ``If-Match`` should.
    """
    rng = np.random.default_rng(7)
    clients = [httpx.Client(base_url=u, timeout=30.0) for u in urls]
    version: int | None = None
    try:
        for _ in range(MAX_OVERRIDE_ATTEMPTS):
            if posters_done.is_set():
                break
            if version is None:
                read_on = int(rng.integers(2))
                version = int(clients[read_on].get(f"/runs/{RUN}").json()["state_version"])
            write_on = int(rng.integers(2))
            targets = {name: round(float(rng.uniform(0.5, 2.0)), 3) for name in CLIPS}
            response = clients[write_on].put(
                f"/runs/{RUN}/targets",
                json={"target_usage": targets},
                headers={"If-Match": str(version), "X-Operator": "ops"},
            )
            if response.status_code == 412:
                result.conflicts += 1
                version = int(response.json()["state_version"])
                continue
            assert response.status_code == 200, response.text
            state = response.json()
            acked = int(state["state_version"])
            result.acks.append((acked, [c["target_usage"] for c in state["clips"]]))
            other = clients[1 - write_on].get(
                f"/runs/{RUN}/next-clips", params={"n": 4, "known_version": acked - 1}
            )
            assert other.status_code == 200, other.text
            result.seen_after_ack.append((acked, int(other.json()["state_version"])))
            version = None
            time.sleep(0.01)
    finally:
        for client in clients:
            client.close()


def _freeze_on_a_read_on_b(urls: list[str], result: LoadResult) -> None:
    """B caches a view, A sets and freezes clip_probs, B's next answer must carry them."""
    with httpx.Client(base_url=urls[0]) as a, httpx.Client(base_url=urls[1]) as b:
        before = b.get(f"/runs/{RUN}/next-clips", params={"n": 1}).json()
        assert "actor_config" in before
        probs = {name: (8.0 if i == 3 else 1.0) for i, name in enumerate(CLIPS)}
        response = a.put(f"/runs/{RUN}/clip-probs", json={"clip_probs": probs, "freeze": True})
        assert response.status_code == 200, response.text
        state = response.json()
        after = b.get(
            f"/runs/{RUN}/next-clips",
            params={"n": 1, "known_version": before["state_version"]},
        ).json()
        result.freeze_check = (
            int(state["state_version"]),
            [c["clip_prob"] for c in state["clips"]],
            int(after["state_version"]),
            list(after.get("actor_config", {}).get("clip_probs", [])),
        )


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadResult]:
    """Two replicas on a fresh schema, the whole load run once, the final reads."""
    work = tmp_path_factory.mktemp("replicas")
    with postgres_schema() as database_url, stopping([]) as processes:
        urls = []
        # One after the other, as docker-compose.replicas.yml orders them (the first
        # creates the schema).
        for name in ("replica-a", "replica-b"):
            port = free_port()
            env = base_env(
                work,
                {
                    "CLIPSCHED_DATABASE_URL": database_url,
                    "CLIPSCHED_HOST": "127.0.0.1",
                    "CLIPSCHED_PORT": str(port),
                    "CLIPSCHED_LOG_LEVEL": "WARNING",
                },
            )
            process = Process(name, [str(VENV_BIN / "clipsched"), "serve"], env, work)
            processes.append(process)
            url = f"http://127.0.0.1:{port}"
            wait_healthy(process, url)
            urls.append(url)

        spec = {
            "name": RUN,
            "clips": [
                {"name": n, "group": "even" if i % 2 == 0 else "odd"} for i, n in enumerate(CLIPS)
            ],
            "strategy": {
                "kind": "controller",
                "eta": 1.0,
                "update_every_steps": UPDATE_EVERY,
                "usage_measure": "episodes",
            },
        }
        created = httpx.post(f"{urls[0]}/runs", json=spec, timeout=30.0)
        assert created.status_code == 201, created.text
        result = LoadResult()
        result.acks.append(
            (created.json()["state_version"], [c["target_usage"] for c in created.json()["clips"]])
        )

        stop_at = time.monotonic() + LOAD_DEADLINE_S
        posters_done = threading.Event()
        errors: list[BaseException] = []

        def guarded(target: Any, *args: Any) -> None:
            try:
                target(*args)
            except BaseException as exc:
                errors.append(exc)

        posters = [
            threading.Thread(target=guarded, args=(_poster, i, urls, result, stop_at))
            for i in range(CLIENTS)
        ]
        operator = threading.Thread(target=guarded, args=(_operator, urls, result, posters_done))
        for thread in [*posters, operator]:
            thread.start()
        for thread in posters:
            thread.join(timeout=max(0.0, stop_at - time.monotonic()) + 5.0)
        posters_done.set()
        operator.join(timeout=30.0)
        if any(t.is_alive() for t in [*posters, operator]):
            pytest.fail(f"the load did not finish within {LOAD_DEADLINE_S:.0f}s")
        if errors:
            raise errors[0]

        _freeze_on_a_read_on_b(urls, result)
        with httpx.Client(base_url=urls[1], timeout=30.0) as b:
            result.state = b.get(f"/runs/{RUN}").json()
            result.history = b.get(f"/runs/{RUN}/history", params={"limit": 10_000}).json()[
                "updates"
            ]
            result.audit = b.get(f"/runs/{RUN}/audit", params={"limit": 10_000}).json()["entries"]
        engine = create_engine(database_url)
        try:
            with engine.connect() as conn:
                result.stored_outcomes = conn.execute(
                    text("SELECT count(*) FROM outcomes")
                ).scalar_one()
        finally:
            engine.dispose()
        yield result


def test_counters_equal_the_unique_outcomes_across_retries_and_replicas(load: LoadResult) -> None:
    outcomes = list(load.outcomes.values())
    assert len(outcomes) == CLIENTS * OUTCOMES_PER_CLIENT
    assert load.duplicate_posts > 0 and load.racing_posts > 0  # the retries did happen
    assert load.accepted == {f"learner-{i}": OUTCOMES_PER_CLIENT for i in range(CLIENTS)}
    assert load.stored_outcomes == len(outcomes)

    totals = load.state["totals"]
    assert totals["episodes"] == len(outcomes)
    assert totals["steps"] == sum(o["steps"] for o in outcomes)
    for clip in load.state["clips"]:
        mine = [o for o in outcomes if o["clip"] == clip["name"]]
        assert clip["episodes"] == len(mine)
        assert clip["steps"] == sum(o["steps"] for o in mine)
        # the shared normaliser merged every outcome's moments once
        assert clip["normalizers"]["pose"]["count"] == pytest.approx(sum(o["steps"] for o in mine))
        mean = sum(o["reward_terms"]["pose"]["mean"] * o["steps"] for o in mine) / sum(
            o["steps"] for o in mine
        )
        assert clip["normalizers"]["pose"]["mean"] == pytest.approx(mean, rel=1e-9)

    learners = {entry["learner_id"]: entry for entry in load.state["learners"]}
    assert set(learners) == {f"learner-{i}" for i in range(CLIENTS)}
    for learner_id, entry in learners.items():
        mine = [o for e, o in load.outcomes.items() if load.learner_of[e] == learner_id]
        assert entry["episodes"] == len(mine)
        assert entry["steps"] == sum(o["steps"] for o in mine)
        assert sum(entry["usage"]) == pytest.approx(1.0)
        assert entry["stale"] is False


def test_the_controller_updates_exactly_once_per_interval(load: LoadResult) -> None:
    total_steps = load.state["totals"]["steps"]
    expected = total_steps // UPDATE_EVERY
    assert expected >= 10
    assert load.state["totals"]["updates"] == expected
    assert [row["update"] for row in load.history] == list(range(1, expected + 1))
    # update k ran in interval k: when the step total first reached k * UPDATE_EVERY
    assert [row["total_steps"] // UPDATE_EVERY for row in load.history] == list(
        range(1, expected + 1)
    )


def test_every_acknowledged_override_is_audited_and_the_last_is_in_effect(
    load: LoadResult,
) -> None:
    overrides = load.acks[1:]  # the first entry is the run as created
    assert len(overrides) >= 3  # the operator did get through between controller updates
    audited = {
        entry["state_version"]: entry
        for entry in load.audit
        if entry["action"] == "set_target_usage"
    }
    assert sorted(audited) == sorted(version for version, _ in overrides)
    for version, targets in overrides:
        new = audited[version]["new"]["target_usage"]
        assert [new[name] for name in CLIPS] == pytest.approx(targets)
        assert audited[version]["actor"] == "ops"
    last_targets = max(load.acks)[1]
    assert [c["target_usage"] for c in load.state["clips"]] == pytest.approx(last_targets)
    # a controller update never wrote back targets that were not set at that moment
    known = [targets for _, targets in load.acks]
    for row in load.history:
        assert any(row["target_usage"] == pytest.approx(t) for t in known)


def test_the_other_replica_serves_an_override_on_the_next_request(load: LoadResult) -> None:
    assert load.seen_after_ack
    assert all(seen >= acked for acked, seen in load.seen_after_ack)
    assert load.freeze_check is not None
    version_a, probs_a, version_b, probs_b = load.freeze_check
    assert version_b == version_a
    assert probs_b == pytest.approx(probs_a)
    assert probs_a[3] == max(probs_a)
