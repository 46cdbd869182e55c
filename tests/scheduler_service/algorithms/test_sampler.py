"""Batched clip sampling: CDF search and the vectorised Vose alias table."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_service.algorithms.sampler import ALIAS_MIN_CLIPS, ClipSampler, _alias_table

Draw = Callable[[ClipSampler, int, np.random.Generator], np.ndarray]

PATHS: dict[str, Draw] = {
    "sample": lambda sampler, n, rng: sampler.sample(n, rng),
    "inverse_cdf": lambda sampler, n, rng: sampler.sample_inverse_cdf(n, rng),
    "alias": lambda sampler, n, rng: sampler.sample_alias(n, rng),
}


def chi_square_critical(dof: int, z: float = 3.09) -> float:
    """Upper 0.1% point of chi-square (Wilson-Hilferty approximation)."""
    a = 2.0 / (9.0 * dof)
    return float(dof * (1.0 - a + z * np.sqrt(a)) ** 3)


def chi_square(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Pearson statistic over clips with positive probability, and its degrees of freedom."""
    positive = probs > 0
    expected = counts.sum() * probs[positive]
    return float(((counts[positive] - expected) ** 2 / expected).sum()), int(positive.sum()) - 1


def skewed(num_clips: int, rng: np.random.Generator) -> np.ndarray:
    weights = rng.random(num_clips) ** 3
    weights[::7] = 0.0  # leading, inner and (for some K) trailing zero-probability clips
    weights[1] = 1.0
    probs: np.ndarray = weights / weights.sum()
    return probs


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("num_clips", [5, 300])
def test_empirical_frequencies_match_probabilities(path: str, num_clips: int) -> None:
    rng = np.random.default_rng(2024)
    probs = skewed(num_clips, rng)
    sampler = ClipSampler(probs)
    draws = np.concatenate([PATHS[path](sampler, 4096, rng) for _ in range(50)])
    counts = np.bincount(draws, minlength=num_clips)
    statistic, dof = chi_square(counts, probs)
    assert statistic < chi_square_critical(dof)
    assert counts[probs == 0].sum() == 0


@pytest.mark.parametrize("path", sorted(PATHS))
def test_single_draws_follow_probabilities(path: str) -> None:
    rng = np.random.default_rng(9)
    probs = np.array([0.5, 0.0, 0.3, 0.2, 0.0])
    sampler = ClipSampler(probs)
    draws = np.array([PATHS[path](sampler, 1, rng)[0] for _ in range(20_000)])
    counts = np.bincount(draws, minlength=5)
    statistic, dof = chi_square(counts, probs)
    assert statistic < chi_square_critical(dof)
    assert counts[[1, 4]].sum() == 0


@pytest.mark.parametrize("path", sorted(PATHS))
def test_zero_probability_clips_are_never_drawn(path: str) -> None:
    rng = np.random.default_rng(1)
    probs = np.zeros(200)
    probs[[3, 100, 101]] = [1e-9, 0.5, 0.5 - 1e-9]
    draws = PATHS[path](ClipSampler(probs), 200_000, rng)
    assert set(np.unique(draws).tolist()) <= {3, 100, 101}


def test_a_single_clip_is_always_drawn() -> None:
    sampler = ClipSampler([3.0])
    rng = np.random.default_rng(0)
    for path in PATHS.values():
        np.testing.assert_array_equal(path(sampler, 1000, rng), np.zeros(1000))


def test_sample_returns_int64_ids_of_the_requested_length() -> None:
    sampler = ClipSampler(np.full(ALIAS_MIN_CLIPS, 1.0))
    rng = np.random.default_rng(0)
    for n in (1, 5, 4096):
        ids = sampler.sample(n, rng)
        assert ids.dtype == np.int64
        assert ids.shape == (n,)
        assert ids.min() >= 0 and ids.max() < ALIAS_MIN_CLIPS


def test_sample_rejects_non_positive_counts() -> None:
    sampler = ClipSampler([0.5, 0.5])
    with pytest.raises(ValueError, match="n must be"):
        sampler.sample(0, np.random.default_rng(0))


def test_sampler_is_immutable_and_normalises_its_input() -> None:
    weights = np.array([1.0, 3.0])
    sampler = ClipSampler(weights)
    np.testing.assert_allclose(sampler.probs, [0.25, 0.75])
    sampler.probs[0] = 1.0  # a copy: the sampler is unaffected
    np.testing.assert_allclose(sampler.probs, [0.25, 0.75])
    weights[0] = 100.0
    np.testing.assert_allclose(sampler.probs, [0.25, 0.75])
    assert sampler.num_clips == 2
    with pytest.raises(AttributeError):
        sampler.extra = 1  # type: ignore[attr-defined]


def test_sampler_rejects_invalid_probabilities() -> None:
    for bad in ([0.5, np.nan], [0.5, -0.5], [0.0, 0.0]):
        with pytest.raises(ValueError):
            ClipSampler(bad)


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=1e-12, max_value=1e6)), min_size=1, max_size=80
    ).filter(lambda w: sum(w) > 0)
)
def test_alias_table_reproduces_the_probabilities_exactly(weights: list[float]) -> None:
    probs = np.asarray(weights) / np.sum(weights)
    keep, alias = _alias_table(probs)
    k = probs.shape[0]
    assert np.all((keep >= 0.0) & (keep <= 1.0))
    # P(i) = (keep_i + sum_{c: alias_c = i} (1 - keep_c)) / K
    implied = (keep + np.bincount(alias, weights=1.0 - keep, minlength=k)) / k
    np.testing.assert_allclose(implied, probs, atol=1e-12)
    # A column that can hand over never hands over to a zero-probability clip.
    assert np.all(probs[alias[keep < 1.0]] > 0.0)


def test_alias_table_is_exact_at_ten_thousand_clips() -> None:
    probs = skewed(10_000, np.random.default_rng(5))
    keep, alias = _alias_table(probs)
    implied = (keep + np.bincount(alias, weights=1.0 - keep, minlength=10_000)) / 10_000
    np.testing.assert_allclose(implied, probs, atol=1e-14)


@pytest.mark.parametrize("num_clips", [49, 98, 103])
def test_uniform_probabilities_that_round_below_one_per_column_still_build(num_clips: int) -> None:
    # (1 / K) * K < 1 in floating point for these K: every column looks "small".
    sampler = ClipSampler(np.ones(num_clips))
    draws = sampler.sample_alias(50_000, np.random.default_rng(0))
    counts = np.bincount(draws, minlength=num_clips)
    statistic, dof = chi_square(counts, np.full(num_clips, 1.0 / num_clips))
    assert statistic < chi_square_critical(dof)
