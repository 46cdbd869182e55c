"""The cheap planar imitation env: a MuJoCo 2-D biped tracking five procedural gaits.

Role: fast tests, CI and the mode-collapse experiments (many training arms on 2 cores),
with the same contract as the humanoid (``learner.envs.base.VecMultiClipEnv``).

Dynamics choice (measured on the 2-core box, 64 walkers, random actions, physics only):
a Python loop over 64 ``MjData`` with 8 substeps ran ~13k env steps/s; one ``MjModel``
holding all 64 walkers as separate bodies (copies of ``assets/planar_walker.xml`` side by
side in y, unable to touch each other) stepped with a single ``mj_step(nstep=...)`` ran
~13.5k with 8 substeps and ~24k with 4, its constraint solver splitting the walkers into
islands. So the env is one batched MuJoCo model at 30 Hz control with 4 substeps
(physics dt 1/120 s; joint armature keeps the PD servos stable at that step), and
everything else -- reading the state, forward kinematics of the feet, the reference lookup
and the per-term rewards of all clips -- is a handful of numpy operations on (N, ...)
arrays (the terms of all N x K pairs are one matrix product and one exp). The whole env
runs ~33k env steps/s at N = 64 with random actions, ~26k with the walkers standing
(``bench/bench_planar_env.py``); physics is about two thirds of it. A hand-written numpy
walker would be faster still, but its contact model would be ours to get right; a real
rigid-body simulator keeps this a real control problem: the actions are PD targets of six
leg joints, the walker falls (early termination), and each gait needs its own joint
pattern to produce its root velocity.

Clips are procedural: a gait is a stance/swing foot path relative to the hip plus a hip
height and lean, turned into joint angles by two-link inverse kinematics (stance feet
stay flat and still on the ground); joint and root velocities are periodic finite
differences. Back is Walk played backwards at 2/3 speed, Sprint is Run played 1.5x faster.

Why naive training collapses here (uniform sampling, r = max_i r_i): every clip's terms
are computed at every step, so a walker that simply stands earns the Idle reward (close to
1) whatever clip it was asked for, while every moving gait has to be learned as a
coordinated cycle whose early attempts fall and end the episode. The zero action is a
slightly crouched stand, close to the Idle pose, so standing is both the easiest optimum
of the max reward and the policy's starting point: the max-reward policy drifts to Idle
for every clip. The moving gaits separate by root speed (0, 1.2, -0.8, 3, 4.5 m/s) and by
joint pattern, so only the active clip's terms (or the clip id in the observation plus a
reward that looks at it) can pull the policy off the Idle mode. In a lean PPO probe
(64 envs, 1M steps, one thread) Walk alone reached a mean reward of 0.73 and Run alone
0.76; all five clips sampled uniformly with r = max_i r_i ended with Idle the best-matched
clip on 96% of steps, Walk and Back tracked at ~0.23 (standing) and Run/Sprint falling
within a second; with the active clip's own reward instead, Idle was best on 64% of steps
and Walk/Back reached 0.33/0.40 after 1.2M steps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np

from learner.config import FIVE_CLIPS
from learner.envs.base import EpisodeEnd, NextClip, VecStep
from learner.envs.episodes import EpisodeStats
from learner.envs.gym_wrapper import SingleClipGymEnv
from learner.envs.planar_rewards import (
    FEET,
    JOINT_ANGLES,
    JOINT_VELOCITIES,
    NUM_FEATURES,
    ROOT_FORWARD_VELOCITY,
    ROOT_HEIGHT,
    ROOT_PITCH,
    TERM_NAMES,
    TermScales,
    scale_matrix,
    tracking_terms,
)
from learner.rewards import weighted_reward

logger = logging.getLogger(__name__)

ASSET = "planar_walker.xml"
NUM_JOINTS = 6
ROOT_DOFS = 3  # rootx, rootz, rooty
LEGS = ((0, 1, 2), (3, 4, 5))  # (hip, knee, ankle) columns of the right and left leg
DEFAULT_CLIPS = FIVE_CLIPS
"""The planar env's procedural clips: the design note's five."""
STATE_DIM = NUM_FEATURES + 2  # tracked features + root vertical velocity + pitch rate


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanarConfig:
    """Settings of the planar imitation env."""

    control_hz: float = 30.0
    """Control steps per second."""
    substeps: int = 4
    """MuJoCo steps per control step (physics dt = 1 / (control_hz * substeps))."""
    max_episode_steps: int = 300
    """Control steps before an episode is truncated."""
    skill_one_hot: bool = True
    """Append the active clip's one-hot to the observation (design note §5)."""
    speed_target: bool = False
    """Append the active clip's mean forward speed (m/s) to the observation (§5)."""
    success_threshold: float = 0.5
    """An episode succeeds when it did not fall and its mean active-clip reward is >= this."""
    term_weights: tuple[float, float, float, float] = (0.65, 0.1, 0.15, 0.1)
    """DeepMimic weights of the pose, velocity, end_effector and root terms (sum to 1)."""
    term_scales: TermScales = field(default_factory=TermScales)
    """The k of each term, r = exp(-k * err)."""
    fall_height: float = 0.55
    """The episode terminates when the root (hip) drops below this height (m)."""
    fall_pitch: float = 1.0
    """... or when the torso pitches further than this from upright (rad)."""
    frames_per_cycle: int = 256
    """Reference frames per gait cycle (lookup is nearest frame)."""
    action_center: tuple[float, float, float] = (-0.35, 0.65, -0.3)
    """PD target (hip, knee, ankle) at action 0: a crouched stand near the Idle pose."""
    action_scale: tuple[float, float, float] = (1.2, 1.5, 0.6)
    """PD target = clip(center + scale * action, joint range), per (hip, knee, ankle)."""

    def __post_init__(self) -> None:
        if self.control_hz <= 0 or self.substeps < 1 or self.max_episode_steps < 1:
            raise ValueError("control_hz, substeps and max_episode_steps must be positive")
        if self.frames_per_cycle < 8:
            raise ValueError("frames_per_cycle must be >= 8")
        weights = np.asarray(self.term_weights, dtype=np.float64)
        if weights.shape != (len(TERM_NAMES),) or np.any(weights < 0):
            raise ValueError("term_weights needs 4 non-negative values")
        if not np.isclose(weights.sum(), 1.0):
            raise ValueError(f"term_weights must sum to 1, got {weights.sum()}")

    @property
    def control_dt(self) -> float:
        """Seconds per control step."""
        return 1.0 / self.control_hz

    @property
    def physics_dt(self) -> float:
        """MuJoCo time step."""
        return self.control_dt / self.substeps


