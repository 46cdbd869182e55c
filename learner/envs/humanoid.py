"""The MuJoCo humanoid imitation env: N DeepMimic humanoids tracking K motion clips.

Implements ``learner.envs.base.VecMultiClipEnv`` (``HumanoidVecEnv``) and a single-env
``gymnasium.Env`` wrapper (``HumanoidGymEnv``).

- Character: ``learner/assets/humanoid.xml`` (see ``learner.humanoid`` for why ball
  joints with per-axis position servos). The N characters live in one MuJoCo model, each
  in its own lane, touching only the floor, so one ``mj_step(nstep=substeps)`` advances
  them all and every state read is a view of shape (N, ...).
- Control: 30 Hz over a 240 Hz simulation (8 substeps). The action in [-1, 1]^28 is
  a PD target per servo (rotation-vector components for ball joints, angles for hinges):
  ``absolute``, 0 = the rest pose and +-1 = +-max |joint limit|; ``residual`` (default),
  the same offsets around the active clip's pose one step ahead. Targets are clipped to
  ``ctrlrange`` (DeepMimic's joint limits).
- Clips: by default the design note's five (``learner.clips.five_clip_example``: Idle,
  Walk, Back, Run, Sprint) from ``pybullet_data`` when installed, else the built-in
  synthetic gaits; or names of those five, or paths of clip files, or ``MotionClip``s.
  Each clip is tabulated once at ``reference_hz`` (``learner.clips.reference_table``),
  so the reference lookup for every env and every clip is one gather and needs no
  forward kinematics at run time. All clips share the episode's phase fraction:
  phase_k = phase0 + elapsed / duration_k (mod 1 for looping clips, held at 1 otherwise).
- Reset: reference-state initialisation at a random phase of the clip from ``next_clip``.
- Reward: DeepMimic's pose, velocity, end-effector and root terms (``learner.rewards``)
  against every clip, heading-invariant (see ``learner.humanoid.tracked_state``); the
  active clip's weighted sum is the step reward.
- Termination: any body but the feet touching the floor (DeepMimic's fall contact,
  MimicKit's contact termination; clips in ``contact_free_clips`` are exempt), a wrist or
  ankle more than ``pose_termination_distance`` from its reference or the root height more
  than ``root_height_termination`` off (MimicKit's pose termination, tighter), or a
  non-finite state. Truncation at ``max_episode_steps`` and, for clips that do not loop,
  at the clip's last frame.
- Observation: tracked features (51) and tracked quaternions with w >= 0 (36), the active
  clip's phase as (sin, cos), the active clip's reference (the same 87 numbers) at each
  of ``future_frames`` control steps ahead, then optionally the clip one-hot and its mean
  forward speed (design note §5).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

import mujoco
import numpy as np

from learner import clip_library
from learner import humanoid as hm
from learner import quaternions as quat
from learner.clips import (
    MotionClip,
    ReferenceTable,
    reference_table,
)
from learner.envs.base import EpisodeEnd, NextClip, VecStep
from learner.envs.episodes import EpisodeStats
from learner.envs.gym_wrapper import SingleClipGymEnv
from learner.rewards import (
    TERM_NAMES,
    scale_matrix,
    tracking_terms,
    weighted_reward,
)

logger = logging.getLogger(__name__)

STATE_DIM = hm.NUM_TRACKED_FEATURES + 4 * len(hm.TRACKED_QUATS)
"""Character part of the observation: 51 features + 9 quaternions."""


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


ActionMode = Literal["absolute", "residual"]


@dataclass(frozen=True)
class TermScales:
    """The k of each term, r = exp(-k * err), and the weights inside the root error.

    Defaults are those of DeepMimic's released code (``SceneImitate.cpp``), not of the
    paper's printed equations: joint errors are weighted by the character's DiffWeights
    normalised to sum to 1 (``learner.humanoid.JOINT_WEIGHTS``), so the pose error is a
    weighted mean; the end-effector scale is 40 on the mean over 4 end effectors (10 on
    the sum); the root error is 5 (dh^2 + 0.1 tilt^2 + 0.01 |dv|^2 + 0.001 |dw|^2).
    """

    pose: float = 2.0
    """k of the pose term: err = sum_j wbar_j angle_j^2 over ball joints, hinges and the
    root's tilt (rad^2); wbar = the normalised joint weights."""
    velocity: float = 0.1
    """k of the velocity term: err = sum_j wbar_j |w_j - w^_j|^2 over the joints' dofs."""
    end_effector: float = 10.0
    """k of the end-effector term: err = sum over wrists and ankles of |p - p^|^2 (m^2),
    positions relative to the root in the heading frame."""
    root: float = 5.0
    """k of the root term: err = w_h dh^2 + w_t tilt^2 + w_v |dv|^2 + w_w |dw|^2."""
    root_height_weight: float = 1.0
    """w_h: squared root height error (m^2)."""
    root_tilt_weight: float = 0.1
    """w_t: squared angle between the root tilts (heading removed, rad^2)."""
    root_velocity_weight: float = 0.01
    """w_v: squared root linear velocity error in the heading frame ((m/s)^2)."""
    root_angular_velocity_weight: float = 0.001
    """w_w: squared root angular velocity error in the root frame ((rad/s)^2)."""
    joint_weights: bool = True
    """Weight joints by DeepMimic's normalised DiffWeights; False = every joint weight 1
    (the paper's unweighted sums, with the root tilt left out of the pose term)."""

    @classmethod
    def from_sequence(cls, values: Sequence[float]) -> TermScales:
        """The first len(values) fields in declaration order (pose, velocity, end_effector,
        root, root_height_weight, ...); the rest keep their defaults."""
        names = [f.name for f in fields(cls) if f.name != "joint_weights"]
        if len(values) > len(names):
            raise ValueError(f"term scales take at most {len(names)} values: {names}")
        if any(not np.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"term scales must be finite and >= 0, got {list(values)}")
        return cls(**dict(zip(names, (float(v) for v in values), strict=False)))


