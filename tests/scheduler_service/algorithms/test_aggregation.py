"""Reward aggregation across clips (§3) and reward-weight updates (§8)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scheduler_service.algorithms.aggregation import (
    adaptive_weights_step,
    aggregate,
    aggregate_lse,
    aggregate_max,
    aggregate_threshold,
    curriculum_factor,
    curriculum_weights,
)


def test_max_reduces_the_last_axis() -> None:
    rewards = np.array([[[0.1, 0.5, -1.0], [2.0, 0.0, 1.0]]])
    np.testing.assert_array_equal(aggregate_max(rewards), [[0.5, 2.0]])


def test_lse_equals_the_hand_computed_value() -> None:
    # tau log(w_0 e^{r_0/tau} + w_1 e^{r_1/tau})
    got = aggregate_lse(np.array([0.0, 1.0]), np.array([0.5, 0.5]), 1.0)
    assert float(got) == pytest.approx(math.log((1.0 + math.e) / 2.0), rel=1e-12)
    got = aggregate_lse(np.array([0.0, 1.0]), np.array([0.25, 0.75]), 0.5)
    assert float(got) == pytest.approx(0.5 * math.log(0.25 + 0.75 * math.exp(2.0)), rel=1e-12)


@pytest.mark.parametrize("tau", [1e-2, 1e-3, 1e-4])
def test_lse_approaches_the_max_over_weighted_clips_as_tau_goes_to_zero(tau: float) -> None:
    rewards = np.array([0.3, 0.9, 0.5, 5.0])
    weights = np.array([0.3, 0.3, 0.4, 0.0])  # the zero-weight clip's 5.0 must not count
    got = float(aggregate_lse(rewards, weights, tau))
    # tau log w_1 <= lse - r_max <= tau log sum w
    assert 0.9 + tau * math.log(0.3) - 1e-12 <= got <= 0.9 + 1e-12
    assert abs(got - 0.9) <= tau * abs(math.log(0.3)) + 1e-12


def test_lse_is_finite_and_exact_for_large_rewards_and_small_tau() -> None:
    weights = np.array([0.6, 0.4])
    got = aggregate_lse(np.array([1e3, 1e3]), weights, 0.01)
    assert float(got) == pytest.approx(1e3, abs=1e-12)  # tau log(0.6 + 0.4) = 0
    got = aggregate_lse(np.array([1e3, 999.0]), weights, 0.01)
    assert np.isfinite(got)
    assert float(got) == pytest.approx(1e3 + 0.01 * math.log(0.6 + 0.4 * math.exp(-100.0)))
    got = aggregate_lse(np.array([-1e3, -1e3 - 1.0]), weights, 0.01)
    assert float(got) == pytest.approx(-1e3 + 0.01 * math.log(0.6), rel=1e-12)


def test_lse_ignores_the_reward_of_a_zero_weight_clip() -> None:
    weights = np.array([0.5, 0.0, 0.5])
    first = aggregate_lse(np.array([0.1, -3.0, 0.4]), weights, 0.3)
    second = aggregate_lse(np.array([0.1, 30.0, 0.4]), weights, 0.3)
    assert float(first) == float(second)


def test_lse_is_vectorised_over_leading_axes() -> None:
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(4, 3, 5))
    weights = rng.random(5)
    got = aggregate_lse(rewards, weights, 0.3)
    assert got.shape == (4, 3)
    for index in np.ndindex(4, 3):
        assert got[index] == pytest.approx(float(aggregate_lse(rewards[index], weights, 0.3)))


def test_lse_rejects_all_zero_weights_and_non_positive_temperature() -> None:
    with pytest.raises(ValueError, match="all zero"):
        aggregate_lse(np.zeros(2), np.zeros(2), 0.3)
    with pytest.raises(ValueError, match="temperature"):
        aggregate_lse(np.zeros(2), np.ones(2), 0.0)
    with pytest.raises(ValueError, match="reward_weights"):
        aggregate_lse(np.zeros((3, 2)), np.ones(3), 0.3)


def test_threshold_mix_equals_the_hand_computed_value() -> None:
    rewards = np.array([1.0, 0.8, 0.2])
    weights = np.array([0.5, 0.3, 0.2])
    # delta 0.3: clips 0 and 1 are within 0.3 of the best -> 0.5 * 1.0 + 0.3 * 0.8
    assert float(aggregate_threshold(rewards, weights, 0.3)) == pytest.approx(0.74)
    assert float(aggregate_threshold(rewards, weights, 0.0)) == pytest.approx(0.5)
    assert float(aggregate_threshold(rewards, weights, 10.0)) == pytest.approx(0.5 + 0.24 + 0.04)


def test_threshold_is_vectorised_over_leading_axes() -> None:
    rewards = np.array([[1.0, 0.8, 0.2], [0.0, 0.1, 0.05]])
    weights = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(
        aggregate_threshold(rewards, weights, 0.06), [0.5, 0.3 * 0.1 + 0.2 * 0.05]
    )


def test_aggregate_dispatches_on_kind() -> None:
    rng = np.random.default_rng(1)
    rewards, weights = rng.normal(size=(8, 4)), rng.random(4)
    np.testing.assert_array_equal(
        aggregate(rewards, "max", weights, 0.3, 0.5), aggregate_max(rewards)
    )
    np.testing.assert_array_equal(
        aggregate(rewards, "lse", weights, 0.3, 0.5), aggregate_lse(rewards, weights, 0.3)
    )
    np.testing.assert_array_equal(
        aggregate(rewards, "threshold", weights, 0.3, 0.5),
        aggregate_threshold(rewards, weights, 0.5),
    )
    with pytest.raises(ValueError, match="kind"):
        aggregate(rewards, "mean", weights, 0.3, 0.5)  # type: ignore[arg-type]


def test_adaptive_weights_are_a_fixed_point_when_usage_equals_target() -> None:
    weights = np.array([0.1, 0.4, 0.5])
    target = np.array([0.3, 0.3, 0.4])
    np.testing.assert_allclose(
        adaptive_weights_step(weights, target, target, 0.5), weights, atol=1e-10
    )


def test_adaptive_weights_move_away_from_an_overused_clip() -> None:
    weights = np.array([0.2, 0.3, 0.2, 0.2, 0.1])
    target = np.array([0.2, 0.25, 0.2, 0.2, 0.15])
    usage = np.array([0.1, 0.2, 0.15, 0.45, 0.1])  # clip 3 dominates
    updated = adaptive_weights_step(weights, target, usage, 0.5)
    assert updated[3] < weights[3]
    assert np.all(np.delete(updated, 3) > np.delete(weights, 3))
    # Exactly w <- softmax(log w + lambda (u* - u)) here (no floor).
    expected = weights * np.exp(0.5 * (target - usage))
    np.testing.assert_allclose(updated, expected / expected.sum(), rtol=1e-9)


def test_adaptive_weights_respect_the_floor() -> None:
    updated = adaptive_weights_step([0.001, 0.999], [0.0, 1.0], [0.5, 0.5], 2.0, w_min=0.05)
    np.testing.assert_allclose(updated, [0.05, 0.95])


@pytest.mark.parametrize(
    ("steps", "expected"),
    [(0, 2.0), (999, 2.0), (1000, 2.0), (1250, 1.5), (1500, 1.0), (10_000, 1.0)],
)
def test_curriculum_factor_holds_then_releases_linearly(steps: int, expected: float) -> None:
    # boost 2, hold 1000 steps, release over 500: f(hold + release / 2) = (2 + 1) / 2
    assert curriculum_factor(2.0, 1000, 500, steps) == pytest.approx(expected)


def test_curriculum_factor_without_release_drops_to_one_at_hold() -> None:
    assert curriculum_factor(3.0, 10, 0, 9) == 3.0
    assert curriculum_factor(3.0, 10, 0, 10) == 1.0


def test_curriculum_weights_boost_then_renormalise() -> None:
    weights = np.array([0.2, 0.25, 0.2, 0.2, 0.15])
    boosted = np.array([True, True, True, False, False])
    early = curriculum_weights(weights, boosted, 1.5, 100, 100, 0)
    expected = weights * np.where(boosted, 1.5, 1.0)
    np.testing.assert_allclose(early, expected / expected.sum())
    late = curriculum_weights(weights, boosted, 1.5, 100, 100, 200)
    np.testing.assert_allclose(late, weights)
    mid = curriculum_weights(weights, boosted, 1.5, 100, 100, 150)
    assert np.all(late[boosted] < mid[boosted]) and np.all(mid[boosted] < early[boosted])


def test_curriculum_weights_reject_bad_mask_and_steps() -> None:
    weights = np.full(3, 1 / 3)
    with pytest.raises(ValueError, match="boosted"):
        curriculum_weights(weights, np.array([1, 0, 0]), 1.5, 10, 10, 0)
    with pytest.raises(ValueError, match="steps"):
        curriculum_weights(weights, np.array([True, False, False]), 1.5, 10, 10, -1)
    with pytest.raises(ValueError, match="boost"):
        curriculum_weights(weights, np.array([True, False, False]), 0.0, 10, 10, 0)
