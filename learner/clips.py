"""Reference motion clips of the DeepMimic humanoid: loading, sampling, deriving, tabulating.

A ``MotionClip`` is a sequence of poses at a fixed frame rate, stored as MuJoCo qpos of
``learner/assets/humanoid.xml`` (z-up; layout in ``learner.humanoid``). Poses between
frames are interpolated (lerp for positions and hinges, slerp for quaternions); a looping
clip repeats with its root shifted by the per-cycle horizontal displacement (DeepMimic's
``wrap``). Velocities are central differences of the interpolated poses.

Where clips come from:

- DeepMimic ``.txt`` files (JSON ``Loop`` + ``Frames``; each frame is a duration and a y-up
  pose, see ``learner.humanoid.deepmimic_pose_to_qpos``). Three of them (walk, jog, run;
  MIT, from xbpeng/DeepMimic ``data/motions/``) ship with this package in
  ``learner/data/motions/`` (``shipped_motion_names``, ``load_shipped``). The PyPI package
  ``pybullet`` (optional extra ``clips``) ships 15 in ``pybullet_data/data/motions/``,
  the same three among them; ``find_motion_files`` finds them.
- The native ``.npz`` format: ``fps`` (scalar), ``qpos`` (frames, 43) in our layout,
  ``joint_names`` (the model's joint order, checked on load), optional ``loop`` (bool)
  and ``name``.
- ``builtin_clips``: *synthetic* walk and run cycles from a parametric gait generator
  (sinusoidal hip/knee/ankle/shoulder/elbow profiles, the root height set by forward
  kinematics so the lower foot touches the ground, the root speed matched to the stance
  foot). They are not motion capture; ``five_clip_example("builtin")`` still uses them
  (fast to build, no files).

``five_clip_example`` builds the design note's example set from a walk and a run:
Idle (a held standing pose with a small upper-body sway, derived from a walk frame),
Walk, Back (walk reversed in time), Run, Sprint (run played faster).
``reference_table`` precomputes, per clip, everything the env's reward needs at a fixed
rate (poses, velocities, end effectors by MuJoCo forward kinematics, tracked features),
so stepping needs no extra kinematics.
"""

from __future__ import annotations

import importlib
import importlib.resources
import json
import logging
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np