DEFAULT_CONTACT_FREE_CLIPS: tuple[str, ...] = (
    "getup_faceup",
    "getup_facedown",
    "roll",
    "crawl",
)
"""Clips whose motion puts more than the feet on the floor (pybullet's DeepMimic names):
non-foot contact does not end their episodes; straying from the reference still does."""


@dataclass(frozen=True)
class HumanoidConfig:
    """Settings of the humanoid imitation env."""

    control_hz: float = 30.0
    """Control steps per second."""
    substeps: int = 8
    """MuJoCo steps per control step (physics dt = 1 / (control_hz * substeps))."""
    max_episode_steps: int = 300
    """Control steps before an episode is truncated (300 = 10 s, DeepMimic's and
    MimicKit's episode length)."""
    skill_one_hot: bool = True
    """Append the active clip's one-hot to the observation (design note §5)."""
    speed_target: bool = False
    """Append the active clip's mean forward speed (m/s) to the observation (§5)."""
    success_threshold: float = 0.5
    """An episode succeeds when it ran to its end (time limit or, for a clip that does not
    loop, the clip's end) without a termination and its mean active-clip reward is >= this."""
    term_weights: tuple[float, float, float, float] = (0.5, 0.1, 0.15, 0.25)
    """Weights of the pose, velocity, end_effector and root terms (sum to 1): MimicKit's
    pose 0.5, velocity 0.1, key bodies 0.15, root pose + root velocity 0.25."""
    term_scales: TermScales = field(default_factory=TermScales)
    """The k of each term and the root error's weights."""
    reference_hz: float = 120.0
    """Rate at which each clip is tabulated; the reference is the nearest row."""
    clip_source: str | None = None
    """Where the five-clip example's walk and run come from: None = pybullet_data if
    installed else the built-in synthetic gaits; "builtin"; or a directory of clip files."""
    sprint_rate: float = 1.4
    """Sprint = Run played this many times faster."""
    contact_termination: bool = True
    """End the episode when any body but the feet touches the floor (DeepMimic's fall
    contact bodies, MimicKit's contact termination)."""
    contact_free_clips: tuple[str, ...] = DEFAULT_CONTACT_FREE_CLIPS
    """Clips exempt from the contact termination (getups, rolls, crawls)."""
    pose_termination_distance: float | None = 0.5
    """End the episode when a wrist or ankle is further than this from its reference
    position (relative to the root, heading frame, m); None = off. MimicKit ends at 1 m
    on any body; 0.5 m on the end effectors cuts off hopeless episodes sooner."""
    root_height_termination: float | None = 0.3
    """... or when the root height is further than this from the reference's (m)."""
    end_with_clip: bool = True
    """A clip that does not loop ends its episode at its last frame (as DeepMimic does),
    counted as a time limit, not a fall."""
    action_mode: ActionMode = "residual"
    """absolute: the action is the PD target, 0 = the rest pose (identity rotations, zero
    hinge angles), +-1 = +-max |joint limit| per axis (DeepMimic centres spherical joints
    at 0 too); residual: PD target = the reference pose one step ahead + the same scale *
    action, so 0 plays the clip through the servos and the policy learns corrections."""
    action_scale: float = 1.0
    """Multiplies the half-range of every axis in both action modes."""
    future_frames: tuple[int, ...] = (1, 2, 3)
    """Control steps ahead at which the active clip's reference (tracked features and
    quaternions) is appended to the observation (MimicKit's target poses); () = none."""
    lane_spacing: float = 2.0
    """Distance in y between the characters' start positions (m)."""

    def __post_init__(self) -> None:
        if self.control_hz <= 0 or self.substeps < 1 or self.max_episode_steps < 1:
            raise ValueError("control_hz, substeps and max_episode_steps must be positive")
        if self.reference_hz <= 0 or self.sprint_rate <= 0:
            raise ValueError("reference_hz and sprint_rate must be positive")
        weights = np.asarray(self.term_weights, dtype=np.float64)
        if weights.shape != (len(TERM_NAMES),) or np.any(weights < 0):
            raise ValueError("term_weights needs 4 non-negative values")
        if not np.isclose(weights.sum(), 1.0):
            raise ValueError(f"term_weights must sum to 1, got {weights.sum()}")
        if self.action_mode not in ("absolute", "residual"):
            raise ValueError(f"action_mode must be absolute or residual, got {self.action_mode!r}")
        if not self.action_scale > 0:
            raise ValueError("action_scale must be positive")
        if any(k < 1 for k in self.future_frames):
            raise ValueError("future_frames are control steps ahead, each >= 1")
        for name in ("pose_termination_distance", "root_height_termination"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value}")

    @property
    def control_dt(self) -> float:
        """Seconds per control step."""
        return 1.0 / self.control_hz

    @property
    def physics_dt(self) -> float:
        """MuJoCo time step."""
        return self.control_dt / self.substeps


