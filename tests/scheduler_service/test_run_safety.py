"""No accepted configuration can break a run: parameters are bounded where the maths stays
finite, and an update whose result is unusable keeps the last good policy, says why in
the history and raises the ``update_rejected`` alarm, while outcomes are still stored."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_service import policy
from scheduler_service.api import schemas
from scheduler_service.domain import AggregationParams, CurriculumParams, StrategyParams
from tests.scheduler_service.helpers import (
    NOTE_CLIPS,
    create_run,
    next_clips,
    outcome,
    post_outcomes,
)

K = len(NOTE_CLIPS)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("strategy", "ucb_temperature", 1e-308),
        ("strategy", "ucb_c", 1e308),
        ("strategy", "eta", 1e300),
        ("strategy", "thompson_prior", [1e-300, 1.0]),
        ("aggregation", "temperature", 1e-300),
        ("aggregation", "weight_lr", 1e300),
        ("aggregation", "threshold_delta", 1e300),
    ],
)
async def test_parameters_outside_the_safe_range_are_refused(
    client: httpx.AsyncClient, section: str, field: str, value: Any
) -> None:
    body = {"name": "r", "clips": [{"name": c} for c in NOTE_CLIPS], section: {field: value}}
    answer = await client.post("/runs", json=body)
    assert answer.status_code == 422, answer.text
    assert field in answer.text
    assert (await client.get("/runs/r")).status_code == 404  # nothing was created


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["ucb", "thompson", "controller", "difficulty"])
async def test_extreme_accepted_parameters_keep_the_run_working(
    client: httpx.AsyncClient, kind: str
) -> None:
    strategy = {
        "kind": kind,
        "update_every_steps": 50,
        "eta": schemas.MAX_RATE,
        "ucb_c": schemas.MAX_SCALE,
        "ucb_temperature": schemas.MIN_TEMPERATURE,
        "thompson_prior": [1e-3, 1e6],
    }
    aggregation = {
        "kind": "lse",
        "temperature": schemas.MIN_TEMPERATURE,
        "weight_lr": schemas.MAX_RATE,
        "adaptive_weights": True,
    }
    await create_run(client, "edge", strategy=strategy, aggregation=aggregation)
    for round_ in range(6):
        clips = (await next_clips(client, "edge", 16))["clip_ids"]
        batch = [outcome(c, steps=10, success=float((c + round_) % 2)) for c in clips]
        assert (await post_outcomes(client, "edge", batch))["accepted"] == 16
    state = (await client.get("/runs/edge")).json()
    assert state["totals"]["updates"] >= 5
    for key in ("clip_prob", "reward_weight"):
        values = np.array([c[key] for c in state["clips"]])
        assert np.all(np.isfinite(values)) and np.all(values >= 0)
        assert values.sum() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.anyio
async def test_an_unusable_update_keeps_the_policy_and_raises_an_alarm(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_run(client, "nan", strategy={"kind": "ucb", "update_every_steps": 20})
    before = [c["clip_prob"] for c in (await client.get("/runs/nan")).json()["clips"]]

    def broken(*_: Any) -> np.ndarray:
        return np.full(K, np.nan)

    monkeypatch.setitem(policy.STRATEGY_STEPS, "ucb", broken)
    answer = await post_outcomes(client, "nan", [outcome(i % K, steps=10) for i in range(4)])
    assert answer["accepted"] == 4  # the outcomes that triggered the update are stored
    state = (await client.get("/runs/nan")).json()
    assert state["totals"] == {"episodes": 4, "steps": 40, "updates": 1}
    assert [c["clip_prob"] for c in state["clips"]] == before
    alarm = next(a for a in state["alarms"] if a["name"] == "update_rejected")
    assert alarm["firing"] is True
    history = (await client.get("/runs/nan/history")).json()["updates"]
    assert history[-1]["rejected"] == "ucb update rejected: clip_probs not finite"
    (await next_clips(client, "nan", 8))  # sampling still works

    monkeypatch.undo()  # the next update is sound again: the alarm clears
    await post_outcomes(client, "nan", [outcome(i % K, steps=10) for i in range(4)])
    state = (await client.get("/runs/nan")).json()
    assert not next(a for a in state["alarms"] if a["name"] == "update_rejected")["firing"]
    assert (await client.get("/runs/nan/history")).json()["updates"][-1]["rejected"] is None


def _inputs(rng: np.random.Generator, total: int) -> policy.PolicyInputs:
    def simplex() -> np.ndarray:
        x = rng.random(K) + 1e-12
        return x / x.sum()

    episodes = rng.integers(0, 10**12, K)
    return policy.PolicyInputs(
        target_usage=simplex(),
        clip_probs=simplex(),
        base_weights=simplex(),
        reward_weights=simplex(),
        usage=simplex(),
        success=rng.random(K),
        episodes=episodes,
        thompson_successes=rng.random(K) * episodes,
        thompson_failures=rng.random(K) * episodes,
        total_steps=total,
    )


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    kind=st.sampled_from(["static", "controller", "difficulty", "ucb", "thompson"]),
    eta=st.sampled_from([0.0, 1.0, schemas.MAX_RATE]),
    ucb_c=st.sampled_from([0.0, 2.0, schemas.MAX_SCALE]),
    temperature=st.sampled_from([schemas.MIN_TEMPERATURE, 1.0, schemas.MAX_SCALE]),
    prior=st.sampled_from([1e-3, 1.0, 1e6]),
    boost=st.sampled_from([1.0 / schemas.MAX_SCALE, 1.5, schemas.MAX_SCALE]),
    seed=st.integers(0, 2**32 - 1),
)
def test_updates_at_the_bounds_of_every_accepted_range_give_distributions(
    kind: Any, eta: float, ucb_c: float, temperature: float, prior: float, boost: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    strategy = StrategyParams(
        kind=kind,
        eta=eta,
        ucb_c=ucb_c,
        ucb_temperature=temperature,
        thompson_prior=(prior, 1e6 / prior if prior < 1 else prior),
        p_min=0.01,
    )
    aggregation = AggregationParams(
        kind="lse",
        temperature=temperature,
        adaptive_weights=True,
        weight_lr=eta,
        curriculum=CurriculumParams(
            clips=(NOTE_CLIPS[0],), boost=boost, hold_steps=10, release_steps=10
        ),
    )
    step, rejected = policy.guarded_policy_step(
        strategy, aggregation, NOTE_CLIPS, _inputs(rng, int(rng.integers(0, 30))), rng,
        clip_probs_frozen=False, reward_weights_frozen=False,
    )  # fmt: skip
    assert rejected is None
    assert policy.invalid_step(step) is None


def test_a_failing_update_returns_the_last_good_policy_and_the_reason() -> None:
    rng = np.random.default_rng(0)
    x = _inputs(rng, 0)

    def raises(*_: Any) -> np.ndarray:
        raise FloatingPointError("overflow in exp")

    strategy = StrategyParams(kind="controller")
    original = policy.STRATEGY_STEPS["controller"]
    policy.STRATEGY_STEPS["controller"] = raises  # type: ignore[index]
    try:
        step, rejected = policy.guarded_policy_step(
            strategy, AggregationParams(), NOTE_CLIPS, x, rng,
            clip_probs_frozen=False, reward_weights_frozen=False,
        )  # fmt: skip
    finally:
        policy.STRATEGY_STEPS["controller"] = original  # type: ignore[index]
    assert rejected == "controller update failed: overflow in exp"
    np.testing.assert_array_equal(step.clip_probs, x.clip_probs)
    np.testing.assert_array_equal(step.reward_weights, x.reward_weights)
