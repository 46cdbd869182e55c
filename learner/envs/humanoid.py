"""The MuJoCo humanoid imitation env: N DeepMimic humanoids tracking K motion clips.

Implements ``learner.envs.base.VecMultiClipEnv`` (``HumanoidVecEnv``) and a single-env
``gymnasium.Env`` wrapper (``HumanoidGymEnv``).

- Character: ``learner/assets/humanoid.xml`` (see ``learner.humanoid`` for why ball
  joints with per-axis position servos). The N characters live in one MuJoCo model, each
  in its own lane, touching only the floor, so one ``mj_step(nstep=substeps)`` advances
  them all and every state read is a view of shape (N, ...).
- Control: 30 Hz over a 240 Hz simulation (8 substeps). The action in [-1, 1]^28 maps
  linearly onto each servo's PD-target range (``ctrlrange``: DeepMimic's joint limits;
  rotation-vector components for ball joints, angles for hinges).
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
- Termination: a fall, when the root, chest or head sphere touches the ground (DeepMimic's
  fall-contact bodies), or a non-finite state; truncation at ``max_episode_steps``.
- Observation: tracked features (51) and tracked quaternions with w >= 0 (36), the active
  clip's phase as (sin, cos), then optionally the clip one-hot and its mean forward speed
  (design note §5).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np

from learner import humanoid as hm
from learner import quaternions as quat
from learner.clips import (
    FIVE_CLIPS,
    MotionClip,
    ReferenceTable,
    five_clip_example,
    load_clip,
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


@dataclass(frozen=True)
class TermScales:
    """The k of each term, r = exp(-k * err), and the weights inside the root error."""

    pose: float = 2.0
    """k of the pose term: err = sum over ball joints and hinges of angle error^2 (rad^2)."""
    velocity: float = 0.1
    """k of the velocity term: err = sum over the 28 joint dofs of (w - w^)^2 ((rad/s)^2)."""
    end_effector: float = 40.0
    """k of the end-effector term: err = sum over wrists and ankles of |p - p^|^2 (m^2),
    positions relative to the root in the heading frame."""
    root: float = 1.0
    """k of the root term: err = w_h dh^2 + w_t tilt^2 + w_v |dv|^2 + w_w |dw|^2."""
    root_height_weight: float = 20.0
    """w_h: squared root height error (m^2)."""
    root_tilt_weight: float = 2.0
    """w_t: squared angle between the root tilts (heading removed, rad^2)."""
    root_velocity_weight: float = 2.0
    """w_v: squared root linear velocity error in the heading frame ((m/s)^2)."""
    root_angular_velocity_weight: float = 0.1
    """w_w: squared root angular velocity error in the root frame ((rad/s)^2)."""


@dataclass(frozen=True)
class HumanoidConfig:
    """Settings of the humanoid imitation env."""

    control_hz: float = 30.0
    """Control steps per second."""
    substeps: int = 8
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
    """The k of each term and the root error's weights."""
    reference_hz: float = 120.0
    """Rate at which each clip is tabulated; the reference is the nearest row."""
    clip_source: str | None = None
    """Where the five-clip example's walk and run come from: None = pybullet_data if
    installed else the built-in synthetic gaits; "builtin"; or a directory of clip files."""
    sprint_rate: float = 1.4
    """Sprint = Run played this many times faster."""
    fall_margin: float = 0.005
    """A fall-contact sphere closer than this to the ground ends the episode (m)."""
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

    @property
    def control_dt(self) -> float:
        """Seconds per control step."""
        return 1.0 / self.control_hz

    @property
    def physics_dt(self) -> float:
        """MuJoCo time step."""
        return self.control_dt / self.substeps


