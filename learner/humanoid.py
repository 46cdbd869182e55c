"""The DeepMimic humanoid in MuJoCo: model loading, qpos layout, clip-frame mapping, kinematics.

The character is ``learner/assets/humanoid.xml``, our MJCF of DeepMimic's humanoid3d
(13 bodies; ball joints at chest, neck, hips, ankles and shoulders; hinges at knees and
elbows), z-up where DeepMimic is y-up.

Why ball joints with per-axis position servos. DeepMimic's clips store every spherical
joint as a quaternion. A MuJoCo ``ball`` joint's qpos *is* a quaternion, so kinematic
playback writes the clip's quaternions (rotated into the z-up frame) straight into qpos
and reproduces them exactly -- no Euler decomposition, no gimbal lock, no hinge limits
clipping a pose. (Three hinges per joint, as some ports do, need an Euler split of every
frame that is exact only away from singular poses.) For control, MuJoCo's joint
transmission on a ball joint measures the projection of the joint's rotation vector
log(q) on the actuator's gear axis, so three ``position`` actuators with gears x, y, z
form a PD servo toward a target rotation vector, tau_i = kp (target_i - log(q)_i) - kv
omega_i, computed and integrated inside MuJoCo (damping implicit under ``implicitfast``)
at every 240 Hz substep: no per-substep Python, which is what keeps the env fast. The
policy's action is that target rotation vector (an exponential-map offset from the rest
pose), one component per actuator, plus one angle per hinge.

Layout. qpos = root position (3), root quaternion (4), then the joints in model order
(``JOINTS``): 4 numbers per ball joint, 1 per hinge (43 in all). qvel = root linear
velocity (world frame, 3), root angular velocity (root frame, 3), 3 per ball joint (joint
frame), 1 per hinge (34). Actuator i drives qvel dof 6 + i (28 actuators).

Tracked state. ``tracked_state`` turns (qpos, qvel, end-effector positions) into the
heading-invariant quantities the rewards compare: hinge angles, joint velocities,
end effectors relative to the root in the heading frame, root height, root velocity in
the heading frame, root angular velocity, and the quaternions of the ball joints and of
the root's tilt (root rotation with its heading removed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from learner import quaternions as quat

ASSET = "humanoid.xml"

JOINTS: tuple[tuple[str, str], ...] = (
    ("chest", "ball"),
    ("neck", "ball"),
    ("right_shoulder", "ball"),
    ("right_elbow", "hinge"),
    ("left_shoulder", "ball"),
    ("left_elbow", "hinge"),
    ("right_hip", "ball"),
    ("right_knee", "hinge"),
    ("right_ankle", "ball"),
    ("left_hip", "ball"),
    ("left_knee", "hinge"),
    ("left_ankle", "ball"),
)
"""The joints after the root's free joint, in model (qpos) order, with their kind."""

JOINT_NAMES: tuple[str, ...] = tuple(name for name, _ in JOINTS)

DEEPMIMIC_JOINTS: tuple[tuple[str, str], ...] = (
    ("chest", "ball"),
    ("neck", "ball"),
    ("right_hip", "ball"),
    ("right_knee", "hinge"),
    ("right_ankle", "ball"),
    ("right_shoulder", "ball"),
    ("right_elbow", "hinge"),
    ("left_hip", "ball"),
    ("left_knee", "hinge"),
    ("left_ankle", "ball"),
    ("left_shoulder", "ball"),
    ("left_elbow", "hinge"),
)
"""The joints of a DeepMimic humanoid3d frame, in frame order (after root pos and rot)."""

END_EFFECTORS: tuple[str, ...] = ("right_wrist", "left_wrist", "right_ankle", "left_ankle")
"""Sites whose positions the end-effector reward tracks (DeepMimic's end effectors)."""

FALL_GEOMS: tuple[str, ...] = ("root", "chest", "neck")
"""Geoms whose touching the ground ends an episode (DeepMimic's ``EnableFallContact``)."""

FEET: tuple[str, ...] = ("right_ankle", "left_ankle")
"""Foot geoms (boxes)."""

