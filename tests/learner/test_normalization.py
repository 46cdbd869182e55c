"""The batched running observation normaliser."""

from __future__ import annotations

import numpy as np
import pytest

from learner.normalization import RunningObsNormalizer


def test_batched_updates_equal_the_moments_of_the_concatenation() -> None:
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (1, 7, 64, 250)]
    norm = RunningObsNormalizer(4)
    for chunk in chunks:
        norm.update(chunk)
    everything = np.concatenate(chunks)
    assert norm.count == len(everything)
    np.testing.assert_allclose(norm.moments.mean, everything.mean(0), rtol=1e-9)
    np.testing.assert_allclose(norm.moments.variance, everything.var(0), rtol=1e-9)


def test_rollout_shaped_batches_are_one_update() -> None:
    rng = np.random.default_rng(1)
    rollout = rng.normal(size=(16, 8, 3))  # (T, N, obs_dim)
    norm = RunningObsNormalizer(3)
    norm.update(rollout)
    assert norm.count == 16 * 8
    np.testing.assert_allclose(norm.moments.mean, rollout.reshape(-1, 3).mean(0), rtol=1e-9)


def test_normalised_observations_have_zero_mean_unit_std_and_are_clipped() -> None:
    rng = np.random.default_rng(2)
    obs = rng.normal([5.0, -2.0], [10.0, 0.1], size=(5000, 2))
    norm = RunningObsNormalizer(2, clip=5.0)
    norm.update(obs)
    out = norm.normalize(obs)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-2)
    np.testing.assert_allclose(out.std(0), 1.0, atol=1e-2)
    far = norm.normalize(np.array([[1e6, -1e6]]))
    np.testing.assert_array_equal(far, [[5.0, -5.0]])


def test_normaliser_is_the_identity_before_any_update() -> None:
    obs = np.array([[1.5, -2.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(RunningObsNormalizer(3).normalize(obs), obs, rtol=1e-6)


def test_state_dict_round_trip_restores_the_same_normalisation() -> None:
    rng = np.random.default_rng(3)
    norm = RunningObsNormalizer(3)
    norm.update(rng.normal(size=(100, 3)))
    restored = RunningObsNormalizer(3)
    restored.load_state_dict(norm.state_dict())
    probe = rng.normal(size=(10, 3))
    np.testing.assert_array_equal(restored.normalize(probe), norm.normalize(probe))
    assert restored.count == pytest.approx(norm.count)