def reward_scales(scales: TermScales) -> tuple[np.ndarray, np.ndarray]:
    """The (F, T) feature and (Q, T) quaternion coefficients of ``learner.rewards``.

    Pose: k_pose * wbar_j on each hinge angle and ball-joint (and root tilt) angle;
    velocity: k_vel * wbar_j on each of joint j's dofs; with ``joint_weights`` off every
    wbar_j is 1 and the root tilt stays out of the pose term.
    """
    f = hm.TRACKED_FEATURES
    pose, velocity, end_effector, root = range(len(TERM_NAMES))
    if scales.joint_weights:
        hinge_w, dof_w, ball_w, tilt_w = hm.joint_weight_vectors()
    else:
        hinge_w = np.ones(hm.NUM_HINGES)
        dof_w = np.ones(hm.NUM_ACTUATORS)
        ball_w = np.ones(hm.NUM_BALLS)
        tilt_w = 0.0
    feature_scale = scale_matrix(
        hm.NUM_TRACKED_FEATURES,
        len(TERM_NAMES),
        [
            (f["end_effectors"], end_effector, scales.end_effector),
            (f["root_height"], root, scales.root * scales.root_height_weight),
            (f["root_velocity"], root, scales.root * scales.root_velocity_weight),
            (
                f["root_angular_velocity"],
                root,
                scales.root * scales.root_angular_velocity_weight,
            ),
        ],
    )
    feature_scale[f["hinge_angles"], pose] += scales.pose * hinge_w
    feature_scale[f["joint_velocities"], velocity] += scales.velocity * dof_w
    quat_scale = np.zeros((len(hm.TRACKED_QUATS), len(TERM_NAMES)))
    quat_scale[: hm.NUM_BALLS, pose] = scales.pose * ball_w
    quat_scale[hm.NUM_BALLS, pose] = scales.pose * tilt_w
    quat_scale[hm.NUM_BALLS, root] = scales.root * scales.root_tilt_weight
    return feature_scale, quat_scale