JOINT_WEIGHTS: dict[str, float] = {
    "root": 1.0,
    "chest": 0.5,
    "neck": 0.3,
    "hip": 0.5,
    "knee": 0.3,
    "ankle": 0.2,
    "shoulder": 0.3,
    "elbow": 0.2,
}
"""DeepMimic's ``DiffWeight`` per joint (``data/characters/humanoid3d.txt``), by joint kind
(left and right alike). The pose and velocity rewards use them normalised over the 13
joints (root included): wbar_j = w_j / sum_k w_k, sum_k w_k = 4.8."""

NQ = 43
NV = 34
NUM_ACTUATORS = 28
NUM_BALLS = sum(kind == "ball" for _, kind in JOINTS)
NUM_HINGES = len(JOINTS) - NUM_BALLS
ROOT_POS = slice(0, 3)
ROOT_QUAT = slice(3, 7)
ROOT_LINEAR_VELOCITY = slice(0, 3)
ROOT_ANGULAR_VELOCITY = slice(3, 6)

# y-up (DeepMimic) to z-up (this model): (x, y, z) -> (x, -z, y), a proper rotation.
YUP_TO_ZUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class JointIndex:
    """Where each joint lives in a qpos / qvel / DeepMimic pose vector."""

    ball_qpos: np.ndarray
    """(B, 4) qpos columns of the ball joints' quaternions, model order."""
    hinge_qpos: np.ndarray
    """(H,) qpos columns of the hinges."""
    ball_qvel: np.ndarray
    """(B, 3) qvel columns of the ball joints' angular velocities."""
    hinge_qvel: np.ndarray
    """(H,) qvel columns of the hinges."""
    ball_names: tuple[str, ...]
    hinge_names: tuple[str, ...]

    @classmethod
    def of(cls, joints: Sequence[tuple[str, str]], qpos_start: int, qvel_start: int) -> JointIndex:
        """Index a joint sequence laid out from qpos_start / qvel_start."""
        ball_qpos, hinge_qpos, ball_qvel, hinge_qvel = [], [], [], []
        balls, hinges = [], []
        p, v = qpos_start, qvel_start
        for name, kind in joints:
            if kind == "ball":
                ball_qpos.append(range(p, p + 4))
                ball_qvel.append(range(v, v + 3))
                balls.append(name)
                p, v = p + 4, v + 3
            else:
                hinge_qpos.append(p)
                hinge_qvel.append(v)
                hinges.append(name)
                p, v = p + 1, v + 1
        return cls(
            ball_qpos=np.array(ball_qpos, dtype=np.int64),
            hinge_qpos=np.array(hinge_qpos, dtype=np.int64),
            ball_qvel=np.array(ball_qvel, dtype=np.int64),
            hinge_qvel=np.array(hinge_qvel, dtype=np.int64),
            ball_names=tuple(balls),
            hinge_names=tuple(hinges),
        )

    def ball_order(self, names: Sequence[str]) -> np.ndarray:
        """Positions in this index of the named ball joints."""
        return np.array([self.ball_names.index(n) for n in names], dtype=np.int64)

    def hinge_order(self, names: Sequence[str]) -> np.ndarray:
        """Positions in this index of the named hinges."""
        return np.array([self.hinge_names.index(n) for n in names], dtype=np.int64)


MODEL_INDEX = JointIndex.of(JOINTS, qpos_start=7, qvel_start=6)
"""Joint columns of our qpos / qvel."""
DEEPMIMIC_INDEX = JointIndex.of(DEEPMIMIC_JOINTS, qpos_start=7, qvel_start=6)
"""Joint columns of a DeepMimic pose (a frame without its duration)."""


def _joint_weight(name: str) -> float:
    return JOINT_WEIGHTS[name.removeprefix("right_").removeprefix("left_")]