# --------------------------------------------------------------------------------------
# Walker geometry and planar kinematics
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalkerGeometry:
    """Offsets (x, z) of the leg chain in each parent frame, and limits, read from the MJCF."""

    hip: np.ndarray
    """Thigh origin in the torso (root) frame."""
    knee: np.ndarray
    """Shin origin in the thigh frame."""
    ankle: np.ndarray
    """Foot origin in the shin frame."""
    foot_site: np.ndarray
    """Foot reference point (the end effector) in the foot frame."""
    sole_drop: float
    """Height of the ankle above the ground when the foot lies flat on it."""
    root_height0: float
    """Hip height when the rootz slide is 0 (root height = rootz + this)."""
    joint_low: np.ndarray
    """(6,) lower joint limits."""
    joint_high: np.ndarray
    """(6,) upper joint limits."""

    @classmethod
    def from_model(cls, model: mujoco.MjModel) -> WalkerGeometry:
        """Read the geometry of the single-walker model."""

        def xz(v: np.ndarray) -> np.ndarray:
            return np.array([v[0], v[2]], dtype=np.float64)

        foot_geom = model.geom("foot_r")
        low, high = [], []
        for leg in ("r", "l"):
            for joint in ("hip", "knee", "ankle"):
                lo, hi = model.joint(f"{joint}_{leg}").range
                low.append(lo)
                high.append(hi)
        return cls(
            hip=xz(model.body("thigh_r").pos),
            knee=xz(model.body("shin_r").pos),
            ankle=xz(model.body("foot_r").pos),
            foot_site=xz(model.site("foot_r").pos),
            sole_drop=float(foot_geom.size[0] - foot_geom.pos[2]),
            root_height0=float(model.body("torso").pos[2]),
            joint_low=np.array(low),
            joint_high=np.array(high),
        )


