"""Controller updates through the real app: convergence, bandits, history, pause, freeze."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from scheduler_service.domain import DESIGN_NOTE_TARGETS
from tests.scheduler_service.helpers import (
    NOTE_CLIPS,
    create_run,
    next_clips,
    outcome,
    post_outcomes,
    running_app,
    scripted_learner,
)

pytestmark = pytest.mark.anyio

TARGETS = np.array([DESIGN_NOTE_TARGETS[c] for c in NOTE_CLIPS])
LENGTHS = np.array([10, 10, 10, 30, 10])
"""Episode length per clip: Run's episodes are 3x longer."""


async def state_of(client: httpx.AsyncClient, run: str) -> dict[str, Any]:
    answer: dict[str, Any] = (await client.get(f"/runs/{run}")).json()
    return answer


def probs(state: dict[str, Any]) -> np.ndarray:
    return np.array([c["clip_prob"] for c in state["clips"]])


@pytest.mark.parametrize("measure", ["steps", "episodes"])
async def test_controller_drives_usage_to_the_targets_when_one_clip_runs_3x_longer(
    client: httpx.AsyncClient, measure: str
) -> None:
    """Measured usage (counted by the test itself) ends within 0.02 L1 of the targets."""
    window_episodes = 1000
    await create_run(
        client,
        "loop",
        preset="design-note",
        strategy={
            "eta": 2.0,
            "usage_measure": measure,
            "update_every_steps": int(window_episodes * LENGTHS @ TARGETS),
        },
        # start far from the targets: Run (the long clip) at 0.6
        clip_probs={"Idle": 0.1, "Walk": 0.1, "Back": 0.1, "Run": 0.6, "Sprint": 0.1},
    )
    rng = np.random.default_rng(0)
    success = [0.8] * 5
    await scripted_learner(
        client, "loop", episodes=20_000, lengths=LENGTHS, success=success, rng=rng
    )
    before = await state_of(client, "loop")
    await scripted_learner(
        client, "loop", episodes=20_000, lengths=LENGTHS, success=success, rng=rng
    )
    after = await state_of(client, "loop")
    # usage over the second half only, from the service's own cumulative counters
    field = "steps" if measure == "steps" else "episodes"
    played = np.array(
        [a[field] - b[field] for a, b in zip(after["clips"], before["clips"], strict=True)]
    )
    usage = played / played.sum()
    assert np.abs(usage - TARGETS).sum() < 0.02, usage
    assert after["totals"]["updates"] >= 30
    if measure == "steps":  # the long clip needs a much lower probability than its target
        assert probs(after)[3] < 0.5 * TARGETS[3]


async def test_without_the_controller_the_long_clip_takes_far_more_than_its_share(
    client: httpx.AsyncClient,
) -> None:
    """The control for the test above: static p = u* measured by steps misses by ~0.45."""
    await create_run(
        client,
        "static",
        preset="design-note",
        strategy={"kind": "static", "usage_measure": "steps"},
    )
    await scripted_learner(
        client,
        "static",
        episodes=5_000,
        lengths=LENGTHS,
        success=[0.8] * 5,
        rng=np.random.default_rng(2),
    )
    state = await state_of(client, "static")
    steps = np.array([c["steps"] for c in state["clips"]])
    assert np.abs(steps / steps.sum() - TARGETS).sum() > 0.3


@pytest.mark.parametrize("kind", ["ucb", "thompson", "difficulty"])
async def test_bandits_raise_the_share_of_a_clip_whose_success_is_low(
    client: httpx.AsyncClient, kind: str
) -> None:
    await create_run(
        client,
        f"bandit-{kind}",
        strategy={"kind": kind, "update_every_steps": 2000, "eta": 2.0},
    )
    success = [0.9, 0.9, 0.1, 0.9, 0.9]  # Back is hard
    await scripted_learner(
        client,
        f"bandit-{kind}",
        episodes=3000,
        lengths=[10] * 5,
        success=success,
        rng=np.random.default_rng(1),
        envs=256,
    )
    state = await state_of(client, f"bandit-{kind}")
    p = probs(state)
    assert p[2] > 0.3 and p[2] == p.max(), p
    assert p.min() >= state["strategy"]["p_min"] - 1e-12  # the floor keeps every clip alive
    back = state["clips"][2]
    assert back["success"] < 0.5 and back["bandit"]["pulls"] == back["episodes"]


