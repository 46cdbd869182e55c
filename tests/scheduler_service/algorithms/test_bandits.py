"""Bandit rules (§6): moving averages, discounted counts, UCB and Thompson shares."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler_service.algorithms.bandits import (
    discounted_counts,
    ema_update,
    thompson_probs,
    ucb_probs,
)


def sequential_ema(
    ema: np.ndarray, count: np.ndarray, clip_ids: np.ndarray, values: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """The definition, one outcome at a time."""
    ema, count = ema.copy(), count.copy()
    for clip, value in zip(clip_ids, values, strict=True):
        ema[clip] = value if count[clip] == 0 else (1 - alpha) * ema[clip] + alpha * value
        count[clip] += 1
    return ema, count


def sequential_counts(
    successes: np.ndarray,
    failures: np.ndarray,
    clip_ids: np.ndarray,
    values: np.ndarray,
    gamma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The definition, one outcome at a time."""
    successes, failures = successes.copy(), failures.copy()
    for clip, value in zip(clip_ids, values, strict=True):
        successes[clip] = gamma * successes[clip] + value
        failures[clip] = gamma * failures[clip] + 1 - value
    return successes, failures


def test_ema_update_matches_the_sequential_definition() -> None:
    rng = np.random.default_rng(3)
    k = 6
    ema = rng.random(k)
    count = np.array([0.0, 3.0, 0.0, 1.0, 5.0, 0.0])
    clip_ids = rng.integers(0, k - 1, size=200)  # clip 5 never observed
    values = rng.random(200)
    ema_in, count_in = ema.copy(), count.copy()
    got = ema_update(ema, count, clip_ids, values, 0.1)
    want = sequential_ema(ema, count, clip_ids, values, 0.1)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(ema, ema_in)  # inputs untouched
    np.testing.assert_array_equal(count, count_in)


def test_ema_first_observation_sets_the_average() -> None:
    ema, count = ema_update(np.zeros(2), np.zeros(2), np.array([1]), np.array([0.7]), 0.05)
    assert ema[1] == pytest.approx(0.7)
    assert count.tolist() == [0.0, 1.0]


def test_ema_update_rejects_unknown_clips_and_bad_alpha() -> None:
    with pytest.raises(ValueError, match="clip_ids"):
        ema_update(np.zeros(2), np.zeros(2), np.array([2]), np.array([0.5]), 0.1)
    with pytest.raises(ValueError, match="alpha"):
        ema_update(np.zeros(2), np.zeros(2), np.array([0]), np.array([0.5]), 0.0)
    with pytest.raises(ValueError, match="values"):
        ema_update(np.zeros(2), np.zeros(2), np.array([0]), np.array([np.nan]), 0.1)


def test_discounted_counts_match_the_sequential_definition() -> None:
    rng = np.random.default_rng(4)
    k = 5
    successes, failures = rng.random(k) * 10, rng.random(k) * 10
    clip_ids = rng.integers(0, k, size=300)
    values = np.where(rng.random(300) < 0.5, rng.random(300), np.round(rng.random(300)))
    got = discounted_counts(successes, failures, clip_ids, values, 0.97)
    want = sequential_counts(successes, failures, clip_ids, values, 0.97)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12)


def test_discounted_counts_without_discount_are_plain_sums() -> None:
    successes, failures = discounted_counts(
        np.zeros(2), np.zeros(2), np.array([0, 0, 1]), np.array([1.0, 0.25, 0.0]), 1.0
    )
    np.testing.assert_allclose(successes, [1.25, 0.0])
    np.testing.assert_allclose(failures, [0.75, 1.0])


def test_discounted_counts_reject_success_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="success_values"):
        discounted_counts(np.zeros(2), np.zeros(2), np.array([0]), np.array([1.5]), 0.9)