def reward_scales(scales: TermScales) -> tuple[np.ndarray, np.ndarray]:
    """The (F, T) feature and (Q, T) quaternion coefficients of ``learner.rewards``."""
    f = hm.TRACKED_FEATURES
    pose, velocity, end_effector, root = range(len(TERM_NAMES))
    feature_scale = scale_matrix(
        hm.NUM_TRACKED_FEATURES,
        len(TERM_NAMES),
        [
            (f["hinge_angles"], pose, scales.pose),
            (f["joint_velocities"], velocity, scales.velocity),
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
    balls = slice(0, hm.NUM_BALLS)
    quat_scale = scale_matrix(
        len(hm.TRACKED_QUATS),
        len(TERM_NAMES),
        [
            (balls, pose, scales.pose),
            (hm.NUM_BALLS, root, scales.root * scales.root_tilt_weight),
        ],
    )
    return feature_scale, quat_scale


def resolve_clips(
    clips: Sequence[str | MotionClip] | None, config: HumanoidConfig
) -> list[MotionClip]:
    """Clips from names of the five-clip example, clip file paths, or ``MotionClip``s."""
    wanted = list(clips) if clips else list(FIVE_CLIPS)
    library: dict[str, MotionClip] = {}
    resolved: list[MotionClip] = []
    for clip in wanted:
        if isinstance(clip, MotionClip):
            resolved.append(clip)
        elif clip in FIVE_CLIPS:
            if not library:
                example = five_clip_example(config.clip_source, config.sprint_rate)
                library = {c.name: c for c in example}
            resolved.append(library[clip])
        elif Path(clip).is_file():
            resolved.append(load_clip(clip))
        else:
            raise ValueError(f"unknown clip {clip!r}: expected one of {FIVE_CLIPS} or a clip file")
    names = [c.name for c in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"clip names must be unique, got {names}")
    return resolved


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
        self.obs_dim = STATE_DIM + 2 + (k if self.config.skill_one_hot else 0)
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
        self._fall_geoms = np.array(
            [[self.model.geom(f"h{i}/{g}").id for g in hm.FALL_GEOMS] for i in range(num_envs)]
        )
        self._fall_radius = self.model.geom_size[self._fall_geoms[0], 0]
        low, high = self.model.actuator_ctrlrange[: hm.NUM_ACTUATORS].T
        self._action_center = 0.5 * (low + high)
        self._action_half = 0.5 * (high - low)
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

    def clip_phases(self) -> np.ndarray:
        """(N, K) phase fraction of every clip: phase0 + elapsed / duration_k, wrapped or held."""
        elapsed = self.steps * self.config.control_dt
        raw = self.phase0[:, None] + elapsed[:, None] / self._durations[None, :]
        return np.where(self._loop[None, :], raw % 1.0, np.minimum(raw, 1.0))

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

    def reference_actions(self) -> np.ndarray:
        """(N, 28) actions whose PD targets are the active clips' poses one step ahead."""
        elapsed = (self.steps + 1) * self.config.control_dt
        raw = self.phase0 + elapsed / self._durations[self.clip]
        phase = np.where(self._loop[self.clip], raw % 1.0, np.minimum(raw, 1.0))
        rows = self._table_rows(phase, self.clip)
        targets = hm.pd_targets(self._ref_qpos[rows])
        return np.clip((targets - self._action_center) / self._action_half, -1.0, 1.0)

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
        a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        self._ctrl[:] = self._action_center + self._action_half * a
        mujoco.mj_step(self.model, self.data, nstep=self.config.substeps)
        mujoco.mj_kinematics(self.model, self.data)

        feats, quats = self.state()
        phases = self.clip_phases()
        clip_terms = self.current_terms((feats, quats), phases)
        active = clip_terms[self._env_rows, self.clip].astype(np.float64)  # (N, T)
        active_reward = weighted_reward(active, self.term_weights)
        self._episodes.add(active, active_reward)

        heights = self.data.geom_xpos[self._fall_geoms, 2] - self._fall_radius
        terminated = (heights < self.config.fall_margin).any(axis=1) | ~np.isfinite(feats).all(
            axis=1
        )
        if self._simulation_was_reset():  # every character was put back at qpos0
            logger.warning("MuJoCo reported an unstable simulation; ending every episode")
            terminated[:] = True
        truncated = (self.steps >= self.config.max_episode_steps) & ~terminated
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
