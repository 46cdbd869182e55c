"""Running moments and their parallel merge (per-clip, per-term reward normalisation)."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler_service.algorithms.normalizers import Moments, merge_moments, normalize


def test_merging_random_chunks_in_random_order_equals_whole_batch_moments() -> None:
    rng = np.random.default_rng(11)
    values = rng.normal(loc=50.0, scale=3.0, size=(1000, 4, 3))  # (samples, clips K, terms T)
    cuts = np.sort(rng.choice(np.arange(1, 1000), size=20, replace=False))
    chunks = [*np.split(values, cuts), values[:0]]  # include an empty chunk
    pieces = [Moments.from_batch(chunk, axis=0) for chunk in chunks]
    # Merge in random order and random tree shape: pick two, merge, put back.
    while len(pieces) > 1:
        i, j = sorted(rng.choice(len(pieces), size=2, replace=False).tolist())
        merged = merge_moments(pieces[i], pieces[j])
        pieces = [p for n, p in enumerate(pieces) if n not in (i, j)] + [merged]
    whole = Moments.from_batch(values, axis=0)
    np.testing.assert_array_equal(pieces[0].count, whole.count)
    np.testing.assert_allclose(pieces[0].mean, whole.mean, rtol=1e-9)
    np.testing.assert_allclose(pieces[0].m2, whole.m2, rtol=1e-9)
    np.testing.assert_allclose(pieces[0].variance, values.var(axis=0), rtol=1e-9)


def test_merge_equals_the_hand_computed_moments() -> None:
    merged = merge_moments(Moments.from_batch([1.0, 2.0]), Moments.from_batch([3.0, 4.0, 5.0]))
    # union {1..5}: mean 3, sum of squared deviations 4 + 1 + 0 + 1 + 4
    assert float(merged.count) == 5.0
    assert float(merged.mean) == pytest.approx(3.0)
    assert float(merged.m2) == pytest.approx(10.0)
    assert float(merged.variance) == pytest.approx(2.0)
    assert float(merged.std) == pytest.approx(np.sqrt(2.0))


def test_zero_count_entries_stay_zero_and_merge_as_identity() -> None:
    empty = Moments.zeros((2, 3))
    both_empty = merge_moments(empty, empty)
    for array in (both_empty.count, both_empty.mean, both_empty.m2, both_empty.variance):
        np.testing.assert_array_equal(array, np.zeros((2, 3)))
    batch = Moments.from_batch(np.random.default_rng(0).normal(size=(7, 2, 3)))
    for merged in (merge_moments(empty, batch), merge_moments(batch, empty)):
        np.testing.assert_array_equal(merged.count, batch.count)
        np.testing.assert_allclose(merged.mean, batch.mean, rtol=1e-15)
        np.testing.assert_allclose(merged.m2, batch.m2, rtol=1e-15)


def test_partially_empty_entries_merge_elementwise() -> None:
    a = Moments(count=np.array([0.0, 2.0]), mean=np.array([0.0, 1.0]), m2=np.array([0.0, 2.0]))
    b = Moments(count=np.array([0.0, 0.0]), mean=np.zeros(2), m2=np.zeros(2))
    merged = merge_moments(a, b)
    np.testing.assert_array_equal(merged.count, [0.0, 2.0])
    np.testing.assert_array_equal(merged.mean, [0.0, 1.0])
    np.testing.assert_array_equal(merged.variance, [0.0, 1.0])


def test_from_batch_of_an_empty_axis_is_zero_moments() -> None:
    moments = Moments.from_batch(np.zeros((0, 4)), axis=0)
    assert moments.count.shape == (4,)
    np.testing.assert_array_equal(moments.count, np.zeros(4))
    np.testing.assert_array_equal(moments.std, np.zeros(4))


def test_from_batch_reduces_the_given_axis() -> None:
    values = np.random.default_rng(2).normal(size=(3, 50))
    moments = Moments.from_batch(values, axis=1)
    np.testing.assert_array_equal(moments.count, np.full(3, 50.0))
    np.testing.assert_allclose(moments.mean, values.mean(axis=1))
    np.testing.assert_allclose(moments.std, values.std(axis=1))


def test_moments_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        Moments(count=np.zeros(2), mean=np.zeros(3), m2=np.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        merge_moments(Moments.zeros(2), Moments.zeros(3))


def test_normalize_gives_zero_mean_unit_std_on_the_batch() -> None:
    values = np.random.default_rng(3).normal(loc=5.0, scale=4.0, size=(2000, 3))
    moments = Moments.from_batch(values)
    z = normalize(values, moments.mean, moments.std)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-6)


def test_normalize_of_a_constant_clip_is_finite() -> None:
    z = normalize(np.array([2.0, 2.0]), np.array([2.0, 2.0]), np.zeros(2))
    np.testing.assert_array_equal(z, [0.0, 0.0])
