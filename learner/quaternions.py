"""Unit-quaternion maths, vectorised over leading axes (numpy only, no simulator).

Convention: quaternions are ``(..., 4)`` arrays ``(w, x, y, z)`` (MuJoCo's and DeepMimic's
order); a rotation vector (exponential map) is ``(..., 3)``, its direction the axis and
its norm the angle. ``q`` and ``-q`` are the same rotation; functions that compare
rotations (``angle_between``, ``slerp``) take the shorter way round.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_SMALL = 1e-8


def normalize(q: npt.ArrayLike) -> np.ndarray:
    """q / |q| over the last axis."""
    q = np.asarray(q, dtype=np.float64)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def canonical(q: npt.ArrayLike) -> np.ndarray:
    """The sign of each quaternion chosen so that w >= 0 (same rotation)."""
    q = np.asarray(q, dtype=np.float64)
    return np.where(q[..., :1] < 0.0, -q, q)


def conjugate(q: npt.ArrayLike) -> np.ndarray:
    """(w, -x, -y, -z): the inverse of a unit quaternion."""
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def multiply(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    """Hamilton product a * b (rotate by b, then by a), broadcast over leading axes."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def rotate(q: npt.ArrayLike, v: npt.ArrayLike) -> np.ndarray:
    """Rotate (..., 3) vectors by unit quaternions: v' = v + 2 w (u x v) + 2 u x (u x v)."""
    q = np.asarray(q, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    w, u = q[..., :1], q[..., 1:]
    uv = np.cross(u, v)
    return v + 2.0 * (w * uv + np.cross(u, uv))


def from_rotvec(r: npt.ArrayLike) -> np.ndarray:
    """Exponential map: rotation vector r = theta * axis -> (cos(theta/2), sin(theta/2) axis)."""
    r = np.asarray(r, dtype=np.float64)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)
    small = theta < _SMALL
    safe = np.where(small, 1.0, theta)
    # sin(theta/2)/theta, with its series 1/2 - theta^2/48 near 0
    k = np.where(small, 0.5 - theta**2 / 48.0, np.sin(0.5 * safe) / safe)
    return np.concatenate([np.cos(0.5 * theta), k * r], axis=-1)


def to_rotvec(q: npt.ArrayLike) -> np.ndarray:
    """Logarithm map: unit quaternion -> rotation vector with angle in [0, pi]."""
    q = canonical(q)
    w, u = q[..., :1], q[..., 1:]
    s = np.linalg.norm(u, axis=-1, keepdims=True)
    small = s < _SMALL
    safe = np.where(small, 1.0, s)
    # theta = 2 atan2(s, w); r = theta u / s, with theta / s -> 2 / w as s -> 0
    k = np.where(small, 2.0 / np.maximum(w, _SMALL), 2.0 * np.arctan2(s, w) / safe)
    return k * u


def from_axis_angle(axis: npt.ArrayLike, angle: npt.ArrayLike) -> np.ndarray:
    """Rotation by ``angle`` about the unit ``axis`` (broadcast)."""
    axis = np.asarray(axis, dtype=np.float64)
    half = 0.5 * np.asarray(angle, dtype=np.float64)[..., None]
    return np.concatenate([np.cos(half), np.sin(half) * axis], axis=-1)


def angle_between(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    """Angle in [0, pi] of the rotation from a to b: 2 acos(|<a, b>|)."""
    dot = np.abs(np.sum(np.asarray(a) * np.asarray(b), axis=-1))
    return 2.0 * np.arccos(np.minimum(dot, 1.0))


def slerp(a: npt.ArrayLike, b: npt.ArrayLike, t: npt.ArrayLike) -> np.ndarray:
    """Spherical linear interpolation from a (t=0) to b (t=1) along the shorter arc.

    q(t) = sin((1-t) W) / sin W * a + sin(t W) / sin W * b with cos W = <a, b>, b flipped
    when <a, b> < 0; nearly equal rotations fall back to a normalised lerp.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)[..., None]
    dot = np.sum(a * b, axis=-1, keepdims=True)
    b = np.where(dot < 0.0, -b, b)
    dot = np.minimum(np.abs(dot), 1.0)
    omega = np.arccos(dot)
    sin_omega = np.sin(omega)
    near = sin_omega < 1e-6
    safe = np.where(near, 1.0, sin_omega)
    wa = np.where(near, 1.0 - t, np.sin((1.0 - t) * omega) / safe)
    wb = np.where(near, t, np.sin(t * omega) / safe)
    return normalize(wa * a + wb * b)


def yaw(q: npt.ArrayLike) -> np.ndarray:
    """Heading about +z of the rotated x axis: atan2(2(wz + xy), 1 - 2(y^2 + z^2))."""
    q = np.asarray(q, dtype=np.float64)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def from_yaw(angle: npt.ArrayLike) -> np.ndarray:
    """Rotation by ``angle`` about +z."""
    half = 0.5 * np.asarray(angle, dtype=np.float64)
    zero = np.zeros_like(half)
    return np.stack([np.cos(half), zero, zero, np.sin(half)], axis=-1)


def to_matrix(q: npt.ArrayLike) -> np.ndarray:
    """(..., 3, 3) rotation matrices of unit quaternions."""
    q = np.asarray(q, dtype=np.float64)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


__all__ = [
    "angle_between",
    "canonical",
    "conjugate",
    "from_axis_angle",
    "from_rotvec",
    "from_yaw",
    "multiply",
    "normalize",
    "rotate",
    "slerp",
    "to_matrix",
    "to_rotvec",
    "yaw",
]
