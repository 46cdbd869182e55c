"""Pure DeepMimic-style tracking rewards, batched over envs (N) and clips (K).

A character state is a flat feature vector (N, F) plus a set of orientations (N, Q, 4);
a reference is the same taken from every clip, (N, K, F) and (N, K, Q, 4). Every reward
term t is

    r_t = exp(-( sum_f c_{f,t} (s_f - s^_f)^2  +  sum_j d_{j,t} angle(q_j, q^_j)^2 ))

so DeepMimic's pose, velocity, end-effector and root terms (each exp(-k * squared error))
are one (F, T) matrix c and one (Q, T) matrix d that fold the scales k_t and per-feature
weights: the terms of all N envs and all K clips cost a few array operations. No simulator,
no env: a test needs a few arrays. Envs with no orientations pass Q = 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

TERM_NAMES: tuple[str, ...] = ("pose", "velocity", "end_effector", "root")
"""The DeepMimic terms, in column order of the (N, K, T) reward arrays."""


def squared_errors(state: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N, F) states against (N, K, F) references -> (N, K, F) squared differences."""
    diff = reference - state[:, None, :]
    return diff * diff


def quaternion_angles(quats: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N, Q, 4) unit quaternions against (N, K, Q, 4) -> (N, K, Q) angles 2 acos |<q, q^>|."""
    dot = np.abs(np.sum(reference * quats[:, None], axis=-1))
    return 2.0 * np.arccos(np.minimum(dot, 1.0))


def term_errors(
    state: np.ndarray,
    reference: np.ndarray,
    feature_scale: np.ndarray,
    quats: np.ndarray | None = None,
    reference_quats: np.ndarray | None = None,
    quat_scale: np.ndarray | None = None,
) -> np.ndarray:
    """Scaled squared errors (N, K, T): sum_f c_ft (s - s^)^2 + sum_j d_jt angle_j^2."""
    err = squared_errors(state, reference) @ feature_scale
    if quats is not None and reference_quats is not None and quat_scale is not None:
        angles = quaternion_angles(quats, reference_quats)
        err = err + (angles * angles) @ quat_scale
    return err


def tracking_terms(
    state: np.ndarray,
    reference: np.ndarray,
    feature_scale: np.ndarray,
    quats: np.ndarray | None = None,
    reference_quats: np.ndarray | None = None,
    quat_scale: np.ndarray | None = None,
) -> np.ndarray:
    """Per-term rewards in (0, 1] of every env against every clip: exp(-term_errors) (N, K, T)."""
    return np.exp(-term_errors(state, reference, feature_scale, quats, reference_quats, quat_scale))


def weighted_reward(terms: np.ndarray, term_weights: np.ndarray) -> np.ndarray:
    """DeepMimic sum r = sum_t w_t r_t over the last axis of (..., T) terms."""
    return terms @ term_weights


def scale_matrix(
    num_features: int,
    num_terms: int,
    entries: Iterable[tuple[slice | Sequence[int] | int, int, float]],
) -> np.ndarray:
    """(F, T) coefficients from (feature selection, term index, coefficient) entries (summed)."""
    matrix = np.zeros((num_features, num_terms))
    for features, term, coefficient in entries:
        column = matrix[:, term]
        column[features] += coefficient
    return matrix


__all__ = [
    "TERM_NAMES",
    "quaternion_angles",
    "scale_matrix",
    "squared_errors",
    "term_errors",
    "tracking_terms",
    "weighted_reward",
]