def resolve_clips(
    clips: Sequence[str | MotionClip] | None, config: HumanoidConfig
) -> list[MotionClip]:
    """Clips from file paths, clip names or ``MotionClip``s (``learner.clip_library``)."""
    return clip_library.resolve_clips(clips, config.clip_source, config.sprint_rate)


# --------------------------------------------------------------------------------------
# The batched env
# --------------------------------------------------------------------------------------


class HumanoidVecEnv:
    """N MuJoCo humanoids tracking K motion clips (``VecMultiClipEnv``)."""

    term_names: tuple[str, ...] = TERM_NAMES

    def __init__(
        self,
        clips: Sequence[str | MotionClip] | None,
        num_envs: int,
        next_clip: NextClip,
        config: HumanoidConfig | None = None,
        seed: int | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        self.config = config or HumanoidConfig()
        self.num_envs = num_envs
        self.clips = resolve_clips(clips, self.config)
        self.clip_names = [clip.name for clip in self.clips]
        k = len(self.clips)
        self.action_dim = hm.NUM_ACTUATORS
        self.obs_dim = STATE_DIM * (1 + len(self.config.future_frames)) + 2
        self.obs_dim += k if self.config.skill_one_hot else 0
        self.obs_dim += 1 if self.config.speed_target else 0
        self.term_weights = np.asarray(self.config.term_weights, dtype=np.float64)
        self._next_clip = next_clip
        self._rng = np.random.default_rng(seed)

        # Reference tables of all clips, stacked: row r of clip k is offsets[k] + r.
        kinematics = hm.Kinematics()
        self.tables: list[ReferenceTable] = [
            reference_table(clip, kinematics, self.config.reference_hz) for clip in self.clips
        ]
        rows = np.array([t.num_rows for t in self.tables])
        self._offsets = np.concatenate([[0], np.cumsum(rows)[:-1]])
        self._rows = rows
        loop = np.array([t.loop for t in self.tables])
        self._loop = loop
        self._row_scale = np.where(loop, rows, rows - 1).astype(np.float64)
        self._durations = np.array([t.duration for t in self.tables])
        self._ref_features = np.concatenate([t.features for t in self.tables])
        self._ref_quats = np.concatenate([t.quats for t in self.tables])
        self._ref_qpos = np.concatenate([t.qpos for t in self.tables])
        self._ref_qvel = np.concatenate([t.qvel for t in self.tables])
        self._ref_targets = hm.pd_targets(self._ref_qpos)
        self._ref_quats_canonical = quat.canonical(self._ref_quats).reshape(
            len(self._ref_quats), -1
        )
        self._speeds = np.array([t.mean_forward_speed for t in self.tables])
        self._feature_scale, self._quat_scale = reward_scales(self.config.term_scales)
        self._env_rows = np.arange(num_envs)
        self._one_hot = np.eye(k, dtype=np.float32)

        # One model with N characters; views of its state per character.
        self.model = hm.build_batched_model(
            num_envs, self.config.physics_dt, self.config.lane_spacing
        )
        self.data = mujoco.MjData(self.model)
        self._qpos = self.data.qpos.reshape(num_envs, hm.NQ)
        self._qvel = self.data.qvel.reshape(num_envs, hm.NV)
        self._ctrl = self.data.ctrl.reshape(num_envs, hm.NUM_ACTUATORS)
        self._warmstart = self.data.qacc_warmstart.reshape(num_envs, hm.NV)
        self._sites = np.array(
            [[self.model.site(f"h{i}/{s}").id for s in hm.END_EFFECTORS] for i in range(num_envs)]
        )
        # geom id -> the character it belongs to (-1: the floor) and whether it is a foot
        self._geom_env = np.full(self.model.ngeom, -1, dtype=np.int64)
        self._geom_is_foot = np.zeros(self.model.ngeom, dtype=bool)
        for g in range(self.model.ngeom):
            name = self.model.geom(g).name
            if name.startswith("h") and "/" in name:
                lane, part = name.split("/", 1)
                self._geom_env[g] = int(lane[1:])
                self._geom_is_foot[g] = part in hm.FEET
        self._contact_free = np.array(
            [clip.name in self.config.contact_free_clips for clip in self.clips]
        )
        low, high = self.model.actuator_ctrlrange[: hm.NUM_ACTUATORS].T
        self._ctrl_low, self._ctrl_high = low, high
        # absolute: target = half * a around the rest pose (0), half = max |limit| per axis
        self._action_half = self.config.action_scale * np.maximum(np.abs(low), np.abs(high))
        ee = hm.TRACKED_FEATURES["end_effectors"]
        self._ee_columns = np.arange(ee.start, ee.stop).reshape(len(hm.END_EFFECTORS), 3)
        self._root_height_column = hm.TRACKED_FEATURES["root_height"].start
        self.termination_counts: dict[str, int] = {"contact": 0, "pose": 0, "unstable": 0}
        """Episodes ended by each termination rule since the env was built."""
        self._lanes = np.stack(
            [np.zeros(num_envs), self.config.lane_spacing * np.arange(num_envs)], axis=1
        )
        self._instability = [
            self.data.warning[int(w)]
            for w in (
                mujoco.mjtWarning.mjWARN_BADQPOS,
                mujoco.mjtWarning.mjWARN_BADQVEL,
                mujoco.mjtWarning.mjWARN_BADQACC,
            )
        ]

        self.clip = np.zeros(num_envs, dtype=np.int64)
        self.phase0 = np.zeros(num_envs)
        self._episodes = EpisodeStats(num_envs, len(TERM_NAMES))

    # --- reference lookup -----------------------------------------------------------

    def clip_phases(self, ahead: int = 0) -> np.ndarray:
        """(N, K) phase fraction of every clip ``ahead`` control steps from now:
        phase0 + elapsed / duration_k, wrapped (looping clips) or held at 1."""
        elapsed = (self.steps + ahead) * self.config.control_dt
        raw = self.phase0[:, None] + elapsed[:, None] / self._durations[None, :]
        return np.where(self._loop[None, :], raw % 1.0, np.minimum(raw, 1.0))

    def active_rows(self, ahead: int = 0) -> np.ndarray:
        """(N,) table rows of each env's active clip ``ahead`` control steps from now."""
        elapsed = (self.steps + ahead) * self.config.control_dt
        raw = self.phase0 + elapsed / self._durations[self.clip]
        phase = np.where(self._loop[self.clip], raw % 1.0, np.minimum(raw, 1.0))
        return self._table_rows(phase, self.clip)

    def clip_ended(self) -> np.ndarray:
        """(N,) True where the active clip does not loop and its last frame has passed."""
        elapsed = self.steps * self.config.control_dt
        raw = self.phase0 + elapsed / self._durations[self.clip]
        return ~self._loop[self.clip] & (raw >= 1.0)

    def _table_rows(self, phases: np.ndarray, clip_ids: np.ndarray | slice) -> np.ndarray:
        """Global table rows of the nearest reference frame at the given phases."""
        local = np.rint(phases * self._row_scale[clip_ids]).astype(np.int64)
        return self._offsets[clip_ids] + local % self._rows[clip_ids]

    def reference_rows(self) -> np.ndarray:
        """(N, K) table rows of every clip at the current phases."""
        return self._table_rows(self.clip_phases(), slice(None))

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Tracked features (N, 51) and quaternions (N, 9, 4) of the characters."""
        return hm.tracked_state(self._qpos, self._qvel, self.data.site_xpos[self._sites])

    def current_terms(
        self,
        state: tuple[np.ndarray, np.ndarray] | None = None,
        phases: np.ndarray | None = None,
    ) -> np.ndarray:
        """(N, K, T) float32 per-term rewards of the current state against every clip."""
        feats, quats = self.state() if state is None else state
        rows = self._table_rows(self.clip_phases() if phases is None else phases, slice(None))
        return tracking_terms(
            feats,
            self._ref_features[rows],
            self._feature_scale,
            quats,
            self._ref_quats[rows],
            self._quat_scale,
        ).astype(np.float32)

    def _action_center(self) -> np.ndarray:
        """(N, 28) PD targets at action 0: the rest pose, or the reference one step ahead."""
        if self.config.action_mode == "residual":
            return self._ref_targets[self.active_rows(1)]
        return np.zeros((self.num_envs, hm.NUM_ACTUATORS))

    def pd_targets(self, actions: np.ndarray) -> np.ndarray:
        """(N, 28) servo targets of (N, 28) actions: clip(center + half * a, ctrlrange)."""
        a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        targets = self._action_center() + self._action_half * a
        return np.clip(targets, self._ctrl_low, self._ctrl_high)

    def reference_actions(self) -> np.ndarray:
        """(N, 28) actions whose PD targets are the active clips' poses one step ahead
        (all zeros in residual mode)."""
        targets = self._ref_targets[self.active_rows(1)]
        center = self._action_center()
        return np.clip((targets - center) / self._action_half, -1.0, 1.0)

    # --- observation ----------------------------------------------------------------

    def _observe(
        self, feats: np.ndarray, quats: np.ndarray, phases: np.ndarray | None = None
    ) -> np.ndarray:
        """Character state, active-clip phase, optional one-hot and speed target."""
        n = self.num_envs
        obs = np.empty((n, self.obs_dim), dtype=np.float32)
        obs[:, : hm.NUM_TRACKED_FEATURES] = feats
        obs[:, hm.NUM_TRACKED_FEATURES : STATE_DIM] = quat.canonical(quats).reshape(n, -1)
        phases = self.clip_phases() if phases is None else phases
        phase = phases[self._env_rows, self.clip]
        obs[:, STATE_DIM] = np.sin(2 * np.pi * phase)
        obs[:, STATE_DIM + 1] = np.cos(2 * np.pi * phase)
        col = STATE_DIM + 2
        for ahead in self.config.future_frames:
            rows = self.active_rows(ahead)
            obs[:, col : col + hm.NUM_TRACKED_FEATURES] = self._ref_features[rows]
            col += hm.NUM_TRACKED_FEATURES
            quat_dim = STATE_DIM - hm.NUM_TRACKED_FEATURES
            obs[:, col : col + quat_dim] = self._ref_quats_canonical[rows]
            col += quat_dim
        if self.config.skill_one_hot:
            k = len(self.clips)
            obs[:, col : col + k] = self._one_hot[self.clip]
            col += k
        if self.config.speed_target:
            obs[:, col] = self._speeds[self.clip]
        return obs

    # --- reset ----------------------------------------------------------------------

    def _reset_slot(self, i: int) -> None:
        """Reference-state initialisation of slot i at a random phase of the next clip."""
        clip_id = int(self._next_clip())
        if not 0 <= clip_id < len(self.clips):
            raise ValueError(f"next_clip returned {clip_id}, expected 0..{len(self.clips) - 1}")
        self.clip[i] = clip_id
        self.phase0[i] = self._rng.random()
        self._episodes.reset_slot(i)
        row = int(self._table_rows(self.phase0[i : i + 1], np.array([clip_id]))[0])
        self._write_row(i, row)
        self._warmstart[i] = 0.0

    def _write_row(self, i: int, row: int) -> None:
        """Put character i in the pose and velocity of a table row, in its own lane."""
        self._qpos[i] = self._ref_qpos[row]
        self._qpos[i, :2] = self._lanes[i]
        self._qvel[i] = self._ref_qvel[row]

    @property
    def steps(self) -> np.ndarray:
        """(N,) control steps of each slot's current episode."""
        return self._episodes.steps

    def set_reference_state(self, i: int, clip_id: int) -> None:
        """Put character i exactly on a clip's reference at that clip's current phase."""
        row = int(self.reference_rows()[i, clip_id])
        self._write_row(i, row)
        mujoco.mj_kinematics(self.model, self.data)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every slot (clips from ``next_clip`` in slot order); return (N, obs_dim) obs."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        for i in range(self.num_envs):
            self._reset_slot(i)
        mujoco.mj_kinematics(self.model, self.data)
        return self._observe(*self.state())

    def _simulation_was_reset(self) -> bool:
        """True when MuJoCo found NaN/huge values and reset the whole model (counters cleared)."""
        if not any(warning.number for warning in self._instability):
            return False
        for warning in self._instability:
            warning.number = 0
        return True

    # --- step -----------------------------------------------------------------------

    def step(self, actions: np.ndarray) -> VecStep:
        """Apply (N, 28) actions in [-1, 1] as PD targets and advance one control step."""
        self._ctrl[:] = self.pd_targets(actions)
        mujoco.mj_step(self.model, self.data, nstep=self.config.substeps)
        mujoco.mj_kinematics(self.model, self.data)

        feats, quats = self.state()
        # the characters are one control step past the slots' step counts (add() below
        # counts it): compare them with the reference at that time
        phases = self.clip_phases(ahead=1)
        clip_terms = self.current_terms((feats, quats), phases)
        active = clip_terms[self._env_rows, self.clip].astype(np.float64)  # (N, T)
        active_reward = weighted_reward(active, self.term_weights)
        self._episodes.add(active, active_reward)

        terminated = self._terminations(feats, phases)
        if self._simulation_was_reset():  # every character was put back at qpos0
            logger.warning("MuJoCo reported an unstable simulation; ending every episode")
            terminated[:] = True
        time_up = self.steps >= self.config.max_episode_steps
        if self.config.end_with_clip:
            time_up |= self.clip_ended()
        truncated = time_up & ~terminated
        obs = self._observe(feats, quats, phases)
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
            mujoco.mj_kinematics(self.model, self.data)
            obs = self._observe(*self.state())
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

    def non_foot_contacts(self) -> np.ndarray:
        """(N,) True where a geom of the character other than its feet touches the floor."""
        touching = np.zeros(self.num_envs, dtype=bool)
        ncon = self.data.ncon
        if ncon:
            pairs = self.data.contact.geom[:ncon].reshape(-1)  # (2 * ncon,)
            env = self._geom_env[pairs]
            hit = (env >= 0) & ~self._geom_is_foot[pairs]
            touching[env[hit]] = True
        return touching

    def _terminations(self, feats: np.ndarray, phases: np.ndarray) -> np.ndarray:
        """(N,) episodes that end now: non-foot contact (clips not exempt), an end effector
        or the root height too far from the reference, or a non-finite state."""
        c = self.config
        contact = np.zeros(self.num_envs, dtype=bool)
        if c.contact_termination:
            contact = self.non_foot_contacts() & ~self._contact_free[self.clip]
        pose = np.zeros(self.num_envs, dtype=bool)
        if c.pose_termination_distance is not None or c.root_height_termination is not None:
            rows = self._table_rows(phases[self._env_rows, self.clip], self.clip)
            ref = self._ref_features[rows]
            if c.pose_termination_distance is not None:
                diff = feats[:, self._ee_columns] - ref[:, self._ee_columns]
                distance = np.sqrt((diff * diff).sum(axis=-1)).max(axis=1)
                pose |= distance > c.pose_termination_distance
            if c.root_height_termination is not None:
                column = self._root_height_column
                pose |= np.abs(feats[:, column] - ref[:, column]) > c.root_height_termination
        unstable = ~np.isfinite(feats).all(axis=1)
        self.termination_counts["contact"] += int(contact.sum())
        self.termination_counts["pose"] += int((pose & ~contact).sum())
        self.termination_counts["unstable"] += int(unstable.sum())
        return contact | pose | unstable

    def close(self) -> None:
        """Nothing to release (MuJoCo frees the model and data with the object)."""


# --------------------------------------------------------------------------------------
# Single-env gymnasium wrapper
# --------------------------------------------------------------------------------------


class HumanoidGymEnv(SingleClipGymEnv):
    """One humanoid as a ``gymnasium.Env``: a 1-slot ``HumanoidVecEnv``."""

    def __init__(
        self,
        clips: Sequence[str | MotionClip] | None = None,
        config: HumanoidConfig | None = None,
    ) -> None:
        super().__init__(lambda next_clip: HumanoidVecEnv(clips, 1, next_clip, config, seed=0))


__all__ = [
    "STATE_DIM",
    "HumanoidConfig",
    "HumanoidGymEnv",
    "HumanoidVecEnv",
    "TermScales",
    "resolve_clips",
    "reward_scales",
]