async def test_thompson_updates_are_reproducible_from_run_and_update_index(
    tmp_path: Path,
) -> None:
    """The same outcomes in two fresh databases give the same Thompson probabilities."""
    results = []
    for copy in ("first", "second"):
        async with running_app(f"sqlite:///{tmp_path / copy}.db") as client:
            await create_run(
                client,
                "ts",
                clips=("a", "b", "c"),
                strategy={"kind": "thompson", "update_every_steps": 30},
            )
            batch = [
                outcome(c, steps=10, success=s, episode_id=f"ts-{c}")
                for c, s in zip("abc", (1.0, 0.0, 0.5), strict=True)
            ]
            assert (await post_outcomes(client, "ts", batch))["updated"]
            results.append(probs(await state_of(client, "ts")))
    assert results[0].tolist() == results[1].tolist()
    assert results[0].sum() == pytest.approx(1.0) and (results[0] > 0).all()


async def test_one_update_per_interval_even_when_a_batch_crosses_several(
    client: httpx.AsyncClient,
) -> None:
    await create_run(
        client, "once", clips=("a", "b"), strategy={"kind": "controller", "update_every_steps": 100}
    )
    answer = await post_outcomes(client, "once", [outcome("a", steps=350)])
    assert answer["updated"] and answer["state_version"] == 2
    answer = await post_outcomes(client, "once", [outcome("b", steps=40)])  # 390: same interval
    assert not answer["updated"] and answer["state_version"] == 2
    answer = await post_outcomes(client, "once", [outcome("b", steps=10)])  # 400: next one
    assert answer["updated"] and answer["state_version"] == 3
    assert (await state_of(client, "once"))["totals"]["updates"] == 2


async def test_every_update_writes_a_history_row(client: httpx.AsyncClient) -> None:
    await create_run(client, "hist", preset="design-note", strategy={"update_every_steps": 500})
    for _ in range(4):
        await post_outcomes(client, "hist", [outcome(c, steps=100) for c in range(5)])
    history = (await client.get("/runs/hist/history")).json()
    assert history["clip_names"] == list(NOTE_CLIPS)
    rows = history["updates"]
    assert [r["update"] for r in rows] == [1, 2, 3, 4]
    assert [r["total_steps"] for r in rows] == [500, 1000, 1500, 2000]
    state = await state_of(client, "hist")
    last = rows[-1]
    assert last["clip_probs"] == pytest.approx(list(probs(state)))
    assert last["reward_weights"] == pytest.approx([c["reward_weight"] for c in state["clips"]])
    assert last["usage_window"] == pytest.approx([0.2] * 5)
    assert last["success"] == pytest.approx([1.0] * 5)
    for row in rows:
        for key in ("clip_probs", "usage", "reward_weights", "target_usage"):
            assert len(row[key]) == 5 and sum(row[key]) == pytest.approx(1.0)
    later = (await client.get("/runs/hist/history", params={"since_update": 2})).json()
    assert [r["update"] for r in later["updates"]] == [3, 4]


async def test_pause_stops_adaptation_but_keeps_measuring(client: httpx.AsyncClient) -> None:
    await create_run(
        client,
        "pause",
        clips=("a", "b"),
        strategy={"kind": "controller", "update_every_steps": 100},
    )
    paused = await client.post("/runs/pause/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    before = probs(paused.json())
    for _ in range(3):  # all usage on "a": an active controller would move p
        await post_outcomes(client, "pause", [outcome("a", steps=100)])
    state = await state_of(client, "pause")
    assert probs(state) == pytest.approx(before)
    assert state["totals"]["updates"] == 3
    assert state["clips"][0]["usage"] == pytest.approx(1.0)
    rows = (await client.get("/runs/pause/history")).json()["updates"]
    assert all(r["paused"] for r in rows)
    await client.post("/runs/pause/resume")
    await post_outcomes(client, "pause", [outcome("a", steps=100)])
    p = probs(await state_of(client, "pause"))
    assert p[0] < before[0]  # "a" was over-used: its probability goes down


async def test_frozen_clip_probs_stay_as_set_while_weights_still_adapt(
    client: httpx.AsyncClient,
) -> None:
    await create_run(
        client,
        "freeze",
        clips=("a", "b"),
        strategy={"kind": "controller", "update_every_steps": 100},
        aggregation={"kind": "lse", "adaptive_weights": True},
    )
    response = await client.put(
        "/runs/freeze/clip-probs", json={"clip_probs": {"a": 0.7, "b": 0.3}, "freeze": True}
    )
    assert response.status_code == 200
    assert response.json()["frozen"] == {"clip_probs": True, "reward_weights": False}
    weights_before = [c["reward_weight"] for c in response.json()["clips"]]
    for _ in range(3):
        await post_outcomes(client, "freeze", [outcome("a", steps=100)])
    state = await state_of(client, "freeze")
    assert probs(state) == pytest.approx([0.7, 0.3])
    assert [c["reward_weight"] for c in state["clips"]] != pytest.approx(weights_before)
    # a frozen vector is still what actors sample from
    ids = (await next_clips(client, "freeze", 4096))["clip_ids"]
    assert abs(np.mean(np.asarray(ids) == 0) - 0.7) < 0.05