from learner import humanoid as hm
from learner import quaternions as quat
from learner.config import FIVE_CLIPS

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# The clip
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MotionClip:
    """Poses of the humanoid at a fixed frame rate (qpos of ``learner/assets/humanoid.xml``)."""

    name: str
    fps: float
    """Frames per second; frame i is at time i / fps."""
    qpos: np.ndarray
    """(F, 43) poses, F >= 2."""
    loop: bool = True
    """Repeat after the last frame (which coincides with the next cycle's first)."""
    source: str = ""
    """Where the clip came from (a path, ``builtin``, or how it was derived)."""

    def __post_init__(self) -> None:
        qpos = np.asarray(self.qpos, dtype=np.float64)
        if qpos.ndim != 2 or qpos.shape[1] != hm.NQ or qpos.shape[0] < 2:
            raise ValueError(f"clip {self.name!r}: qpos must be (frames >= 2, {hm.NQ})")
        if not self.fps > 0:
            raise ValueError(f"clip {self.name!r}: fps must be positive")
        if not np.all(np.isfinite(qpos)):
            raise ValueError(f"clip {self.name!r}: qpos has non-finite values")
        qpos = qpos.copy()
        qpos[:, hm.ROOT_QUAT] = quat.normalize(qpos[:, hm.ROOT_QUAT])
        qpos[:, hm.MODEL_INDEX.ball_qpos] = quat.normalize(qpos[:, hm.MODEL_INDEX.ball_qpos])
        qpos.setflags(write=False)
        object.__setattr__(self, "qpos", qpos)

    @property
    def num_frames(self) -> int:
        """F."""
        return int(self.qpos.shape[0])

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame (one cycle when looping)."""
        return (self.num_frames - 1) / self.fps

    @property
    def cycle_offset(self) -> np.ndarray:
        """(3,) horizontal root displacement per cycle (zero unless looping)."""
        offset = np.zeros(3)
        if self.loop:
            offset[:2] = self.qpos[-1, :2] - self.qpos[0, :2]
        return offset

    def sample(self, times: np.ndarray | float) -> np.ndarray:
        """(T, 43) poses at the given times (s), interpolated; loops wrap, others clamp."""
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        if self.loop:
            cycles = np.floor(t / self.duration)
            tau = t - cycles * self.duration
        else:
            cycles = np.zeros_like(t)
            tau = np.clip(t, 0.0, self.duration)
        x = tau * self.fps
        i = np.clip(np.floor(x).astype(np.int64), 0, self.num_frames - 2)
        alpha = np.clip(x - i, 0.0, 1.0)
        qpos = hm.interpolate_qpos(self.qpos[i], self.qpos[i + 1], alpha)
        qpos[:, :3] += cycles[:, None] * self.cycle_offset
        return qpos

    def velocities(self, times: np.ndarray | float) -> np.ndarray:
        """(T, 34) qvel at the given times: central differences over half a frame each way,
        one-sided at a clip's ends.

        A looping clip's differences stay inside the cycle, as DeepMimic's and MimicKit's
        frame differences do: mocap loops rarely close exactly (the last frame of the
        DeepMimic walk differs from its first by 0.5 rad at one joint and 0.12 rad of
        heading), and a difference across the seam turned that jump into a velocity
        spike (joints at 14 rad/s) that made a reference-state start at phase 0 fall.
        """
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        h = 0.5 / self.fps
        start = np.zeros_like(t)
        end = np.full_like(t, self.duration)
        if self.loop:  # the time's own cycle, just short of the next one's first frame
            start = np.floor(t / self.duration) * self.duration
            end = start + self.duration * (1.0 - 1e-9)
        before = np.clip(t - h, start, end)
        after = np.clip(t + h, start, end)
        dt = (after - before)[:, None]
        # qpos_velocity divides by a scalar; rescale by the per-sample span instead
        return hm.qpos_velocity(self.sample(before), self.sample(after), 1.0) / dt

    def reversed(self, name: str | None = None) -> MotionClip:
        """The clip played backwards in time (a walk becomes walking backwards)."""
        return replace(
            self,
            name=name or f"{self.name}_reversed",
            qpos=self.qpos[::-1],
            source=f"reversed({self.name})",
        )

    def time_scaled(self, rate: float, name: str | None = None) -> MotionClip:
        """The clip played ``rate`` times faster (same frames, fps * rate)."""
        if not rate > 0:
            raise ValueError("rate must be positive (use reversed() to play backwards)")
        return replace(
            self,
            name=name or f"{self.name}_x{rate:g}",
            fps=self.fps * rate,
            source=f"time_scaled({self.name}, {rate:g})",
        )

    def renamed(self, name: str) -> MotionClip:
        """The same clip under another name."""
        return replace(self, name=name)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------

DEEPMIMIC_PREFIX = "humanoid3d_"


def clip_name_of(path: Path) -> str:
    """``humanoid3d_walk.txt`` -> ``walk``."""
    stem = path.stem
    return stem[len(DEEPMIMIC_PREFIX) :] if stem.startswith(DEEPMIMIC_PREFIX) else stem


def load_deepmimic(path: str | Path, name: str | None = None) -> MotionClip:
    """Load a DeepMimic humanoid3d motion file (JSON ``Loop`` and ``Frames``).

    A file that is not one raises a one-line ``ValueError`` naming the file and the fault.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a DeepMimic motion file (not text: {exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not a DeepMimic motion file (invalid JSON at line {exc.lineno} "
            f"column {exc.colno}: {exc.msg})"
        ) from exc
    if not isinstance(data, dict) or "Frames" not in data:
        raise ValueError(f'{path}: not a DeepMimic motion file (no "Frames" list)')
    try:
        frames = np.asarray(data["Frames"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{path}: "Frames" must be a list of equal-length number lists') from exc
    if frames.ndim != 2 or frames.shape[1] != hm.NQ + 1 or frames.shape[0] < 2:
        raise ValueError(
            f"{path}: expected >= 2 frames of {hm.NQ + 1} numbers, got shape {frames.shape}"
        )
    if not np.all(np.isfinite(frames)):
        raise ValueError(f"{path}: frames hold non-finite numbers")
    qpos = hm.deepmimic_pose_to_qpos(frames[:, 1:])
    durations = frames[:-1, 0]
    if np.any(durations <= 0):
        raise ValueError(f"{path}: frame durations must be positive")
    dt = float(durations.mean())
    if not np.allclose(durations, dt, rtol=1e-3):
        qpos = _resample(qpos, np.concatenate([[0.0], np.cumsum(durations)]), dt)
    return MotionClip(
        name=name or clip_name_of(path),
        fps=1.0 / dt,
        qpos=qpos,
        loop=data.get("Loop", "wrap") == "wrap",
        source=str(path),
    )


def _resample(qpos: np.ndarray, times: np.ndarray, dt: float) -> np.ndarray:
    """Poses at non-uniform ``times`` -> poses every ``dt`` over the same span."""
    new_times = np.arange(0.0, times[-1] + 0.5 * dt, dt)
    i = np.clip(np.searchsorted(times, new_times, side="right") - 1, 0, len(times) - 2)
    alpha = np.clip((new_times - times[i]) / (times[i + 1] - times[i]), 0.0, 1.0)
    return hm.interpolate_qpos(qpos[i], qpos[i + 1], alpha)


def load_npz(path: str | Path, name: str | None = None) -> MotionClip:
    """Load a native clip (``fps``, ``qpos``, ``joint_names``; optional ``loop``, ``name``)."""
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a native .npz clip file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("fps", "qpos", "joint_names") if key not in data]
            if missing:
                raise ValueError(f"{path}: native clip file lacks {', '.join(missing)}")
            names = tuple(str(n) for n in data["joint_names"])
            if names != hm.JOINT_NAMES:
                raise ValueError(f"{path}: joint_names differ from the model's {hm.JOINT_NAMES}")
            loop = bool(data["loop"]) if "loop" in data else True
            stored_name = str(data["name"]) if "name" in data else clip_name_of(path)
            return MotionClip(
                name=name or stored_name,
                fps=float(data["fps"]),
                qpos=np.asarray(data["qpos"], dtype=np.float64),
                loop=loop,
                source=str(path),
            )
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path}: not a native .npz clip file ({exc})") from exc
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: {exc}") from exc


def save_npz(clip: MotionClip, path: str | Path) -> None:
    """Write a clip in the native format."""
    np.savez(
        Path(path),
        fps=np.float64(clip.fps),
        qpos=clip.qpos,
        joint_names=np.array(hm.JOINT_NAMES),
        loop=np.bool_(clip.loop),
        name=np.array(clip.name),
    )


CLIP_LOADERS: dict[str, Callable[..., MotionClip]] = {
    ".txt": load_deepmimic,
    ".json": load_deepmimic,
    ".npz": load_npz,
}


def load_clip(path: str | Path, name: str | None = None) -> MotionClip:
    """Load a clip file by its suffix (DeepMimic ``.txt``/``.json`` or native ``.npz``)."""
    path = Path(path)
    loader = CLIP_LOADERS.get(path.suffix.lower())
    if loader is None:
        raise ValueError(f"{path}: unknown clip format; expected one of {sorted(CLIP_LOADERS)}")
    return loader(path, name)


def motion_files_in(directory: str | Path) -> dict[str, Path]:
    """Clip files in a directory by clip name (``humanoid3d_`` prefix dropped)."""
    directory = Path(directory)
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() in CLIP_LOADERS and path.name != "humanoid3d.txt":
            found.setdefault(clip_name_of(path), path)
    return found


SHIPPED_CLIPS = ("walk", "jog", "run")
"""Clips shipped in ``learner/data/motions/`` (DeepMimic mocap, MIT; see its README)."""


def shipped_motions_dir() -> Traversable:
    """``learner/data/motions/`` as package data (works for non-editable installs too)."""
    return importlib.resources.files("learner") / "data" / "motions"


def shipped_motion_names() -> list[str]:
    """Names of the shipped clips (``humanoid3d_walk.txt`` -> ``walk``): walk, jog, run."""
    found = {
        clip_name_of(Path(entry.name))
        for entry in shipped_motions_dir().iterdir()
        if entry.name.startswith(DEEPMIMIC_PREFIX) and entry.name.endswith(".txt")
    }
    order = {name: i for i, name in enumerate(SHIPPED_CLIPS)}
    return sorted(found, key=lambda name: (order.get(name, len(order)), name))


@contextmanager
def _shipped_file(name: str) -> Iterator[Path]:
    """A filesystem path of a shipped clip file while the context is open."""
    resource = shipped_motions_dir() / f"{DEEPMIMIC_PREFIX}{name}.txt"
    if not resource.is_file():
        raise FileNotFoundError(f"no shipped clip {name!r}; shipped: {shipped_motion_names()}")
    with importlib.resources.as_file(resource) as path:
        yield path


def load_shipped(name: str) -> MotionClip:
    """Load a shipped clip by name (``walk``, ``jog``, ``run``)."""
    with _shipped_file(name) as path:
        return load_clip(path)


def find_motion_files() -> dict[str, Path]:
    """The DeepMimic clips shipped by ``pybullet_data`` (extra ``clips``), or {} if absent."""
    try:
        pybullet_data = importlib.import_module("pybullet_data")
    except ImportError:
        return {}
    directory = Path(pybullet_data.getDataPath()) / "data" / "motions"
    if not directory.is_dir():
        return {}
    return {
        name: path
        for name, path in motion_files_in(directory).items()
        if path.name.startswith(DEEPMIMIC_PREFIX)
    }


# --------------------------------------------------------------------------------------
# Built-in procedural gaits (synthetic)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GaitParameters:
    """A synthetic gait cycle: sinusoidal joint profiles over one cycle (two steps)."""

    period: float
    """Seconds per cycle."""
    hip_flexion: tuple[float, float]
    """(mean, amplitude) of hip flexion (rad)."""
    hip_peak_phase: float
    """Leg phase of peak hip flexion (late swing, just before the foot strike at phase 1)."""
    knee_stance: float
    """Peak knee flexion during stance (rad)."""
    knee_swing: float
    """Peak knee flexion during swing (rad)."""
    swing_center: float
    """Leg phase of peak swing knee flexion (stance starts at phase 0)."""
    swing_width: float
    """Width (in phase) of the swing knee bump."""
    push_off: float
    """Peak plantar flexion at toe-off (rad, foot pitch relative to the ground)."""
    toe_off_phase: float
    """Leg phase of toe-off."""
    shoulder_swing: tuple[float, float]
    """(mean, amplitude) of shoulder flexion, opposite to the same-side leg (rad)."""
    elbow: tuple[float, float]
    """(mean, amplitude) of elbow flexion (rad)."""
    lean: float
    """Forward lean of the pelvis (rad)."""
    chest_lean: float
    """Extra forward lean of the chest (rad)."""
    flight: float = 0.0
    """Extra root height (m) while both feet are off the ground (runs)."""
    pelvis_roll: float = 0.03
    """Amplitude of the pelvis roll (rad)."""
    pelvis_yaw: float = 0.05
    """Amplitude of the pelvis yaw, countered by the chest (rad)."""
    arm_abduction: float = 0.12
    """Arms held away from the body (rad)."""


WALK_GAIT = GaitParameters(
    period=1.1,
    hip_flexion=(0.12, 0.36),
    hip_peak_phase=0.95,
    knee_stance=0.25,
    knee_swing=1.05,
    swing_center=0.73,
    swing_width=0.45,
    push_off=0.35,
    toe_off_phase=0.6,
    shoulder_swing=(0.05, 0.3),
    elbow=(0.35, 0.15),
    lean=0.04,
    chest_lean=0.02,
)
RUN_GAIT = GaitParameters(
    period=0.72,
    hip_flexion=(0.35, 0.5),
    hip_peak_phase=0.88,
    knee_stance=0.55,
    knee_swing=1.9,
    swing_center=0.68,
    swing_width=0.55,
    push_off=0.45,
    toe_off_phase=0.38,
    shoulder_swing=(0.1, 0.55),
    elbow=(1.35, 0.2),
    lean=0.2,
    chest_lean=0.05,
    flight=0.05,
    pelvis_roll=0.02,
    pelvis_yaw=0.08,
)


def _bump(phase: np.ndarray, center: float, width: float) -> np.ndarray:
    """Periodic raised-cosine bump: 1 at ``center``, 0 beyond +-width/2 (phase in cycles)."""
    d = (phase - center + 0.5) % 1.0 - 0.5
    return np.where(np.abs(d) < width / 2, 0.5 * (1.0 + np.cos(2 * np.pi * d / width)), 0.0)


def _about_minus_y(angle: np.ndarray) -> np.ndarray:
    """Rotation vectors of a forward swing by ``angle`` (rotation about -y in the z-up frame)."""
    zeros = np.zeros_like(angle)
    return np.stack([zeros, -angle, zeros], axis=-1)


def procedural_gait(
    name: str, gait: GaitParameters, kinematics: hm.Kinematics, fps: float = 60.0
) -> MotionClip:
    """A synthetic looping gait cycle of the humanoid (see ``GaitParameters``).

    Per leg, at leg phase p (right p = s, left p = s + 1/2; the foot strikes at p = 0): hip
    flexion m + a cos(2 pi (p - p_peak)),
    knee flexion as two raised-cosine bumps (stance and swing), and the ankle keeping the
    foot flat (ankle = -(thigh + shank forward angle)) except for a push-off bump at toe-off.
    Arms swing against the same-side leg. The root height puts the lower foot on the
    ground (forward kinematics), plus ``flight`` during double float; the root speed is the
    mean backward speed of the lower (stance) foot relative to the root, so feet barely slide.
    """
    frames = round(gait.period * fps)
    s = np.arange(frames + 1) / frames  # the last frame closes the cycle
    qpos = np.tile(hm.rest_qpos(), (frames + 1, 1))
    qpos[:, :3] = 0.0
    idx = hm.MODEL_INDEX

    def set_ball(joint: str, rotvec: np.ndarray) -> None:
        (b,) = idx.ball_order([joint])
        qpos[:, idx.ball_qpos[b]] = quat.from_rotvec(rotvec)

    def set_hinge(joint: str, angle: np.ndarray) -> None:
        (h,) = idx.hinge_order([joint])
        qpos[:, idx.hinge_qpos[h]] = angle

    two_pi = 2 * np.pi
    lean = gait.lean
    for side, offset, sign in (("right", 0.0, -1.0), ("left", 0.5, 1.0)):
        p = (s + offset) % 1.0
        hip = gait.hip_flexion[0] + gait.hip_flexion[1] * np.cos(two_pi * (p - gait.hip_peak_phase))
        knee = -(
            0.05
            + gait.knee_stance * _bump(p, 0.15, 0.3)
            + gait.knee_swing * _bump(p, gait.swing_center, gait.swing_width)
        )
        shank = hip - lean + knee  # forward angle of the shank from vertical
        foot_pitch = -gait.push_off * _bump(p, gait.toe_off_phase, 0.25) + 0.15 * _bump(
            p, (gait.swing_center + 1.0) / 2, 0.3
        )
        ankle = foot_pitch - shank
        set_ball(f"{side}_hip", _about_minus_y(hip))
        set_hinge(f"{side}_knee", knee)
        set_ball(f"{side}_ankle", _about_minus_y(ankle))
        arm = gait.shoulder_swing[0] + gait.shoulder_swing[1] * np.cos(two_pi * (p + 0.5))
        shoulder = _about_minus_y(arm)
        shoulder[:, 0] = sign * gait.arm_abduction
        set_ball(f"{side}_shoulder", shoulder)
        set_hinge(f"{side}_elbow", gait.elbow[0] + gait.elbow[1] * np.cos(two_pi * (p + 0.5)) ** 2)

    sway = two_pi * s
    root_rotvec = np.stack(
        [gait.pelvis_roll * np.sin(sway), np.full_like(s, lean), gait.pelvis_yaw * np.cos(sway)],
        axis=-1,
    )
    qpos[:, hm.ROOT_QUAT] = quat.from_rotvec(root_rotvec)
    chest = np.stack(
        [np.zeros_like(s), np.full_like(s, gait.chest_lean), -gait.pelvis_yaw * np.cos(sway)],
        axis=-1,
    )
    set_ball("chest", chest)
    set_ball("neck", _about_minus_y(np.full_like(s, 0.5 * (lean + gait.chest_lean))))

    # Root height: the lower foot on the ground, plus a lift while both feet are off it.
    qpos[:, 2] = -kinematics.sole_height(qpos)
    if gait.flight > 0:
        float_center = (gait.toe_off_phase + 0.5) / 2  # between toe-off and the other strike
        qpos[:, 2] += gait.flight * (
            _bump(s, float_center, 0.2) + _bump(s, float_center + 0.5, 0.2)
        )
    # Root speed: the stance (lower) foot's mean backward speed relative to the root.
    ankles = kinematics.end_effectors(qpos)[:, 2:4]  # right, left ankle, root at x = y = 0
    stance = np.argmin(ankles[:, :, 2], axis=1)
    dt = gait.period / frames
    x = ankles[np.arange(frames + 1), stance, 0]
    same = stance[1:] == stance[:-1]
    speed = float(-np.mean((x[1:] - x[:-1])[same]) / dt)
    qpos[:, 0] = speed * gait.period * s
    return MotionClip(name=name, fps=fps, qpos=qpos, loop=True, source="builtin (synthetic)")


def builtin_clips(fps: float = 60.0) -> dict[str, MotionClip]:
    """The built-in synthetic clips, ``walk`` and ``run`` (procedural, not motion capture)."""
    kinematics = hm.Kinematics()
    return {
        "walk": procedural_gait("walk", WALK_GAIT, kinematics, fps),
        "run": procedural_gait("run", RUN_GAIT, kinematics, fps),
    }


# --------------------------------------------------------------------------------------
# Derived clips and the five-clip example
# --------------------------------------------------------------------------------------


def held_pose(
    clip: MotionClip,
    name: str = "Idle",
    duration: float = 4.0,
    fps: float = 30.0,
    sway: float = 0.04,
    kinematics: hm.Kinematics | None = None,
) -> MotionClip:
    """A standing clip derived from a real frame of ``clip``, with a small upper-body sway.

    The frame is the right foot's mid-stance (the lowest right ankle closest under the
    root); its left arm and leg are set to mirror the right ones, the root is turned
    upright (heading kept) and lowered until the soles touch the ground. Over one
    ``duration`` cycle the chest rolls by +-``sway`` and pitches by +-sway/2 (twice), the
    neck counters half of it and the arms swing by +-sway/2.
    """
    kinematics = kinematics or hm.Kinematics()
    ankles = kinematics.end_effectors(clip.qpos)
    rel = ankles[:, 2] - clip.qpos[:, :3]
    low = ankles[:, 2, 2] <= ankles[:, 2, 2].min() + 0.02
    frame = int(np.flatnonzero(low)[np.argmin(np.abs(rel[low, 0]))])
    pose = hm.mirror_right_to_left(clip.qpos[frame])
    pose[hm.ROOT_QUAT] = quat.from_yaw(quat.yaw(pose[hm.ROOT_QUAT]))
    pose[2] -= kinematics.sole_height(pose)[0]

    frames = round(duration * fps)
    t = np.arange(frames + 1) / frames
    qpos = np.tile(pose, (frames + 1, 1))
    idx = hm.MODEL_INDEX
    wave = np.sin(2 * np.pi * t)
    zeros = np.zeros_like(t)

    def turn(joint: str, rotvec: np.ndarray) -> None:
        (b,) = idx.ball_order([joint])
        cols = idx.ball_qpos[b]
        qpos[:, cols] = quat.multiply(qpos[:, cols], quat.from_rotvec(rotvec))

    chest = np.stack([sway * wave, 0.5 * sway * np.sin(4 * np.pi * t), zeros], axis=-1)
    turn("chest", chest)
    turn("neck", -0.5 * chest)
    arm = _about_minus_y(0.5 * sway * np.sin(2 * np.pi * t + 0.5))
    turn("right_shoulder", arm)
    turn("left_shoulder", arm)
    return MotionClip(
        name=name, fps=fps, qpos=qpos, loop=True, source=f"held_pose({clip.name}, frame {frame})"
    )


FIVE_CLIP_SOURCES = ("builtin", "shipped", "pybullet_data")
"""Named sources of the five-clip example's walk and run (any other value is a directory)."""


def default_gait_source() -> str:
    """Where ``five_clip_example(None)`` takes walk and run: pybullet_data or shipped."""
    files = find_motion_files()
    return "pybullet_data" if "walk" in files and "run" in files else "shipped"


def _gait_sources(source: str | Path | None) -> tuple[MotionClip, MotionClip, str]:
    """(walk, run, description) from pybullet_data, the shipped clips, the built-ins or a
    directory."""
    if source is None:
        source = default_gait_source()
    if str(source) == "builtin":
        built = builtin_clips()
        return built["walk"], built["run"], "builtin (synthetic)"
    if str(source) == "shipped":
        return load_shipped("walk"), load_shipped("run"), "shipped"
    if str(source) == "pybullet_data":
        files = find_motion_files()
        if not files:
            raise FileNotFoundError("pybullet_data is not installed (pip install '.[clips]')")
    else:
        files = motion_files_in(source)
    walk = files.get("walk")
    run = files.get("run", files.get("jog"))
    if walk is None or run is None:
        raise FileNotFoundError(
            f"{source}: needs a walk and a run (or jog) clip, found {sorted(files)}"
        )
    return load_clip(walk), load_clip(run), str(source)


def five_clip_example(
    source: str | Path | None = None, sprint_rate: float = 1.4
) -> list[MotionClip]:
    """Idle, Walk, Back, Run, Sprint built from a walk and a run clip.

    ``source``: None picks ``pybullet_data``'s DeepMimic clips when installed, else the
    shipped ones (the same mocap files, so the same clips); ``"shipped"``,
    ``"pybullet_data"`` or ``"builtin"`` (the synthetic gaits) force one; any other value
    is a directory holding ``humanoid3d_walk`` and ``humanoid3d_run`` (or ``_jog``) as
    DeepMimic ``.txt`` or native ``.npz`` files.
    """
    walk, run, origin = _gait_sources(source)
    logger.info("five-clip example from %s", origin)
    return [
        held_pose(walk, "Idle"),
        walk.renamed("Walk"),
        walk.reversed("Back"),
        run.renamed("Run"),
        run.time_scaled(sprint_rate, "Sprint"),
    ]


# --------------------------------------------------------------------------------------
# Reference tables for the env
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReferenceTable:
    """One clip sampled at a fixed rate with everything the reward and resets need."""

    name: str
    duration: float
    """Seconds per cycle (loop) or in total."""
    loop: bool
    times: np.ndarray
    """(M,) sample times: k * duration / M when looping, else evenly from 0 to duration."""
    qpos: np.ndarray
    """(M, 43) poses (for reference-state initialisation)."""
    qvel: np.ndarray
    """(M, 34) velocities."""
    features: np.ndarray
    """(M, 51) tracked features (``learner.humanoid.tracked_state``)."""
    quats: np.ndarray
    """(M, 9, 4) tracked quaternions."""

    @property
    def num_rows(self) -> int:
        """M."""
        return int(self.times.shape[0])

    @property
    def mean_forward_speed(self) -> float:
        """Mean root velocity along the character's heading (m/s); negative walks backwards."""
        return float(self.features[:, hm.TRACKED_FEATURES["root_velocity"].start].mean())


def reference_table(
    clip: MotionClip, kinematics: hm.Kinematics, rate: float = 120.0
) -> ReferenceTable:
    """Sample a clip at ``rate`` Hz; end effectors by MuJoCo forward kinematics."""
    rows = max(2, round(clip.duration * rate))
    if clip.loop:
        times = np.arange(rows) * (clip.duration / rows)
    else:
        times = np.linspace(0.0, clip.duration, rows)
    qpos = clip.sample(times)
    qvel = clip.velocities(times)
    features, quats = hm.tracked_state(qpos, qvel, kinematics.end_effectors(qpos))
    return ReferenceTable(
        name=clip.name,
        duration=clip.duration,
        loop=clip.loop,
        times=times,
        qpos=qpos,
        qvel=qvel,
        features=features,
        quats=quats,
    )


__all__ = [
    "CLIP_LOADERS",
    "FIVE_CLIPS",
    "FIVE_CLIP_SOURCES",
    "RUN_GAIT",
    "SHIPPED_CLIPS",
    "WALK_GAIT",
    "GaitParameters",
    "MotionClip",
    "ReferenceTable",
    "builtin_clips",
    "clip_name_of",
    "default_gait_source",
    "find_motion_files",
    "five_clip_example",
    "held_pose",
    "load_clip",
    "load_deepmimic",
    "load_npz",
    "load_shipped",
    "motion_files_in",
    "procedural_gait",
    "reference_table",
    "save_npz",
    "shipped_motion_names",
    "shipped_motions_dir",
]
