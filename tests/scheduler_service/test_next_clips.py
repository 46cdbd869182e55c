"""The actors' hot path: ``GET /runs/{run}/next-clips``."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.scheduler_service.helpers import (
    create_run,
    next_clips,
    outcome,
    post_outcomes,
    running_app,
)

pytestmark = pytest.mark.anyio

CHI2_LIMIT_DF4 = 40.0
"""P(chi2_4 > 40) = e^-20 (1 + 20) ~ 4e-8: a correct sampler essentially never fails."""


async def test_up_to_4096_clip_ids_per_call(client: httpx.AsyncClient) -> None:
    await create_run(client, "many")
    answer = await next_clips(client, "many", 4096)
    ids = np.asarray(answer["clip_ids"])
    assert ids.shape == (4096,)
    assert ids.min() >= 0 and ids.max() < 5


@pytest.mark.parametrize("n", [0, 4097, -1])
async def test_n_outside_1_to_4096_is_422(client: httpx.AsyncClient, n: int) -> None:
    await create_run(client, "bounds")
    response = await client.get("/runs/bounds/next-clips", params={"n": n})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "n"]


async def test_actor_config_is_sent_only_when_the_known_version_is_stale(
    client: httpx.AsyncClient,
) -> None:
    state = await create_run(client, "versions", preset="design-note")
    version = state["state_version"]
    first = await next_clips(client, "versions", 4)
    config = first["actor_config"]
    assert config["clip_names"] == [c["name"] for c in state["clips"]]
    assert config["clip_probs"] == pytest.approx([c["clip_prob"] for c in state["clips"]])
    assert config["reward_weights"] == pytest.approx([c["reward_weight"] for c in state["clips"]])
    assert config["aggregation"] == {"kind": "lse", "temperature": 0.3, "threshold_delta": 0.5}
    current = await next_clips(client, "versions", 4, known_version=version)
    assert current["state_version"] == version and "actor_config" not in current
    stale = await next_clips(client, "versions", 4, known_version=version - 1)
    assert stale["actor_config"] == config


async def test_sampled_clips_follow_the_clip_probabilities(client: httpx.AsyncClient) -> None:
    probs = {"Idle": 0.4, "Walk": 0.3, "Back": 0.15, "Run": 0.1, "Sprint": 0.05}
    await create_run(client, "dist", clip_probs=probs)
    counts = np.zeros(5)
    for _ in range(10):
        ids = (await next_clips(client, "dist", 4096))["clip_ids"]
        counts += np.bincount(ids, minlength=5)
    expected = np.array(list(probs.values())) * counts.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < CHI2_LIMIT_DF4, (counts, expected)


async def test_a_clip_with_zero_probability_is_never_drawn(client: httpx.AsyncClient) -> None:
    await create_run(
        client,
        "zero",
        clips=("a", "b", "c"),
        strategy={"p_min": 0.0},
        clip_probs={"a": 1.0, "b": 1.0, "c": 0.0},
    )
    ids = (await next_clips(client, "zero", 4096))["clip_ids"]
    assert 2 not in ids
    assert {0, 1} <= set(ids)


async def test_normalisers_in_actor_config_are_a_snapshot_taken_at_each_update(
    client: httpx.AsyncClient,
) -> None:
    await create_run(client, "norm", clips=("a", "b"), strategy={"update_every_steps": 100})
    terms = {"pose": {"count": 10, "mean": 2.0, "m2": 40.0}}
    answer = await post_outcomes(client, "norm", [outcome("a", steps=10, terms=terms)])
    assert not answer["updated"]
    before = (await next_clips(client, "norm", 1))["actor_config"]["normalizers"]
    assert before["terms"] == []  # no update yet: actors still see the empty snapshot
    answer = await post_outcomes(client, "norm", [outcome("b", steps=90, terms=terms)])
    assert answer["updated"]
    after = (await next_clips(client, "norm", 1))["actor_config"]["normalizers"]
    assert after["terms"] == ["pose"]
    assert after["mean"] == [[2.0], [2.0]]
    assert np.asarray(after["std"]) == pytest.approx(np.full((2, 1), 2.0))  # sqrt(m2 / count)
    assert after["count"] == [[10.0], [10.0]]


async def test_a_second_process_on_the_same_database_follows_the_version_at_once(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with running_app(url) as first, running_app(url) as second:
        await create_run(first, "shared", clips=("a", "b"))
        seen = await next_clips(second, "shared", 8)
        assert seen["state_version"] == 1
        response = await first.put(
            "/runs/shared/clip-probs", json={"clip_probs": {"a": 1.0, "b": 0.0}}
        )
        assert response.status_code == 200, response.text
        followed = await next_clips(second, "shared", 64, known_version=1)
        assert followed["state_version"] == 2
        assert followed["actor_config"]["clip_probs"] == [1.0, 0.0]
        assert set(followed["clip_ids"]) == {0}