def _rotate(phi: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the (x, z) offset by angles phi about +y: (x cos + z sin, -x sin + z cos)."""
    c, s = np.cos(phi), np.sin(phi)
    return offset[0] * c + offset[1] * s, -offset[0] * s + offset[1] * c


def feet_relative_to_root(
    pitch: np.ndarray, joint_angles: np.ndarray, geometry: WalkerGeometry
) -> np.ndarray:
    """(N,) pitch and (N, 6) joint angles -> (N, 4) foot points (r_x, r_z, l_x, l_z) minus root."""
    phi = np.broadcast_to(pitch[:, None], (pitch.shape[0], 2))
    x, z = _rotate(phi, geometry.hip)
    for column, offset in enumerate((geometry.knee, geometry.ankle, geometry.foot_site)):
        phi = phi + joint_angles[:, [LEGS[0][column], LEGS[1][column]]]
        dx, dz = _rotate(phi, offset)
        x, z = x + dx, z + dz
    return np.stack([x[:, 0], z[:, 0], x[:, 1], z[:, 1]], axis=1)


def leg_inverse_kinematics(
    ankle: np.ndarray, pitch: np.ndarray, geometry: WalkerGeometry
) -> np.ndarray:
    """(S, 2) ankle (dx, dz) relative to the hip in world axes -> (S, 3) hip, knee, ankle angles.

    Two-link IK with the knee in front: with D = |ankle|, alpha = atan2(-dx, -dz),
    knee = pi - acos((L1^2 + L2^2 - D^2) / (2 L1 L2)),
    thigh angle phi1 = alpha - acos((L1^2 + D^2 - L2^2) / (2 L1 D)), hip = phi1 - pitch;
    the ankle keeps the foot flat (foot angle 0) within its range.
    """
    l1 = float(np.hypot(*geometry.knee))
    l2 = float(np.hypot(*geometry.ankle))
    dist = np.clip(np.hypot(ankle[:, 0], ankle[:, 1]), abs(l1 - l2) + 1e-6, l1 + l2 - 1e-6)
    alpha = np.arctan2(-ankle[:, 0], -ankle[:, 1])
    knee = np.pi - np.arccos((l1**2 + l2**2 - dist**2) / (2 * l1 * l2))
    thigh = alpha - np.arccos((l1**2 + dist**2 - l2**2) / (2 * l1 * dist))
    hip = thigh - pitch
    foot = -(thigh + knee)
    angles = np.stack([hip, knee, foot], axis=1)
    return np.clip(angles, geometry.joint_low[:3], geometry.joint_high[:3])


# --------------------------------------------------------------------------------------
# Procedural clips
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanarClip:
    """One periodic reference gait, sampled at S frames evenly spread over one cycle."""

    name: str
    period: float
    """Seconds per cycle."""
    joint_angles: np.ndarray
    """(S, 6) hip, knee, ankle of the right then the left leg (rad)."""
    joint_velocities: np.ndarray
    """(S, 6) rad/s."""
    root_height: np.ndarray
    """(S,) hip height above the ground (m)."""
    root_pitch: np.ndarray
    """(S,) torso pitch, positive leaning forward (rad)."""
    root_forward_velocity: np.ndarray
    """(S,) m/s."""
    root_vertical_velocity: np.ndarray
    """(S,) m/s."""
    root_pitch_rate: np.ndarray
    """(S,) rad/s."""
    feet: np.ndarray
    """(S, 4) foot points relative to the root (r_x, r_z, l_x, l_z), world axes (m)."""

    @property
    def num_frames(self) -> int:
        """S."""
        return int(self.root_height.shape[0])

    @property
    def mean_speed(self) -> float:
        """Mean root forward velocity over a cycle (m/s)."""
        return float(self.root_forward_velocity.mean())

    def features(self) -> np.ndarray:
        """(S, F) tracked features in ``planar_rewards.FEATURES`` order."""
        table = np.zeros((self.num_frames, NUM_FEATURES))
        table[:, JOINT_ANGLES] = self.joint_angles
        table[:, JOINT_VELOCITIES] = self.joint_velocities
        table[:, ROOT_HEIGHT] = self.root_height
        table[:, ROOT_PITCH] = self.root_pitch
        table[:, ROOT_FORWARD_VELOCITY] = self.root_forward_velocity
        table[:, FEET] = self.feet
        return table


@dataclass(frozen=True)
class GaitShape:
    """Parameters of a procedural gait (foot paths relative to the hip, hip height, lean)."""

    speed: float
    """Root forward speed (m/s); 0 keeps both feet planted."""
    period: float
    """Seconds per cycle (one step of each leg)."""
    duty: float = 0.6
    """Fraction of the cycle a foot is on the ground (< 0.5 gives a flight phase)."""
    hip_height: float = 0.86
    """Mean hip height (m)."""
    bob: float = 0.0
    """Hip height oscillation at twice the step rate; > 0 peaks at mid-stance (walk),
    < 0 dips at mid-stance (run)."""
    swing_height: float = 0.1
    """Peak ankle lift in swing (m)."""
    foot_offset: float = 0.0
    """Forward offset of the stance path's centre from the hip (m)."""
    pitch: float = 0.0
    """Mean torso lean (rad)."""
    sway: float = 0.0
    """Amplitude of a once-per-cycle sway of hip height (m) and pitch (x 3 rad/m), for Idle."""


def _periodic_derivative(values: np.ndarray, dt: float) -> np.ndarray:
    """Central difference of a periodic (S, ...) signal sampled every dt."""
    return (np.roll(values, -1, axis=0) - np.roll(values, 1, axis=0)) / (2.0 * dt)


def procedural_gait(
    name: str, shape: GaitShape, geometry: WalkerGeometry, num_frames: int
) -> PlanarClip:
    """Build a clip from a gait shape: foot paths -> IK -> angles, velocities, feet."""
    s = np.arange(num_frames) / num_frames
    stride = shape.speed * shape.duty * shape.period  # distance a stance foot travels vs the hip
    height = (
        shape.hip_height
        + shape.bob * np.cos(4 * np.pi * (s - shape.duty / 2))
        + shape.sway * np.sin(2 * np.pi * s)
    )
    pitch = shape.pitch + 3.0 * shape.sway * np.sin(2 * np.pi * s + 1.0)
    angles = np.zeros((num_frames, NUM_JOINTS))
    for leg, offset in zip(LEGS, (0.0, 0.5), strict=True):
        leg_phase = (s + offset) % 1.0
        x, z = _foot_path(leg_phase, shape, stride, geometry.sole_drop)
        ankle = np.stack([x, z - height], axis=1)
        angles[:, list(leg)] = leg_inverse_kinematics(ankle, pitch, geometry)
    dt = shape.period / num_frames
    return PlanarClip(
        name=name,
        period=shape.period,
        joint_angles=angles,
        joint_velocities=_periodic_derivative(angles, dt),
        root_height=height,
        root_pitch=pitch,
        root_forward_velocity=np.full(num_frames, shape.speed),
        root_vertical_velocity=_periodic_derivative(height, dt),
        root_pitch_rate=_periodic_derivative(pitch, dt),
        feet=feet_relative_to_root(pitch, angles, geometry),
    )


def _foot_path(
    phase: np.ndarray, shape: GaitShape, stride: float, sole_drop: float
) -> tuple[np.ndarray, np.ndarray]:
    """Ankle x relative to the hip and ankle height above ground at leg phases in [0, 1).

    Stance (phase < duty): x slides back linearly at -speed, foot flat on the ground.
    Swing: a cubic Hermite from back to front whose end slopes match the stance speed
    (the foot leaves and lands at rest in the world), lifted by swing_height * sin^2(pi u).
    """
    front = shape.foot_offset + stride / 2
    back = shape.foot_offset - stride / 2
    in_stance = phase < shape.duty
    u_stance = phase / shape.duty
    u = np.clip((phase - shape.duty) / (1.0 - shape.duty), 0.0, 1.0)
    slope = -stride * (1.0 - shape.duty) / shape.duty  # dx/du of the stance path, in swing units
    hermite = (
        (2 * u**3 - 3 * u**2 + 1) * back
        + (u**3 - 2 * u**2 + u) * slope
        + (-2 * u**3 + 3 * u**2) * front
        + (u**3 - u**2) * slope
    )
    x = np.where(in_stance, front - u_stance * stride, hermite)
    z = sole_drop + np.where(in_stance, 0.0, shape.swing_height * np.sin(np.pi * u) ** 2)
    return x, z


def time_warped(clip: PlanarClip, name: str, rate: float) -> PlanarClip:
    """The clip played at ``rate`` x its speed; a negative rate plays it backwards in time."""
    if rate == 0:
        raise ValueError("rate must be non-zero")
    order = np.arange(clip.num_frames)
    if rate < 0:
        order = (-order) % clip.num_frames  # frame j of the new clip is old frame -j
    return PlanarClip(
        name=name,
        period=clip.period / abs(rate),
        joint_angles=clip.joint_angles[order],
        joint_velocities=rate * clip.joint_velocities[order],
        root_height=clip.root_height[order],
        root_pitch=clip.root_pitch[order],
        root_forward_velocity=rate * clip.root_forward_velocity[order],
        root_vertical_velocity=rate * clip.root_vertical_velocity[order],
        root_pitch_rate=rate * clip.root_pitch_rate[order],
        feet=clip.feet[order],
    )


IDLE = GaitShape(
    speed=0.0, period=2.5, hip_height=0.93, sway=0.01, swing_height=0.0, foot_offset=0.03
)
WALK = GaitShape(
    speed=1.2, period=1.0, duty=0.62, hip_height=0.88, bob=0.015, swing_height=0.09, pitch=0.05
)
RUN = GaitShape(
    speed=3.0, period=0.72, duty=0.36, hip_height=0.8, bob=-0.025, swing_height=0.22, pitch=0.15
)
BACK_RATE = -2.0 / 3.0
SPRINT_RATE = 1.5


def default_clips(geometry: WalkerGeometry, num_frames: int = 256) -> dict[str, PlanarClip]:
    """The design note's five clips: Idle, Walk, Back (walk reversed), Run, Sprint (run faster)."""
    walk = procedural_gait("Walk", WALK, geometry, num_frames)
    run = procedural_gait("Run", RUN, geometry, num_frames)
    return {
        "Idle": procedural_gait("Idle", IDLE, geometry, num_frames),
        "Walk": walk,
        "Back": time_warped(walk, "Back", BACK_RATE),
        "Run": run,
        "Sprint": time_warped(run, "Sprint", SPRINT_RATE),
    }


def load_walker_model() -> mujoco.MjModel:
    """The single-walker model from ``learner/assets/planar_walker.xml``."""
    return mujoco.MjModel.from_xml_path(str(_asset_path()))


def _asset_path() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / ASSET


def build_batched_model(num_envs: int, physics_dt: float, spacing: float = 2.0) -> mujoco.MjModel:
    """One model with ``num_envs`` walkers side by side in y (they cannot touch each other)."""
    path = str(_asset_path())
    spec = mujoco.MjSpec.from_file(path)
    spec.delete(spec.body("torso"))
    for i in range(num_envs):
        walker = mujoco.MjSpec.from_file(path)
        frame = spec.worldbody.add_frame(pos=[0.0, spacing * i, 0.0])
        frame.attach_body(walker.body("torso"), f"w{i}/", "")
    model = spec.compile()
    model.opt.timestep = physics_dt
    return model


# --------------------------------------------------------------------------------------
# The batched env
# --------------------------------------------------------------------------------------


class PlanarVecEnv:
    """N planar walkers in one MuJoCo model, tracking K procedural clips (VecMultiClipEnv)."""

    term_names = TERM_NAMES

    def __init__(
        self,
        clips: Sequence[str | PlanarClip] | None,
        num_envs: int,
        next_clip: NextClip,
        config: PlanarConfig | None = None,
        seed: int | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        self.config = config or PlanarConfig()
        self.num_envs = num_envs
        self.geometry = WalkerGeometry.from_model(load_walker_model())
        self.clips = self._resolve_clips(clips)
        self.clip_names = [clip.name for clip in self.clips]
        self.action_dim = NUM_JOINTS
        k = len(self.clips)
        self.obs_dim = STATE_DIM + 2 + (k if self.config.skill_one_hot else 0)
        self.obs_dim += 1 if self.config.speed_target else 0
        self.term_weights = np.asarray(self.config.term_weights, dtype=np.float64)
        self._next_clip = next_clip
        self._rng = np.random.default_rng(seed)

        self._frames = self.config.frames_per_cycle
        self._table = np.stack([clip.features() for clip in self.clips])  # (K, S, F)
        self._rsi = np.stack(  # (K, S, 3): root vertical velocity, pitch rate
            [np.stack([c.root_vertical_velocity, c.root_pitch_rate], axis=1) for c in self.clips]
        )
        self._periods = np.array([clip.period for clip in self.clips])
        self._speeds = np.array([clip.mean_speed for clip in self.clips])
        self._scale = scale_matrix(self.config.term_scales)
        self._clip_axis = np.arange(k)[None, :]
        self._rows = np.arange(num_envs)
        self._one_hot = np.eye(k)

        center = np.tile(np.asarray(self.config.action_center), 2)
        scale = np.tile(np.asarray(self.config.action_scale), 2)
        self._action_center, self._action_scale = center, scale

        self.model = build_batched_model(num_envs, self.config.physics_dt)
        self.data = mujoco.MjData(self.model)
        nq = self.model.nq // num_envs
        self._qpos = self.data.qpos.reshape(num_envs, nq)
        self._qvel = self.data.qvel.reshape(num_envs, nq)
        self._warmstart = self.data.qacc_warmstart.reshape(num_envs, nq)
        self._ctrl = self.data.ctrl.reshape(num_envs, NUM_JOINTS)

        self.clip = np.zeros(num_envs, dtype=np.int64)
        self.phase0 = np.zeros(num_envs)
        self._episodes = EpisodeStats(num_envs, len(TERM_NAMES))
        self._instability = [
            self.data.warning[int(w)]
            for w in (
                mujoco.mjtWarning.mjWARN_BADQPOS,
                mujoco.mjtWarning.mjWARN_BADQVEL,
                mujoco.mjtWarning.mjWARN_BADQACC,
            )
        ]

    def _resolve_clips(self, clips: Sequence[str | PlanarClip] | None) -> list[PlanarClip]:
        library = default_clips(self.geometry, self.config.frames_per_cycle)
        resolved: list[PlanarClip] = []
        for clip in clips if clips else DEFAULT_CLIPS:
            if isinstance(clip, PlanarClip):
                if clip.num_frames != self.config.frames_per_cycle:
                    raise ValueError(
                        f"clip {clip.name!r} needs {self.config.frames_per_cycle} frames"
                    )
                resolved.append(clip)
            elif clip in library:
                resolved.append(library[clip])
            else:
                raise ValueError(f"unknown planar clip {clip!r}; built in: {sorted(library)}")
        return resolved

    # --- reference lookup -----------------------------------------------------------

    def clip_phases(self, ahead: int = 0) -> np.ndarray:
        """(N, K) phase fraction of every clip ``ahead`` control steps from now:
        (phase0 + elapsed / period_k) mod 1."""
        elapsed = (self.steps + ahead) * self.config.control_dt
        return (self.phase0[:, None] + elapsed[:, None] / self._periods[None, :]) % 1.0

    def _frame_index(self, phases: np.ndarray) -> np.ndarray:
        """Nearest reference frame of phase fractions."""
        return np.rint(phases * self._frames).astype(np.int64) % self._frames

    def reference(self, ahead: int = 0) -> np.ndarray:
        """(N, K, F) reference features of every clip ``ahead`` control steps from now."""
        return self._table[self._clip_axis, self._frame_index(self.clip_phases(ahead))]

    def current_terms(self, feats: np.ndarray | None = None, ahead: int = 0) -> np.ndarray:
        """(N, K, T) float32 per-term rewards of the current state against every clip at the
        reference ``ahead`` control steps from the slots' step counts."""
        state = self.state_features() if feats is None else feats
        return tracking_terms(state, self.reference(ahead), self._scale).astype(np.float32)

    # --- state and observation ------------------------------------------------------

    def state_features(self) -> np.ndarray:
        """(N, F) tracked features of the walkers, in ``planar_rewards.FEATURES`` order."""
        qpos, qvel = self._qpos, self._qvel
        feats = np.empty((self.num_envs, NUM_FEATURES))
        feats[:, JOINT_ANGLES] = qpos[:, ROOT_DOFS:]
        feats[:, JOINT_VELOCITIES] = qvel[:, ROOT_DOFS:]
        feats[:, ROOT_HEIGHT] = qpos[:, 1] + self.geometry.root_height0
        feats[:, ROOT_PITCH] = qpos[:, 2]
        feats[:, ROOT_FORWARD_VELOCITY] = qvel[:, 0]
        feats[:, FEET] = feet_relative_to_root(qpos[:, 2], qpos[:, ROOT_DOFS:], self.geometry)
        return feats

    def _observe(self, feats: np.ndarray) -> np.ndarray:
        """Heading/position-invariant state, active-clip phase, optional one-hot and speed."""
        obs = np.empty((self.num_envs, self.obs_dim), dtype=np.float32)
        obs[:, :NUM_FEATURES] = feats
        obs[:, NUM_FEATURES : NUM_FEATURES + 2] = self._qvel[:, 1:3]
        elapsed = self.steps * self.config.control_dt
        angle = 2 * np.pi * ((self.phase0 + elapsed / self._periods[self.clip]) % 1.0)
        col = STATE_DIM
        obs[:, col] = np.sin(angle)
        obs[:, col + 1] = np.cos(angle)
        col += 2
        if self.config.skill_one_hot:
            k = len(self.clips)
            obs[:, col : col + k] = self._one_hot[self.clip]
            col += k
        if self.config.speed_target:
            obs[:, col] = self._speeds[self.clip]
        return obs

    # --- reset ----------------------------------------------------------------------

    def _reset_slot(self, i: int) -> None:
        """Reference-state initialisation of slot i at a random frame of the next clip."""
        clip_id = int(self._next_clip())
        if not 0 <= clip_id < len(self.clips):
            raise ValueError(f"next_clip returned {clip_id}, expected 0..{len(self.clips) - 1}")
        frame = int(self._rng.integers(self._frames))
        self.clip[i] = clip_id
        self.phase0[i] = frame / self._frames
        self._episodes.reset_slot(i)
        self._qpos[i, 0] = 0.0
        self._write_reference(i, clip_id, frame)
        self._warmstart[i] = 0.0
        self._ctrl[i] = self._table[clip_id, frame, JOINT_ANGLES]

    def _write_reference(self, i: int, clip_id: int, frame: int) -> None:
        """Set walker i's pose and velocities (not its x) to a frame of a clip."""
        ref = self._table[clip_id, frame]
        self._qpos[i, 1] = ref[ROOT_HEIGHT] - self.geometry.root_height0
        self._qpos[i, 2] = ref[ROOT_PITCH]
        self._qpos[i, ROOT_DOFS:] = ref[JOINT_ANGLES]
        self._qvel[i, 0] = ref[ROOT_FORWARD_VELOCITY]
        self._qvel[i, 1:3] = self._rsi[clip_id, frame]
        self._qvel[i, ROOT_DOFS:] = ref[JOINT_VELOCITIES]

    @property
    def steps(self) -> np.ndarray:
        """(N,) control steps of each slot's current episode."""
        return self._episodes.steps

    def set_reference_state(self, i: int, clip_id: int) -> None:
        """Put walker i exactly on clip ``clip_id``'s reference at that clip's current phase."""
        frame = self._frame_index(self.clip_phases()[i, clip_id])
        self._write_reference(i, clip_id, int(frame))

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every slot (clips from ``next_clip`` in slot order); return (N, obs_dim) obs."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        for i in range(self.num_envs):
            self._reset_slot(i)
        return self._observe(self.state_features())

    def _simulation_was_reset(self) -> bool:
        """True when MuJoCo found NaN/huge values and reset the whole model (counters cleared)."""
        if not any(warning.number for warning in self._instability):
            return False
        for warning in self._instability:
            warning.number = 0
        return True

    # --- step -----------------------------------------------------------------------

    def step(self, actions: np.ndarray) -> VecStep:
        """Apply (N, 6) actions in [-1, 1] as PD targets and advance one control step."""
        a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        targets = self._action_center + self._action_scale * a
        self._ctrl[:] = np.clip(targets, self.geometry.joint_low, self.geometry.joint_high)
        mujoco.mj_step(self.model, self.data, nstep=self.config.substeps)

        feats = self.state_features()
        # the walkers are one control step past the slots' step counts (add() below counts
        # it): compare them with the reference at that time
        clip_terms = self.current_terms(feats, ahead=1)
        active = clip_terms[self._rows, self.clip].astype(np.float64)  # (N, T)
        active_reward = weighted_reward(active, self.term_weights)
        self._episodes.add(active, active_reward)

        height, pitch = feats[:, ROOT_HEIGHT], feats[:, ROOT_PITCH]
        terminated = (
            (height < self.config.fall_height)
            | (np.abs(pitch) > self.config.fall_pitch)
            | ~np.isfinite(feats).all(axis=1)
        )
        if self._simulation_was_reset():  # every walker was put back at qpos0
            logger.warning("MuJoCo reported an unstable simulation; ending every episode")
            terminated[:] = True
        truncated = (self.steps >= self.config.max_episode_steps) & ~terminated
        obs = self._observe(feats)
        final_obs = obs
        clip_ids = self.clip.copy()
        episodes: list[EpisodeEnd] = []
        done = np.flatnonzero(terminated | truncated)
        if done.size:
            final_obs = obs.copy()
            episodes = self._episodes.end(
                done, self.clip, terminated, self.config.success_threshold
            )
            for i in done:
                self._reset_slot(int(i))
            obs = self._observe(self.state_features())
        return VecStep(
            obs=obs,
            clip_terms=clip_terms,
            active_reward=active_reward.astype(np.float32),
            clip_ids=clip_ids,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            episodes=episodes,
        )

    def close(self) -> None:
        """Nothing to release (MuJoCo frees the model and data with the object)."""


# --------------------------------------------------------------------------------------
# Single-env gymnasium wrapper
# --------------------------------------------------------------------------------------


class PlanarGymEnv(SingleClipGymEnv):
    """One planar walker as a ``gymnasium.Env``: a 1-slot ``PlanarVecEnv``."""

    def __init__(
        self, clips: Sequence[str | PlanarClip] | None = None, config: PlanarConfig | None = None
    ) -> None:
        super().__init__(lambda next_clip: PlanarVecEnv(clips, 1, next_clip, config, seed=0))


__all__ = [
    "DEFAULT_CLIPS",
    "GaitShape",
    "PlanarClip",
    "PlanarConfig",
    "PlanarGymEnv",
    "PlanarVecEnv",
    "WalkerGeometry",
    "default_clips",
    "feet_relative_to_root",
    "procedural_gait",
    "time_warped",
]
