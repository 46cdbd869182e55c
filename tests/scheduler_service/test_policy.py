"""The service's pure per-run arithmetic: override rule, moment merging, update step."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_service.algorithms.normalizers import Moments
from scheduler_service.domain import AggregationParams, CurriculumParams, StrategyParams
from scheduler_service.policy import (
    PolicyInputs,
    apply_partial_shares,
    effective_weights,
    policy_step,
    reduce_moments_by_key,
    smoothed_usage,
)

shares = st.lists(st.floats(0.0, 10.0), min_size=2, max_size=12).filter(lambda v: sum(v) > 0)


def test_the_policy_module_imports_no_web_or_database_code() -> None:
    code = (
        "import sys, scheduler_service.policy; "
        "print(sorted(m for m in ('fastapi', 'sqlalchemy', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_naming_every_clip_normalises_relative_values() -> None:
    result = apply_partial_shares(np.full(3, 1 / 3), {0: 2.0, 1: 1.0, 2: 1.0})
    assert result.tolist() == pytest.approx([0.5, 0.25, 0.25])


def test_named_clips_get_their_share_and_the_rest_keep_their_ratios() -> None:
    result = apply_partial_shares(np.array([0.1, 0.6, 0.3]), {0: 0.4})
    assert result.tolist() == pytest.approx([0.4, 0.4, 0.2])


def test_partial_shares_over_one_are_refused() -> None:
    with pytest.raises(ValueError, match="sum to"):
        apply_partial_shares(np.full(3, 1 / 3), {0: 0.7, 1: 0.5})


def test_when_the_rest_has_no_mass_the_named_values_are_normalised() -> None:
    result = apply_partial_shares(np.array([0.5, 0.5, 0.0]), {0: 0.2, 1: 0.2})
    assert result.tolist() == pytest.approx([0.5, 0.5, 0.0])


@given(shares, st.data())
@settings(max_examples=200, deadline=None)
def test_partial_overrides_always_give_a_distribution(
    current: list[float], data: st.DataObject
) -> None:
    k = len(current)
    base = np.array(current) / sum(current)
    names = data.draw(st.sets(st.integers(0, k - 1), min_size=1, max_size=k))
    budget = 1.0 if len(names) < k else 10.0
    values = {i: data.draw(st.floats(0.0, budget / len(names))) for i in names}
    if len(names) == k and sum(values.values()) == 0:
        return
    if (
        len(names) < k
        and base[[i for i in range(k) if i not in names]].sum() == 0
        and sum(values.values()) == 0
    ):
        return
    result = apply_partial_shares(base, values)
    assert np.isfinite(result).all() and (result >= 0).all()
    assert result.sum() == pytest.approx(1.0)
    if len(names) < k and base[[i for i in range(k) if i not in names]].sum() > 0:
        for i, v in values.items():
            assert result[i] == pytest.approx(v, abs=1e-12)


@given(st.integers(1, 300), st.integers(1, 12), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_reducing_moments_by_key_equals_the_moments_of_the_pooled_samples(
    n: int, keys_count: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, keys_count, size=n)
    samples = [rng.normal(rng.normal(0, 10), 3, size=int(rng.integers(1, 8))) for _ in range(n)]
    moments = Moments(
        count=np.array([s.size for s in samples], dtype=float),
        mean=np.array([s.mean() for s in samples]),
        m2=np.array([((s - s.mean()) ** 2).sum() for s in samples]),
    )
    unique, reduced = reduce_moments_by_key(keys, moments)
    assert unique.tolist() == sorted(set(keys.tolist()))
    for j, key in enumerate(unique.tolist()):
        pooled = np.concatenate(
            [s for s, k in zip(samples, keys.tolist(), strict=True) if k == key]
        )
        assert reduced.count[j] == pooled.size
        assert reduced.mean[j] == pytest.approx(pooled.mean(), rel=1e-9, abs=1e-9)
        assert reduced.m2[j] == pytest.approx(((pooled - pooled.mean()) ** 2).sum(), rel=1e-9)


def test_smoothed_usage_takes_the_first_window_as_is_then_blends() -> None:
    first = smoothed_usage(None, np.array([0.2, 0.8]), 0.5)
    assert first.tolist() == [0.2, 0.8]
    assert smoothed_usage(first, np.array([0.6, 0.4]), 0.5).tolist() == pytest.approx([0.4, 0.6])


def inputs(**overrides: object) -> PolicyInputs:
    base = {
        "target_usage": np.array([0.5, 0.5]),
        "clip_probs": np.array([0.5, 0.5]),
        "base_weights": np.array([0.5, 0.5]),
        "reward_weights": np.array([0.5, 0.5]),
        "usage": np.array([0.8, 0.2]),
        "success": np.array([1.0, 0.0]),
        "episodes": np.array([10, 10]),
        "thompson_successes": np.array([5.0, 0.0]),
        "thompson_failures": np.array([0.0, 5.0]),
        "total_steps": 0,
    }
    base.update(overrides)
    return PolicyInputs(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["controller", "difficulty", "ucb", "thompson"])
def test_every_strategy_moves_probability_toward_the_clip_that_needs_it(kind: str) -> None:
    step = policy_step(
        StrategyParams(kind=kind, p_min=0.01),  # type: ignore[arg-type]
        AggregationParams(),
        ("a", "b"),
        inputs(),
        np.random.default_rng(0),
        clip_probs_frozen=False,
        reward_weights_frozen=False,
    )
    assert step.clip_probs[1] > 0.5  # "b" is under-used and failing
    assert step.clip_probs.sum() == pytest.approx(1.0)


def test_static_and_frozen_probabilities_do_not_move() -> None:
    for strategy, frozen in (
        (StrategyParams(kind="static"), False),
        (StrategyParams(kind="controller", p_min=0.0), True),
    ):
        step = policy_step(
            strategy,
            AggregationParams(),
            ("a", "b"),
            inputs(),
            np.random.default_rng(0),
            clip_probs_frozen=frozen,
            reward_weights_frozen=False,
        )
        assert step.clip_probs.tolist() == [0.5, 0.5]


def test_frozen_weights_keep_what_actors_use_boost_included() -> None:
    aggregation = AggregationParams(
        adaptive_weights=True, curriculum=CurriculumParams(clips=("a",), boost=3.0)
    )
    boosted = np.array([0.75, 0.25])
    step = policy_step(
        StrategyParams(kind="static"),
        aggregation,
        ("a", "b"),
        inputs(reward_weights=boosted),
        np.random.default_rng(0),
        clip_probs_frozen=False,
        reward_weights_frozen=True,
    )
    assert step.reward_weights.tolist() == boosted.tolist()
    assert step.base_weights.tolist() == [0.5, 0.5]


def test_adaptive_weights_follow_usage_and_the_curriculum_boosts_on_top() -> None:
    aggregation = AggregationParams(
        kind="lse",
        adaptive_weights=True,
        weight_lr=0.5,
        curriculum=CurriculumParams(clips=("a",), boost=2.0, hold_steps=100, release_steps=100),
    )
    step = policy_step(
        StrategyParams(kind="static"),
        aggregation,
        ("a", "b"),
        inputs(),
        np.random.default_rng(0),
        clip_probs_frozen=False,
        reward_weights_frozen=False,
    )
    assert step.base_weights[1] > 0.5  # "b" under-used: its weight grows
    assert step.reward_weights[0] / step.reward_weights[1] == pytest.approx(
        2.0 * step.base_weights[0] / step.base_weights[1]
    )
    released = effective_weights(aggregation, ("a", "b"), step.base_weights, 200)
    assert released.tolist() == pytest.approx(step.base_weights.tolist())
