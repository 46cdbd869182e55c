"""Pure DeepMimic-style tracking rewards of the planar walker, batched over envs and clips.

A character state is a flat feature vector (see ``FEATURES``); a reference is the same
vector taken from a clip at that clip's phase. Every reward term is

    r_t = exp(-sum_f c_{f,t} (s_f - s^_f)^2),    t in (pose, velocity, end_effector, root)

where ``c_{f,t}`` folds the DeepMimic scale ``k_t`` and a per-feature weight (root height,
pitch and forward speed share one term) into one (F, T) matrix, so the terms of all N
envs and all K clips cost one subtraction, one square, one matrix product and one exp.
No simulator, no env: a test needs a few arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

JOINTS = ("hip_r", "knee_r", "ankle_r", "hip_l", "knee_l", "ankle_l")
"""Actuated joints, in model order."""

FEATURES: tuple[str, ...] = (
    *(f"{j}_angle" for j in JOINTS),
    *(f"{j}_velocity" for j in JOINTS),
    "root_height",
    "root_pitch",
    "root_forward_velocity",
    "foot_r_x",
    "foot_r_z",
    "foot_l_x",
    "foot_l_z",
)
"""Tracked features: joint angles, joint velocities, root, feet relative to the root."""

JOINT_ANGLES = slice(0, 6)
JOINT_VELOCITIES = slice(6, 12)
ROOT_HEIGHT, ROOT_PITCH, ROOT_FORWARD_VELOCITY = 12, 13, 14
FEET = slice(15, 19)
NUM_FEATURES = len(FEATURES)

TERM_NAMES = ("pose", "velocity", "end_effector", "root")


@dataclass(frozen=True)
class TermScales:
    """The ``k`` of each term and the weights of the root term's three errors."""

    pose: float = 2.0
    """k of the pose term: exp(-k * sum_j (q_j - q^_j)^2), radians."""
    velocity: float = 0.1
    """k of the velocity term: exp(-k * sum_j (dq_j - dq^_j)^2), rad/s."""
    end_effector: float = 40.0
    """k of the end-effector term: exp(-k * sum_feet |p - p^|^2), feet relative to the root, m."""
    root: float = 1.0
    """k of the root term: exp(-k * (w_h dh^2 + w_p dpitch^2 + w_v dv^2))."""
    root_height_weight: float = 50.0
    """w_h: weight of the squared root height error (m^2)."""
    root_pitch_weight: float = 10.0
    """w_p: weight of the squared root pitch error (rad^2)."""
    root_velocity_weight: float = 1.0
    """w_v: weight of the squared root forward velocity error ((m/s)^2)."""


def scale_matrix(scales: TermScales) -> np.ndarray:
    """(F, T) matrix c with r_t = exp(-sum_f c_{f,t} (s_f - s^_f)^2)."""
    c = np.zeros((NUM_FEATURES, len(TERM_NAMES)))
    c[JOINT_ANGLES, 0] = scales.pose
    c[JOINT_VELOCITIES, 1] = scales.velocity
    c[FEET, 2] = scales.end_effector
    c[ROOT_HEIGHT, 3] = scales.root * scales.root_height_weight
    c[ROOT_PITCH, 3] = scales.root * scales.root_pitch_weight
    c[ROOT_FORWARD_VELOCITY, 3] = scales.root * scales.root_velocity_weight
    return c


def tracking_terms(state: np.ndarray, reference: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Per-term rewards in [0, 1] of (N, F) states against (N, K, F) references -> (N, K, T).

    r_{n,k,t} = exp(-sum_f scale_{f,t} (state_{n,f} - reference_{n,k,f})^2)
    """
    diff = reference - state[:, None, :]
    err = (diff * diff) @ scale
    return np.exp(-err)