def test_ucb_gives_the_low_success_clip_the_largest_share() -> None:
    pulls = np.full(4, 100.0)
    success = np.array([0.9, 0.8, 0.2, 0.85])
    probs = ucb_probs(pulls, success, 0.5, 0.2, 0.01)
    assert int(np.argmax(probs)) == 2
    assert probs[2] > 0.25 > probs[0]


def test_ucb_prefers_unpulled_clips() -> None:
    pulls = np.array([50.0, 0.0, 1.0, 200.0])
    success = np.array([0.0, 0.0, 0.0, 0.0])  # pulled clips all look maximally in need
    probs = ucb_probs(pulls, success, 1.0, 0.5, 0.0)
    assert probs[1] >= probs.max() - 1e-15
    assert probs[1] > probs[0] > probs[3]


def test_ucb_exploration_favours_the_less_pulled_of_equal_clips() -> None:
    probs = ucb_probs(np.array([10.0, 1000.0]), np.array([0.5, 0.5]), 1.0, 1.0, 0.0)
    assert probs[0] > probs[1]


def test_ucb_is_uniform_before_any_pull() -> None:
    np.testing.assert_allclose(
        ucb_probs(np.zeros(3), np.zeros(3), 1.0, 1.0, 0.1), np.full(3, 1 / 3)
    )


def test_ucb_respects_the_floor_at_low_temperature() -> None:
    probs = ucb_probs(np.full(3, 10.0), np.array([0.0, 1.0, 1.0]), 0.0, 0.01, 0.05)
    np.testing.assert_allclose(probs, [0.9, 0.05, 0.05])


def test_ucb_rejects_signal_outside_unit_interval_and_zero_temperature() -> None:
    with pytest.raises(ValueError, match="ema_signal"):
        ucb_probs(np.ones(2), np.array([0.5, 1.2]), 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        ucb_probs(np.ones(2), np.array([0.5, 0.5]), 1.0, 0.0, 0.0)


def test_thompson_gives_the_often_failed_clip_the_largest_share() -> None:
    successes = np.array([90.0, 85.0, 20.0, 88.0])
    failures = np.array([10.0, 15.0, 80.0, 12.0])
    probs = thompson_probs(successes, failures, (1.0, 1.0), 0.02, np.random.default_rng(0))
    assert int(np.argmax(probs)) == 2
    assert probs[2] > 0.9
    assert probs.min() >= 0.02
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)


def test_thompson_prefers_a_clip_without_data_over_well_trained_clips() -> None:
    successes = np.array([95.0, 0.0, 97.0])
    failures = np.array([5.0, 0.0, 3.0])
    probs = thompson_probs(successes, failures, (1.0, 1.0), 0.0, np.random.default_rng(1), 512)
    assert probs[1] > 0.8


def test_thompson_is_reproducible_with_a_seeded_generator() -> None:
    args = (np.array([3.0, 4.0, 5.0]), np.array([5.0, 4.0, 3.0]), (1.0, 1.0), 0.05)
    first = thompson_probs(*args, np.random.default_rng(42))
    second = thompson_probs(*args, np.random.default_rng(42))
    np.testing.assert_array_equal(first, second)


def test_thompson_shares_are_multiples_of_one_over_draws_without_floor() -> None:
    probs = thompson_probs(np.ones(3), np.ones(3), (1.0, 1.0), 0.0, np.random.default_rng(5), 8)
    np.testing.assert_allclose(probs * 8, np.round(probs * 8), atol=1e-12)
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)


def test_thompson_rejects_bad_prior_and_draws() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="prior"):
        thompson_probs(np.ones(2), np.ones(2), (0.0, 1.0), 0.0, rng)
    with pytest.raises(ValueError, match="draws"):
        thompson_probs(np.ones(2), np.ones(2), (1.0, 1.0), 0.0, rng, 0)
    with pytest.raises(ValueError, match="failures"):
        thompson_probs(np.ones(2), np.array([1.0, -1.0]), (1.0, 1.0), 0.0, rng)
