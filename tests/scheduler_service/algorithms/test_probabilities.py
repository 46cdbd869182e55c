"""Shares, the probability floor and the usage controller (§1, §2)."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler_service.algorithms.probabilities import (
    apply_floor,
    controller_step,
    difficulty_step,
    normalize_shares,
    usage_shares,
)

TARGET = np.array([0.2, 0.25, 0.2, 0.2, 0.15])  # §8 default targets (Idle .. Sprint)


def l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).sum())


def test_normalize_shares_keeps_ratios_and_sums_to_one() -> None:
    values = np.array([1.0, 3.0, 0.0, 4.0])
    shares = normalize_shares(values)
    assert shares.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(shares, values / 8.0, rtol=1e-15)
    np.testing.assert_array_equal(values, [1.0, 3.0, 0.0, 4.0])  # input untouched


def test_normalize_shares_does_not_overflow_on_huge_values() -> None:
    shares = normalize_shares([1e308, 1e308])
    np.testing.assert_allclose(shares, [0.5, 0.5])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0, np.nan], "finite"),
        ([1.0, np.inf], "finite"),
        ([1.0, -0.1], "non-negative"),
        ([0.0, 0.0], "all zero"),
        ([], "non-empty"),
        ([[0.5, 0.5]], "1-D"),
        (["a", "b"], "numeric"),
    ],
)
def test_normalize_shares_rejects_bad_input_naming_the_problem(
    values: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_shares(values)  # type: ignore[arg-type]


def test_apply_floor_leaves_a_vector_above_the_floor_unchanged() -> None:
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(apply_floor(probs, 0.1), probs, rtol=1e-15)


def test_apply_floor_raises_low_clips_and_keeps_the_others_ratios() -> None:
    probs = np.array([0.01, 0.29, 0.7])
    floored = apply_floor(probs, 0.05)
    # Clip 0 goes to the floor; clips 1 and 2 share 0.95 in their ratio 29 : 70.
    np.testing.assert_allclose(floored, [0.05, 0.95 * 0.29 / 0.99, 0.95 * 0.7 / 0.99])
    assert floored.sum() == pytest.approx(1.0, abs=1e-12)


def test_apply_floor_cascades_when_rescaling_pushes_another_clip_below() -> None:
    # Flooring clip 0 alone scales clip 1 to 0.045 * 0.95 < 0.05, so it is floored too.
    floored = apply_floor([0.0, 0.045, 0.955], 0.05)
    np.testing.assert_allclose(floored, [0.05, 0.05, 0.9])


def test_apply_floor_at_one_over_k_gives_uniform() -> None:
    np.testing.assert_allclose(apply_floor([0.0, 0.0, 1.0, 0.0], 0.25), np.full(4, 0.25))


@pytest.mark.parametrize("p_min", [-0.01, 0.34, np.nan])
def test_apply_floor_rejects_a_floor_outside_zero_to_one_over_k(p_min: float) -> None:
    with pytest.raises(ValueError, match="p_min"):
        apply_floor([0.2, 0.3, 0.5], p_min)


def test_usage_shares_by_episodes_and_by_steps() -> None:
    episodes = np.array([10.0, 30.0])
    steps = np.array([3000.0, 1000.0])
    np.testing.assert_allclose(usage_shares(episodes, steps, "episodes"), [0.25, 0.75])
    np.testing.assert_allclose(usage_shares(episodes, steps, "steps"), [0.75, 0.25])


def test_usage_shares_is_uniform_before_any_episode() -> None:
    np.testing.assert_allclose(usage_shares(np.zeros(4), np.zeros(4), "steps"), np.full(4, 0.25))


def test_usage_shares_rejects_unknown_measure_and_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="measure"):
        usage_shares([1.0], [1.0], "seconds")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        usage_shares([1.0, 2.0], [1.0], "episodes")


def test_controller_leaves_probabilities_unchanged_when_usage_equals_target() -> None:
    probs = np.array([0.1, 0.3, 0.2, 0.25, 0.15])
    np.testing.assert_allclose(controller_step(probs, TARGET, TARGET, 1.0, 0.02), probs, atol=1e-10)


def test_controller_fixed_point_is_the_floored_probabilities() -> None:
    probs = np.array([0.001, 0.399, 0.2, 0.25, 0.15])
    updated = controller_step(probs, TARGET, TARGET, 1.0, 0.02)
    np.testing.assert_allclose(updated, apply_floor(probs, 0.02), atol=1e-10)


def test_controller_takes_probability_from_an_overused_clip() -> None:
    probs = np.full(5, 0.2)
    usage = TARGET.copy()
    usage[3] += 0.2  # "Run dominates"
    usage[[0, 1]] -= 0.1
    updated = controller_step(probs, TARGET, usage, 1.0, 0.0)
    assert updated[3] < probs[3]
    assert np.all(updated[[0, 1]] > probs[[0, 1]])
    assert updated.sum() == pytest.approx(1.0, abs=1e-12)


def test_controller_converges_to_target_when_usage_follows_probabilities() -> None:
    probs = np.array([0.05, 0.05, 0.1, 0.7, 0.1])
    for _ in range(100):
        probs = controller_step(probs, TARGET, probs, 1.0, 0.01)
    assert l1(probs, TARGET) < 0.02


def test_controller_converges_when_usage_is_measured_in_steps_with_a_long_clip() -> None:
    # Clip 2's episodes are three times longer: step usage u_i ∝ p_i len_i.
    lengths = np.array([1.0, 1.0, 3.0, 1.0, 1.0])
    probs = np.full(5, 0.2)
    for _ in range(200):
        usage = probs * lengths / (probs * lengths).sum()
        probs = controller_step(probs, TARGET, usage, 1.0, 0.01)
    usage = probs * lengths / (probs * lengths).sum()
    assert l1(usage, TARGET) < 0.02
    # The long clip is sampled less often than its target share of steps.
    assert probs[2] < TARGET[2]


def test_controller_converges_on_average_with_sampled_episodes() -> None:
    rng = np.random.default_rng(7)
    probs = np.array([0.05, 0.05, 0.1, 0.7, 0.1])
    recent_usage = []
    for step in range(120):
        counts = rng.multinomial(20_000, probs).astype(np.float64)
        usage = usage_shares(counts, counts, "episodes")
        probs = controller_step(probs, TARGET, usage, 1.0, 0.01)
        if step >= 70:
            recent_usage.append(usage)
    assert l1(np.mean(recent_usage, axis=0), TARGET) < 0.02


def test_controller_respects_the_floor_for_a_clip_with_zero_target() -> None:
    target = np.array([0.0, 0.5, 0.5])
    probs = np.full(3, 1.0 / 3.0)
    for _ in range(200):
        probs = controller_step(probs, target, probs, 2.0, 0.05)
        assert probs.min() >= 0.05
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    assert probs[0] == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("usage", "eta", "message"),
    [
        ([0.5, np.nan, 0.5], 1.0, "usage"),
        ([0.5, 0.5], 1.0, "usage"),
        ([0.5, -0.5, 1.0], 1.0, "usage"),
        ([0.2, 0.3, 0.5], -1.0, "eta"),
        ([0.2, 0.3, 0.5], np.inf, "eta"),
    ],
)
def test_controller_rejects_bad_input(usage: list[float], eta: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        controller_step([0.2, 0.3, 0.5], [0.3, 0.3, 0.4], usage, eta, 0.0)


def test_difficulty_step_raises_the_clip_with_low_success() -> None:
    probs = np.full(5, 0.2)
    success = np.array([0.9, 0.8, 0.85, 0.1, 0.9])
    updated = difficulty_step(probs, TARGET, success, 1.0, 0.01)
    assert updated[3] > probs[3]
    assert updated[3] == updated.max()
    assert updated[0] < probs[0]
    assert updated.sum() == pytest.approx(1.0, abs=1e-12)


def test_difficulty_step_is_a_fixed_point_when_every_clip_succeeds_equally() -> None:
    probs = np.array([0.1, 0.3, 0.2, 0.25, 0.15])
    updated = difficulty_step(probs, TARGET, np.full(5, 0.6), 1.5, 0.01)
    np.testing.assert_allclose(updated, probs, atol=1e-10)


def test_difficulty_step_rejects_success_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="success"):
        difficulty_step([0.5, 0.5], [0.5, 0.5], [0.5, 1.5], 1.0, 0.0)