def joint_weight_vectors() -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Normalised joint weights wbar laid out as the reward sees them.

    Returns (hinges (H,) in model order, dofs (28,) in qvel/actuator order, balls (B,) in
    model order, root), with wbar_j = w_j / sum over the root and all 12 joints of w.
    """
    total = JOINT_WEIGHTS["root"] + sum(_joint_weight(name) for name in JOINT_NAMES)
    hinges = np.array([_joint_weight(n) for n in MODEL_INDEX.hinge_names]) / total
    balls = np.array([_joint_weight(n) for n in MODEL_INDEX.ball_names]) / total
    dofs = np.concatenate(
        [np.full(3 if kind == "ball" else 1, _joint_weight(name)) for name, kind in JOINTS]
    )
    return hinges, dofs / total, balls, JOINT_WEIGHTS["root"] / total


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


def asset_path() -> Path:
    """Path of the packaged MJCF."""
    return Path(__file__).resolve().parent / "assets" / ASSET


def load_model(physics_dt: float | None = None) -> mujoco.MjModel:
    """The single-character model, optionally with another time step."""
    model = mujoco.MjModel.from_xml_path(str(asset_path()))
    if physics_dt is not None:
        model.opt.timestep = physics_dt
    return model


def build_batched_model(
    num_characters: int, physics_dt: float | None = None, spacing: float = 2.0
) -> mujoco.MjModel:
    """One model with ``num_characters`` humanoids (names prefixed ``h{i}/``) in lanes.

    Characters start ``spacing`` apart in y and never touch each other, only the floor.
    """
    path = str(asset_path())
    spec = mujoco.MjSpec.from_file(path)
    spec.delete(spec.body("root"))
    for i in range(num_characters):
        character = mujoco.MjSpec.from_file(path)
        frame = spec.worldbody.add_frame(pos=[0.0, spacing * i, 0.0])
        frame.attach_body(character.body("root"), f"h{i}/", "")
    model = spec.compile()
    if physics_dt is not None:
        model.opt.timestep = physics_dt
    return model


def rest_qpos() -> np.ndarray:
    """(43,) standing rest pose at the origin (identity rotations, root 0.9 m up)."""
    qpos = np.zeros(NQ)
    qpos[2] = 0.9
    qpos[3] = 1.0
    qpos[MODEL_INDEX.ball_qpos[:, 0]] = 1.0
    return qpos


# --------------------------------------------------------------------------------------
# DeepMimic frames <-> qpos
# --------------------------------------------------------------------------------------


def _vectors_to_zup(v: np.ndarray) -> np.ndarray:
    return v @ YUP_TO_ZUP.T


def _quats_to_zup(q: np.ndarray) -> np.ndarray:
    """A y-up rotation R becomes P R P^T in z-up: (w, v) -> (w, P v)."""
    return np.concatenate([q[..., :1], _vectors_to_zup(q[..., 1:])], axis=-1)


def deepmimic_pose_to_qpos(pose: np.ndarray) -> np.ndarray:
    """(F, 43) DeepMimic poses (frames without the duration column) -> (F, 43) qpos.

    Root position and every quaternion are rotated from y-up to z-up, quaternions are
    normalised (the files keep 6 decimals), hinge angles are copied unchanged (the hinge
    axis is P applied to DeepMimic's z axis), and joints are reordered to model order.
    """
    pose = np.asarray(pose, dtype=np.float64)
    if pose.ndim != 2 or pose.shape[1] != NQ:
        raise ValueError(f"expected (frames, {NQ}) DeepMimic poses, got {pose.shape}")
    qpos = np.empty_like(pose)
    qpos[:, ROOT_POS] = _vectors_to_zup(pose[:, 0:3])
    qpos[:, ROOT_QUAT] = quat.normalize(_quats_to_zup(pose[:, 3:7]))
    src, dst = DEEPMIMIC_INDEX, MODEL_INDEX
    balls = dst.ball_order(src.ball_names)
    hinges = dst.hinge_order(src.hinge_names)
    qpos[:, dst.ball_qpos[balls]] = quat.normalize(_quats_to_zup(pose[:, src.ball_qpos]))
    qpos[:, dst.hinge_qpos[hinges]] = pose[:, src.hinge_qpos]
    return qpos


def qpos_to_deepmimic_pose(qpos: np.ndarray) -> np.ndarray:
    """(F, 43) qpos -> (F, 43) DeepMimic poses (the inverse of ``deepmimic_pose_to_qpos``)."""
    qpos = np.asarray(qpos, dtype=np.float64)
    pose = np.empty_like(qpos)
    back = YUP_TO_ZUP  # v_yup = P^T v_zup, i.e. v_zup @ P
    pose[:, 0:3] = qpos[:, ROOT_POS] @ back
    root = qpos[:, ROOT_QUAT]
    pose[:, 3:7] = np.concatenate([root[:, :1], root[:, 1:] @ back], axis=-1)
    src, dst = MODEL_INDEX, DEEPMIMIC_INDEX
    balls = src.ball_order(dst.ball_names)
    hinges = src.hinge_order(dst.hinge_names)
    q = qpos[:, src.ball_qpos[balls]]
    pose[:, dst.ball_qpos] = np.concatenate([q[..., :1], q[..., 1:] @ back], axis=-1)
    pose[:, dst.hinge_qpos] = qpos[:, src.hinge_qpos[hinges]]
    return pose


# --------------------------------------------------------------------------------------
# Pose arithmetic on qpos
# --------------------------------------------------------------------------------------


def qpos_velocity(qpos_a: np.ndarray, qpos_b: np.ndarray, dt: float) -> np.ndarray:
    """(..., 34) qvel that moves qpos_a to qpos_b in dt (MuJoCo's ``mj_differentiatePos``).

    Root: (p_b - p_a) / dt in the world frame and log(q_a^-1 q_b) / dt in the root frame;
    ball joints: log(q_a^-1 q_b) / dt in the joint frame; hinges: (b - a) / dt.
    """
    a = np.asarray(qpos_a, dtype=np.float64)
    b = np.asarray(qpos_b, dtype=np.float64)
    idx = MODEL_INDEX
    qvel = np.empty((*a.shape[:-1], NV))
    qvel[..., ROOT_LINEAR_VELOCITY] = (b[..., ROOT_POS] - a[..., ROOT_POS]) / dt
    rel = quat.multiply(quat.conjugate(a[..., ROOT_QUAT]), b[..., ROOT_QUAT])
    qvel[..., ROOT_ANGULAR_VELOCITY] = quat.to_rotvec(rel) / dt
    rel = quat.multiply(quat.conjugate(a[..., idx.ball_qpos]), b[..., idx.ball_qpos])
    qvel[..., idx.ball_qvel] = quat.to_rotvec(rel) / dt
    qvel[..., idx.hinge_qvel] = (b[..., idx.hinge_qpos] - a[..., idx.hinge_qpos]) / dt
    return qvel


def interpolate_qpos(qpos_a: np.ndarray, qpos_b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend poses at fractions t in [0, 1]: lerp positions and hinges, slerp quaternions."""
    a = np.asarray(qpos_a, dtype=np.float64)
    b = np.asarray(qpos_b, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    idx = MODEL_INDEX
    out = a + t[..., None] * (b - a)
    out[..., ROOT_QUAT] = quat.slerp(a[..., ROOT_QUAT], b[..., ROOT_QUAT], t)
    out[..., idx.ball_qpos] = quat.slerp(a[..., idx.ball_qpos], b[..., idx.ball_qpos], t[..., None])
    return out


def pd_targets(qpos: np.ndarray) -> np.ndarray:
    """(..., 43) poses -> (..., 28) actuator targets that hold them: log(q) per ball joint
    (rotation vector, 3 components), the angle per hinge, in actuator (qvel) order."""
    qpos = np.asarray(qpos, dtype=np.float64)
    idx = MODEL_INDEX
    targets = np.empty((*qpos.shape[:-1], NUM_ACTUATORS))
    targets[..., idx.ball_qvel - 6] = quat.to_rotvec(qpos[..., idx.ball_qpos])
    targets[..., idx.hinge_qvel - 6] = qpos[..., idx.hinge_qpos]
    return targets


# Sagittal mirror (y -> -y): a rotation R becomes M R M, M = diag(1, -1, 1), i.e. the
# quaternion (w, x, y, z) -> (w, -x, y, -z); hinges about the y axis keep their angle.
_MIRROR = np.array([1.0, -1.0, 1.0, -1.0])


def mirror_right_to_left(qpos: np.ndarray) -> np.ndarray:
    """A copy of qpos whose left arm and leg mirror the right ones (a symmetric pose)."""
    out = np.array(qpos, dtype=np.float64, copy=True)
    idx = MODEL_INDEX
    for joint in ("hip", "ankle", "shoulder"):
        right, left = idx.ball_order([f"right_{joint}", f"left_{joint}"])
        out[..., idx.ball_qpos[left]] = out[..., idx.ball_qpos[right]] * _MIRROR
    for joint in ("knee", "elbow"):
        right, left = idx.hinge_order([f"right_{joint}", f"left_{joint}"])
        out[..., idx.hinge_qpos[left]] = out[..., idx.hinge_qpos[right]]
    return out


# --------------------------------------------------------------------------------------
# Forward kinematics with MuJoCo (offline: clip tables, procedural clips, tests)
# --------------------------------------------------------------------------------------


class Kinematics:
    """Forward kinematics of the humanoid by MuJoCo, one pose at a time over a batch."""

    def __init__(self, model: mujoco.MjModel | None = None) -> None:
        self.model = model if model is not None else load_model()
        self.data = mujoco.MjData(self.model)
        self._sites = np.array([self.model.site(n).id for n in END_EFFECTORS])
        self._feet = np.array([self.model.geom(n).id for n in FEET])

    def _run(self, qpos: np.ndarray, read: Callable[[], np.ndarray]) -> np.ndarray:
        qpos = np.atleast_2d(np.asarray(qpos, dtype=np.float64))
        rows = []
        for pose in qpos:
            self.data.qpos[:] = pose
            mujoco.mj_kinematics(self.model, self.data)
            rows.append(read())
        return np.stack(rows)

    def end_effectors(self, qpos: np.ndarray) -> np.ndarray:
        """(F, 43) qpos -> (F, 4, 3) world positions of ``END_EFFECTORS``."""
        return self._run(qpos, lambda: self.data.site_xpos[self._sites].copy())

    def body_positions(self, qpos: np.ndarray) -> np.ndarray:
        """(F, 43) qpos -> (F, nbody, 3) world positions of every body origin (row 0: world)."""
        return self._run(qpos, lambda: self.data.xpos.copy())

    def body_quaternions(self, qpos: np.ndarray) -> np.ndarray:
        """(F, 43) qpos -> (F, nbody, 4) world orientations of every body."""
        return self._run(qpos, lambda: self.data.xquat.copy())

    def sole_height(self, qpos: np.ndarray) -> np.ndarray:
        """(F, 43) qpos -> (F,) height of the lowest corner of the two foot boxes."""
        corners = np.array([[sx, sy, -1.0] for sx in (-1.0, 1.0) for sy in (-1.0, 1.0)])

        def lowest() -> np.ndarray:
            heights = []
            for g in self._feet:
                local = corners * self.model.geom_size[g]
                world = self.data.geom_xpos[g] + local @ self.data.geom_xmat[g].reshape(3, 3).T
                heights.append(world[:, 2].min())
            return np.array(min(heights))

        return self._run(qpos, lowest)


# --------------------------------------------------------------------------------------
# Tracked (heading-invariant) state
# --------------------------------------------------------------------------------------

TRACKED_FEATURES: dict[str, slice] = {
    "hinge_angles": slice(0, NUM_HINGES),
    "joint_velocities": slice(NUM_HINGES, NUM_HINGES + NV - 6),
    "end_effectors": slice(NUM_HINGES + NV - 6, NUM_HINGES + NV - 6 + 3 * len(END_EFFECTORS)),
}
_F0 = TRACKED_FEATURES["end_effectors"].stop
TRACKED_FEATURES |= {
    "root_height": slice(_F0, _F0 + 1),
    "root_velocity": slice(_F0 + 1, _F0 + 4),
    "root_angular_velocity": slice(_F0 + 4, _F0 + 7),
}
NUM_TRACKED_FEATURES = _F0 + 7
"""Length of the flat feature vector (51)."""
TRACKED_QUATS: tuple[str, ...] = (*MODEL_INDEX.ball_names, "root_tilt")
"""The quaternions compared by angle: every ball joint, then the root's tilt."""


def tracked_state(
    qpos: np.ndarray, qvel: np.ndarray, end_effectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 43) qpos, (N, 34) qvel, (N, 4, 3) world end effectors -> (N, 51), (N, 9, 4).

    Returns the tracked features (``TRACKED_FEATURES``) and quaternions (``TRACKED_QUATS``).

    Heading frame: world vectors rotated by -yaw about z, so the state does not depend on
    where the character stands or faces: v_h = (c v_x + s v_y, -s v_x + c v_y, v_z) with
    (c, s) = (cos yaw, sin yaw). Root tilt = from_yaw(yaw)^-1 * root quaternion.
    """
    n = qpos.shape[0]
    idx = MODEL_INDEX
    f = TRACKED_FEATURES
    w, x, y, z = (qpos[:, 3 + i] for i in range(4))
    half = 0.5 * np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    ch, sh = np.cos(half), np.sin(half)
    c = (ch * ch - sh * sh)[:, None]  # cos(yaw)
    s = (2.0 * ch * sh)[:, None]  # sin(yaw)

    # end effectors relative to the root (rows 0-3) and the root velocity (row 4)
    vectors = np.empty((n, len(END_EFFECTORS) + 1, 3))
    vectors[:, :-1] = end_effectors - qpos[:, None, ROOT_POS]
    vectors[:, -1] = qvel[:, ROOT_LINEAR_VELOCITY]
    turned = np.empty_like(vectors)
    turned[..., 0] = c * vectors[..., 0] + s * vectors[..., 1]
    turned[..., 1] = c * vectors[..., 1] - s * vectors[..., 0]
    turned[..., 2] = vectors[..., 2]

    feats = np.empty((n, NUM_TRACKED_FEATURES))
    feats[:, f["hinge_angles"]] = qpos[:, idx.hinge_qpos]
    feats[:, f["joint_velocities"]] = qvel[:, 6:]
    feats[:, f["end_effectors"]] = turned[:, :-1].reshape(n, -1)
    feats[:, f["root_height"]] = qpos[:, 2:3]
    feats[:, f["root_velocity"]] = turned[:, -1]
    feats[:, f["root_angular_velocity"]] = qvel[:, ROOT_ANGULAR_VELOCITY]

    quats = np.empty((n, NUM_BALLS + 1, 4))
    quats[:, :NUM_BALLS] = qpos[:, idx.ball_qpos]
    # tilt = (cos(yaw/2), 0, 0, -sin(yaw/2)) * (w, x, y, z)
    tilt = quats[:, NUM_BALLS]
    tilt[:, 0] = ch * w + sh * z
    tilt[:, 1] = ch * x + sh * y
    tilt[:, 2] = ch * y - sh * x
    tilt[:, 3] = ch * z - sh * w
    return feats, quats


__all__ = [
    "DEEPMIMIC_INDEX",
    "DEEPMIMIC_JOINTS",
    "END_EFFECTORS",
    "FALL_GEOMS",
    "JOINTS",
    "JOINT_NAMES",
    "JOINT_WEIGHTS",
    "MODEL_INDEX",
    "NQ",
    "NUM_ACTUATORS",
    "NUM_TRACKED_FEATURES",
    "NV",
    "TRACKED_FEATURES",
    "TRACKED_QUATS",
    "YUP_TO_ZUP",
    "JointIndex",
    "Kinematics",
    "asset_path",
    "build_batched_model",
    "deepmimic_pose_to_qpos",
    "interpolate_qpos",
    "joint_weight_vectors",
    "load_model",
    "mirror_right_to_left",
    "pd_targets",
    "qpos_to_deepmimic_pose",
    "qpos_velocity",
    "rest_qpos",
    "tracked_state",
]
