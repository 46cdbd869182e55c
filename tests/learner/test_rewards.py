"""Pure tracking rewards: 1 on the reference, falling with error, each term on its features."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learner import quaternions as quat
from learner.envs.episodes import welford_update
from learner.rewards import (
    TERM_NAMES,
    quaternion_angles,
    scale_matrix,
    squared_errors,
    term_errors,
    tracking_terms,
    weighted_reward,
)

F, Q, T = 6, 2, len(TERM_NAMES)
# features 0-1 -> pose, 2-3 -> velocity, 4 -> end effector, 5 -> root; quat 0 -> pose, 1 -> root
FEATURE_SCALE = scale_matrix(
    F, T, [(slice(0, 2), 0, 2.0), ([2, 3], 1, 0.1), (4, 2, 40.0), (5, 3, 5.0)]
)
QUAT_SCALE = scale_matrix(Q, T, [(0, 0, 2.0), (1, 3, 1.0)])


def _random_state(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(size=(n, F)), quat.normalize(rng.normal(size=(n, Q, 4)))


def _terms(
    state: np.ndarray, quats: np.ndarray, ref: np.ndarray, ref_quats: np.ndarray
) -> np.ndarray:
    return tracking_terms(state, ref, FEATURE_SCALE, quats, ref_quats, QUAT_SCALE)


def test_every_term_is_one_on_the_reference() -> None:
    rng = np.random.default_rng(0)
    state, quats = _random_state(rng, 4)
    ref = np.repeat(state[:, None], 3, axis=1)
    ref_quats = np.repeat(-quats[:, None], 3, axis=1)  # q and -q: the same rotation
    terms = _terms(state, quats, ref, ref_quats)
    assert terms.shape == (4, 3, T)
    np.testing.assert_allclose(terms, 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(weighted_reward(terms, np.array([0.65, 0.1, 0.15, 0.1])), 1.0)


def test_terms_fall_as_the_error_grows() -> None:
    rng = np.random.default_rng(1)
    state, quats = _random_state(rng, 1)
    direction = rng.normal(size=F)
    axis = quat.normalize(rng.normal(size=3))
    scales = np.array([0.0, 0.05, 0.1, 0.3, 0.6])
    ref = state[:, None] + scales[None, :, None] * direction
    turn = quat.from_axis_angle(axis, scales)  # (K, 4)
    ref_quats = quat.multiply(quats[:, None], turn[None, :, None])
    terms = _terms(state, quats, ref, ref_quats)[0]  # (K, T)
    np.testing.assert_allclose(terms[0], 1.0, rtol=0, atol=1e-12)
    assert np.all(np.diff(terms, axis=0) < 0)


def test_each_term_sees_only_its_own_features() -> None:
    rng = np.random.default_rng(2)
    state, quats = _random_state(rng, 1)
    groups = {0: [0, 1], 1: [2, 3], 2: [4], 3: [5]}
    for term, features in groups.items():
        ref = state[:, None].copy()
        ref[..., features] += 0.3
        terms = _terms(state, quats, ref, quats[:, None])[0, 0]
        assert terms[term] < 1.0
        np.testing.assert_allclose(np.delete(terms, term), 1.0, rtol=0, atol=1e-12)
    for q, term in ((0, 0), (1, 3)):
        ref_quats = quats[:, None].copy()
        ref_quats[0, 0, q] = quat.multiply(quats[0, q], quat.from_axis_angle([0, 0, 1.0], 0.4))
        terms = _terms(state, quats, state[:, None], ref_quats)[0, 0]
        assert terms[term] == pytest.approx(np.exp(-QUAT_SCALE[q, term] * 0.4**2))
        np.testing.assert_allclose(np.delete(terms, term), 1.0, rtol=0, atol=1e-12)


def test_term_is_exp_of_minus_scaled_squared_error() -> None:
    state = np.zeros((1, F))
    ref = np.zeros((1, 1, F))
    ref[0, 0, 4] = 0.1  # end-effector feature off by 0.1 m
    err = term_errors(state, ref, FEATURE_SCALE)
    assert err[0, 0, 2] == pytest.approx(40.0 * 0.01)
    np.testing.assert_allclose(tracking_terms(state, ref, FEATURE_SCALE), np.exp(-err))
    np.testing.assert_allclose(squared_errors(state, ref)[0, 0, 4], 0.01)


def test_quaternion_angles_are_rotation_angles_and_ignore_sign() -> None:
    q = quat.normalize(np.array([[[0.3, -0.2, 0.9, 0.1]]]))
    angles = np.array([0.0, 0.5, 2.0, np.pi])
    turned = quat.multiply(q[:, :, None], quat.from_axis_angle([1.0, 0, 0], angles)[None, None])
    ref = np.moveaxis(turned, 2, 1)  # (1, K, 1, 4)
    got = quaternion_angles(q, ref)[0, :, 0]
    np.testing.assert_allclose(got, angles, atol=1e-7)
    np.testing.assert_allclose(quaternion_angles(q, -ref)[0, :, 0], angles, atol=1e-7)


def test_scale_matrix_sums_entries_into_term_columns() -> None:
    matrix = scale_matrix(3, 2, [(slice(0, 2), 0, 1.5), (2, 1, 4.0), ([1], 0, 0.5)])
    np.testing.assert_array_equal(matrix, [[1.5, 0.0], [2.0, 0.0], [0.0, 4.0]])


def test_welford_update_matches_numpy_mean_and_variance() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(7, 2, T))
    mean = np.zeros((2, T))
    m2 = np.zeros((2, T))
    for step, value in enumerate(values, start=1):
        mean, m2 = welford_update(np.full(2, step), mean, m2, value)
    np.testing.assert_allclose(mean, values.mean(axis=0))
    np.testing.assert_allclose(m2 / len(values), values.var(axis=0))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 100.0))
def test_terms_stay_in_the_unit_interval(seed: int, spread: float) -> None:
    rng = np.random.default_rng(seed)
    state, quats = _random_state(rng, 3)
    ref = state[:, None] + spread * rng.normal(size=(3, 4, F))
    ref_quats = quat.normalize(rng.normal(size=(3, 4, Q, 4)))
    terms = _terms(state, quats, ref, ref_quats)
    assert np.all((terms >= 0.0) & (terms <= 1.0))
    assert np.all(np.isfinite(terms))
