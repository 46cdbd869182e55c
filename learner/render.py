"""``clipsched render``: a filmstrip PNG and a GIF of a trained policy beside its reference clip.

What a policy learned is easiest to judge by looking at it. ``render_checkpoint`` plays a
checkpoint's policy deterministically (its mean action) on one character of its own env
(humanoid or planar), starting on the reference at ``start_phase`` of the chosen clip, and
poses a kinematic ghost of the reference clip at the same phase, from the same start and
heading, every control step (set from the clip's poses, never simulated). Each picture
has two panels of the same size: the policy (orange, simulated) and the reference (blue,
translucent), each seen by a camera that follows its own character's root from the same
angle, so the poses compare directly even after the two have drifted apart (the tracking
reward is position invariant) or the policy fell.

- The GIF is the whole rollout at ``fps`` (at most the env's 30 Hz control rate), one
  frame = policy panel | reference panel.
- The PNG filmstrip is ``frames_in_strip`` frames evenly spaced over the rollout, the
  policy in the top row and the reference in the bottom row, each frame time-stamped,
  under a header with the clip, the checkpoint's step and the episode's figures.
- If the episode ends by a termination (a fall or straying from the reference) before
  ``seconds``, the rollout goes on: the character keeps its last PD targets and falls
  under physics while the ghost keeps playing; policy panels from the termination on get
  a red border, and the strip always shows the frame where it ended.
- ``render_reference`` shows a clip alone (no checkpoint): one row, one panel per frame.

Usage::

    clipsched render runs/RUN/learner0/checkpoints/latest.pt --out renders --clip Walk
    clipsched render --reference-only --clips Walk --out renders --size 480x360

Rendering is offscreen MuJoCo through EGL or OSMesa. ``$MUJOCO_GL`` (egl, osmesa or glfw)
is used when set; otherwise the first of EGL and OSMesa that can render is found by a
probe in a subprocess (one process can bind only one OpenGL platform); the command line
also sets ``MUJOCO_GL`` to it before importing mujoco. Heavy modules (mujoco, torch, the
envs) are imported only when rendering.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    import mujoco

    from learner.evaluate import Policy

GL_BACKENDS = ("egl", "osmesa")
"""Offscreen OpenGL backends tried, in order, when ``$MUJOCO_GL`` is not set."""

POLICY_RGBA = (0.95, 0.55, 0.2, 1.0)
REFERENCE_RGBA = (0.3, 0.6, 1.0, 0.55)
ENDED_RGB = (220, 30, 30)
BACKGROUND_RGB = (24, 24, 28)
TEXT_RGB = (240, 240, 240)

_PROBE = """
import importlib, os, sys
backend = sys.argv[1]
os.environ["MUJOCO_GL"] = backend
import mujoco
context = importlib.import_module("mujoco." + backend).GLContext(32, 32)
context.make_current()
model = mujoco.MjModel.from_xml_string(
    '<mujoco><worldbody><light pos="0 0 3"/><geom type="sphere" size="1"/></worldbody></mujoco>'
)
data = mujoco.MjData(model)
mujoco.mj_forward(model, data)
render = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, render)
scene = mujoco.MjvScene(model, maxgeom=10)
camera = mujoco.MjvCamera()
mujoco.mjv_updateScene(model, data, mujoco.MjvOption(), None, camera,
                       mujoco.mjtCatBit.mjCAT_ALL, scene)
rect = mujoco.MjrRect(0, 0, 32, 32)
mujoco.mjr_render(rect, scene, render)
pixels = __import__("numpy").zeros((32, 32, 3), dtype="uint8")
mujoco.mjr_readPixels(pixels, None, rect, render)
render.free()
context.free()
"""


class RenderError(RuntimeError):
    """Rendering cannot run here (no working OpenGL backend)."""


# --------------------------------------------------------------------------------------
# OpenGL backend and offscreen rendering
# --------------------------------------------------------------------------------------


@cache
def gl_backend() -> str | None:
    """The OpenGL backend to render with: ``$MUJOCO_GL`` when it names one, else the first
    of ``GL_BACKENDS`` that renders in a probe subprocess; None when none works or
    ``$MUJOCO_GL`` disables rendering."""
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen in (*GL_BACKENDS, "glfw"):
        return chosen
    if chosen in ("disable", "disabled", "off", "false", "0"):
        return None
    for backend in GL_BACKENDS:
        try:
            probe = subprocess.run(
                [sys.executable, "-c", _PROBE, backend],
                capture_output=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return backend
    return None


class Offscreen:
    """An OpenGL context and MuJoCo render context drawing one model's scenes into RGB arrays."""

    def __init__(self, model: mujoco.MjModel, width: int, height: int) -> None:
        import mujoco

        backend = gl_backend()
        if backend is None:
            raise RenderError(
                f"no offscreen OpenGL backend works here (tried {', '.join(GL_BACKENDS)}); "
                "install libegl1 or libosmesa6, or set MUJOCO_GL"
            )
        self.backend = backend
        self.width, self.height = width, height
        self._gl: Any = importlib.import_module(f"mujoco.{backend}").GLContext(width, height)
        self._gl.make_current()
        self._context: Any = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._scene = mujoco.MjvScene(model, maxgeom=max(100, 4 * model.ngeom))
        self._option = mujoco.MjvOption()
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._pixels = np.zeros((height, width, 3), dtype=np.uint8)

    def render(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        camera: mujoco.MjvCamera,
        rgba: Sequence[float],
        skip_geom: int = -1,
    ) -> np.ndarray:
        """(H, W, 3) uint8 image of ``data``'s scene, every model geom but ``skip_geom``
        (the floor) coloured ``rgba``."""
        import mujoco

        self._gl.make_current()
        mujoco.mjv_updateScene(
            model, data, self._option, None, camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )
        geom_type = int(mujoco.mjtObj.mjOBJ_GEOM)
        for i in range(self._scene.ngeom):
            geom = self._scene.geoms[i]
            if geom.objtype == geom_type and geom.objid != skip_geom:
                geom.rgba[:] = rgba
        mujoco.mjr_render(self._rect, self._scene, self._context)
        mujoco.mjr_readPixels(self._pixels, None, self._rect, self._context)
        return np.flipud(self._pixels).copy()

    def close(self) -> None:
        """Free the render and OpenGL contexts (safe to call twice)."""
        if self._context is not None:
            self._gl.make_current()
            self._context.free()
            self._context = None
        if self._gl is not None:
            self._gl.free()
            self._gl = None

    def __enter__(self) -> Offscreen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def render_model(asset: Path, width: int, height: int) -> mujoco.MjModel:
    """The character's MJCF with a checkered floor, a sky, a light and an offscreen buffer
    of at least ``width`` x ``height``; for drawing only (never stepped)."""
    import mujoco

    spec = mujoco.MjSpec.from_file(str(asset))
    spec.add_texture(
        name="render_grid",
        type=mujoco.mjtTexture.mjTEXTURE_2D,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
        rgb1=[0.46, 0.50, 0.55],
        rgb2=[0.33, 0.36, 0.40],
        width=256,
        height=256,
    )
    spec.add_texture(
        name="render_sky",
        type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
        rgb1=[0.55, 0.65, 0.78],
        rgb2=[0.12, 0.14, 0.18],
        width=256,
        height=256,
    )
    grid = spec.add_material(name="render_grid", texrepeat=[1.0, 1.0], texuniform=True)
    grid.textures[int(mujoco.mjtTextureRole.mjTEXROLE_RGB)] = "render_grid"
    floor = spec.geom("floor")
    floor.material = "render_grid"
    floor.rgba = [1.0, 1.0, 1.0, 1.0]
    floor.size = [60.0, 60.0, 0.1]
    spec.worldbody.add_light(
        pos=[0.0, -2.0, 4.0], dir=[0.0, 0.4, -1.0], diffuse=[0.5, 0.5, 0.5], castshadow=False
    )
    spec.visual.global_.offwidth = max(width, spec.visual.global_.offwidth)
    spec.visual.global_.offheight = max(height, spec.visual.global_.offheight)
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.45, 0.45, 0.45]
    # software GL: no multisampling and no shadows (a light from above casts none to see)
    # render 4x faster (17 ms instead of 66-200 ms at 320x240)
    spec.visual.quality.offsamples = 0
    model = spec.compile()
    model.light_castshadow[:] = 0
    return model


# --------------------------------------------------------------------------------------
# The envs: how to start on a clip, what the policy's targets are, the reference's poses
# --------------------------------------------------------------------------------------


class _Rig:
    """What the renderer needs from one env kind, for one character (slot 0)."""

    asset: Path
    camera_distance: float = 2.8

    def __init__(self, env: Any) -> None:
        self.env = env
        self.dt: float = float(env.config.control_dt)
        self.substeps: int = int(env.config.substeps)

    def start(self, clip_id: int, phase: float) -> np.ndarray:
        """Put the character on the clip's reference at ``phase``; its (1, obs_dim) obs."""
        raise NotImplementedError

    def targets(self, actions: np.ndarray) -> np.ndarray:
        """(1, A) PD targets the env applies for (1, A) actions."""
        raise NotImplementedError

    def reference_track(self, clip_id: int, phase: float, steps: int) -> np.ndarray:
        """(steps + 1, nq) reference poses at each control step from ``phase``, root xy
        starting where the character starts."""
        raise NotImplementedError

    def max_steps(self, clip_id: int, phase: float) -> int | None:
        """Control steps until the clip's last frame (None for looping clips)."""
        return None

    def azimuth(self, qpos: np.ndarray) -> float:
        """Camera azimuth (degrees) for a character starting in pose ``qpos``."""
        return 90.0


class _HumanoidRig(_Rig):
    """``learner.envs.humanoid.HumanoidVecEnv``."""

    def __init__(self, env: Any) -> None:
        from learner.humanoid import asset_path

        super().__init__(env)
        self.asset = asset_path()

    def start(self, clip_id: int, phase: float) -> np.ndarray:
        """Reference-state start at ``phase`` (the env's reset picked a random one)."""
        env = self.env
        env.phase0[0] = phase
        env.set_reference_state(0, clip_id)
        return np.asarray(env._observe(*env.state()), dtype=np.float32)

    def targets(self, actions: np.ndarray) -> np.ndarray:
        """The env's own ``pd_targets``."""
        return np.asarray(self.env.pd_targets(actions))

    def reference_track(self, clip_id: int, phase: float, steps: int) -> np.ndarray:
        """The clip sampled at the control steps (looping clips advance cycle by cycle)."""
        clip = self.env.clips[clip_id]
        times = phase * clip.duration + self.dt * np.arange(steps + 1)
        qpos = np.asarray(clip.sample(times))
        qpos[:, :2] += self.env.data.qpos[:2] - qpos[0, :2]
        return qpos

    def max_steps(self, clip_id: int, phase: float) -> int | None:
        """Steps to the end of a clip that does not loop."""
        clip = self.env.clips[clip_id]
        if clip.loop:
            return None
        return max(1, math.floor((1.0 - phase) * float(clip.duration) / self.dt + 1e-9))

    def azimuth(self, qpos: np.ndarray) -> float:
        """Three-quarter view from the character's front right."""
        from learner.quaternions import yaw

        return math.degrees(float(yaw(qpos[3:7]))) + 120.0


class _PlanarRig(_Rig):
    """``learner.envs.planar.PlanarVecEnv``: the walker moves along +x, seen from the side."""

    camera_distance = 2.8

    def __init__(self, env: Any) -> None:
        from learner.envs import planar

        super().__init__(env)
        self.asset = Path(planar.__file__).resolve().parent.parent / "assets" / planar.ASSET

    def _frames(self, clip_id: int, phase: float, steps: int) -> np.ndarray:
        """Nearest clip frame at each control step (the env's own lookup)."""
        clip = self.env.clips[clip_id]
        count = int(clip.num_frames)
        phases = (phase + self.dt * np.arange(steps + 1) / float(clip.period)) % 1.0
        return np.asarray(np.rint(phases * count).astype(np.int64) % count)

    def start(self, clip_id: int, phase: float) -> np.ndarray:
        """Reference-state start at the frame nearest ``phase``."""
        env = self.env
        frames = env.clips[clip_id].num_frames
        env.phase0[0] = (round(phase * frames) % frames) / frames
        env.set_reference_state(0, clip_id)
        return np.asarray(env._observe(env.state_features()), dtype=np.float32)

    def targets(self, actions: np.ndarray) -> np.ndarray:
        """center + scale * a, clipped to the joint ranges (as ``PlanarVecEnv.step``)."""
        env = self.env
        a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        targets = env._action_center + env._action_scale * a
        return np.asarray(np.clip(targets, env.geometry.joint_low, env.geometry.joint_high))

    def reference_track(self, clip_id: int, phase: float, steps: int) -> np.ndarray:
        """Clip frames as walker qpos; x integrates the reference's forward velocity."""
        clip = self.env.clips[clip_id]
        frames = self._frames(clip_id, phase, steps)
        qpos = np.zeros((steps + 1, self.env.data.qpos.shape[0]))
        speed = clip.root_forward_velocity[frames[:-1]] * self.dt
        qpos[:, 0] = self.env.data.qpos[0] + np.concatenate([[0.0], np.cumsum(speed)])
        qpos[:, 1] = clip.root_height[frames] - self.env.geometry.root_height0
        qpos[:, 2] = clip.root_pitch[frames]
        qpos[:, 3:] = clip.joint_angles[frames]
        return qpos


def _rig(env: Any) -> _Rig:
    """The rig of a 1-character env."""
    kind = type(env).__name__
    if kind == "HumanoidVecEnv":
        return _HumanoidRig(env)
    if kind == "PlanarVecEnv":
        return _PlanarRig(env)
    raise ValueError(f"cannot render a {kind}")


# --------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at ``size`` px."""
    return ImageFont.load_default(size=size)


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, size: int, fill: Any) -> None:
    """Text with a dark outline, readable on floor and sky."""
    draw.text(xy, text, font=_font(size), fill=fill, stroke_width=2, stroke_fill=(0, 0, 0))


def _label_panel(
    pixels: np.ndarray, lines: Sequence[str], ended: str | None, bottom: str = ""
) -> Image.Image:
    """A panel with caption lines at the top, ``bottom`` at the bottom, and a red border
    plus the ``ended`` note when the episode is over."""
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    size = max(9, image.height // 14)
    border = max(3, image.height // 40) if ended is not None else 0
    for i, line in enumerate([*lines, *([ended] if ended is not None else [])]):
        fill = ENDED_RGB if i == len(lines) else TEXT_RGB
        _text(draw, (border + 4, border + 2 + i * (size + 3)), line, size, fill)
    if bottom:
        _text(draw, (border + 4, image.height - border - size - 6), bottom, size, TEXT_RGB)
    if border:
        box = (0, 0, image.width - 1, image.height - 1)
        draw.rectangle(box, outline=ENDED_RGB, width=border)
    return image


def _side_by_side(panels: Sequence[Image.Image]) -> Image.Image:
    """Panels left to right."""
    width = sum(p.width for p in panels)
    frame = Image.new("RGB", (width, panels[0].height), BACKGROUND_RGB)
    x = 0
    for panel in panels:
        frame.paste(panel, (x, 0))
        x += panel.width
    return frame


def _filmstrip(rows: Sequence[Sequence[Image.Image]], header: Sequence[str]) -> Image.Image:
    """Rows of equally sized cells under a header of text lines."""
    cell_w, cell_h = rows[0][0].size
    gap = 4
    size = max(11, cell_h // 12)
    header_h = len(header) * (size + 4) + 2 * gap
    columns = max(len(r) for r in rows)
    strip = Image.new(
        "RGB",
        (columns * cell_w + (columns + 1) * gap, header_h + len(rows) * (cell_h + gap)),
        BACKGROUND_RGB,
    )
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(header):
        draw.text((gap + 2, gap + i * (size + 4)), line, font=_font(size), fill=TEXT_RGB)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            strip.paste(cell, (gap + c * (cell_w + gap), header_h + r * (cell_h + gap)))
    return strip


def _safe(name: str) -> str:
    """A file-name friendly version of a clip name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "clip"


# --------------------------------------------------------------------------------------
# The rollout
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderResult:
    """What ``render_checkpoint`` / ``render_reference`` wrote and what the episode did."""

    png: Path
    """The filmstrip."""
    gif: Path
    """The whole rollout."""
    clip: str
    steps: int
    """Control steps rendered (``seconds`` at the control rate, shorter for a clip that
    does not loop and ends first)."""
    frames: int
    """Frames in the GIF."""
    episode_steps: int
    """Control steps the policy played before its episode ended (``steps`` if it did not)."""
    terminated: bool
    """The episode ended by a termination (a fall or straying from the reference)."""
    tracking_reward: float | None
    """Mean active-clip tracking reward per step over the episode, in [0, 1]; None when
    only the reference was rendered."""
    control_dt: float
    """Seconds per control step."""
    global_step: int | None = None
    """The checkpoint's env steps of training."""
    backend: str = ""
    """The OpenGL backend that rendered."""
    strip_steps: tuple[int, ...] = field(default=())
    """Control steps shown in the filmstrip."""

    def summary(self) -> str:
        """One line with the episode's figures."""
        seconds = self.steps * self.control_dt
        if self.tracking_reward is None:
            return f"{self.clip}: reference only, {self.steps} steps ({seconds:.2f} s)"
        end = "no termination"
        if self.terminated:
            at = self.episode_steps * self.control_dt
            end = f"terminated at step {self.episode_steps} ({at:.2f} s)"
        return (
            f"{self.clip}: {self.steps} steps ({seconds:.2f} s), {end}, "
            f"mean tracking reward {self.tracking_reward:.3f}"
        )


def _schedule(steps: int, hz: float, fps: float, strip: int) -> tuple[list[int], list[int]]:
    """Control steps of the GIF frames (every 1/fps s) and of the strip (evenly spread)."""
    count = math.floor(steps * fps / hz + 1e-9) + 1
    gif = [min(steps, round(i * hz / fps)) for i in range(count)]
    strip_steps = sorted({round(x) for x in np.linspace(0, steps, max(1, strip))})
    return gif, strip_steps


def _with_step(strip_steps: list[int], step: int) -> list[int]:
    """The strip with ``step`` in place of its nearest inner frame (the first and the last
    stay; added when there is no inner frame)."""
    if step in strip_steps:
        return strip_steps
    inner = strip_steps[1:-1]
    if inner:
        nearest = min(inner, key=lambda s: abs(s - step))
        strip_steps = [s for s in strip_steps if s != nearest]
    return sorted([*strip_steps, step])


def _play(
    env: Any,
    policy: Policy | None,
    clip_id: int,
    seconds: float,
    fps: float,
    size: tuple[int, int],
    frames_in_strip: int,
    start_phase: float,
    seed: int,
    out_dir: Path,
    stem: str,
    title: str,
) -> RenderResult:
    """Play (or only pose the reference), render, and write the PNG and the GIF."""
    import mujoco

    width, height = size
    rig = _rig(env)
    hz = 1.0 / rig.dt
    if not 0 < fps <= hz + 1e-9:
        raise ValueError(f"fps must be in (0, {hz:g}] (the control rate), got {fps:g}")
    if not 0.0 <= start_phase < 1.0:
        raise ValueError(f"start_phase must be in [0, 1), got {start_phase:g}")
    env.reset(seed=seed)
    obs = rig.start(clip_id, start_phase)
    steps = max(1, round(seconds * hz))
    clip_end = rig.max_steps(clip_id, start_phase)
    if clip_end is not None:
        steps = min(steps, clip_end)
    gif_steps, strip_steps = _schedule(steps, hz, fps, frames_in_strip)
    track = rig.reference_track(clip_id, start_phase, steps)

    model = render_model(rig.asset, width, height)
    if model.nq != env.data.qpos.shape[0] or model.nq != track.shape[1]:
        raise ValueError(f"render model has nq={model.nq}, the env {env.data.qpos.shape[0]}")
    floor = model.geom("floor").id
    policy_data, ghost_data = mujoco.MjData(model), mujoco.MjData(model)
    ghost_data.qpos[:] = track[0]
    mujoco.mj_kinematics(model, ghost_data)
    camera_height = 0.95 * float(ghost_data.xpos[1, 2])
    azimuth = rig.azimuth(track[0])

    def camera(data: mujoco.MjData) -> mujoco.MjvCamera:
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam.lookat[:] = (data.xpos[1, 0], data.xpos[1, 1], camera_height)
        cam.distance, cam.azimuth, cam.elevation = rig.camera_distance, azimuth, -12.0
        return cam

    snapshot = mujoco.MjData(env.model)
    ids = np.array([clip_id])
    rewards: list[float] = []
    ended: int | None = None  # step at which the episode ended
    terminated = False
    gif_frames: list[Image.Image] = []
    strip_cells: dict[int, tuple[Image.Image | None, Image.Image]] = {}
    wanted = set(gif_steps)
    name = env.clip_names[clip_id]

    with Offscreen(model, width, height) as screen:
        for k in range(steps + 1):
            if k in wanted or k in strip_steps:
                t = f"t {k * rig.dt:5.2f} s  step {k}"
                ghost_data.qpos[:] = track[k]
                mujoco.mj_kinematics(model, ghost_data)
                ghost_px = screen.render(
                    model, ghost_data, camera(ghost_data), REFERENCE_RGBA, floor
                )
                ghost = _label_panel(ghost_px, [f"reference {name}"], None, t)
                panel = None
                if policy is not None:
                    policy_data.qpos[:] = env.data.qpos
                    mujoco.mj_kinematics(model, policy_data)
                    policy_px = screen.render(
                        model, policy_data, camera(policy_data), POLICY_RGBA, floor
                    )
                    note = None
                    if ended is not None and terminated:
                        note = f"terminated at {ended * rig.dt:.2f} s"
                    panel = _label_panel(policy_px, [f"policy {name}"], note, t)
                if k in wanted:
                    gif_frames.append(_side_by_side([p for p in (panel, ghost) if p is not None]))
                if k in strip_steps:
                    strip_cells[k] = (panel, ghost)
            if k == steps or policy is None:
                continue
            if ended is not None:  # the episode is over: the body keeps its last targets
                mujoco.mj_step(env.model, env.data, nstep=rig.substeps)
                continue
            action = policy.act(obs, ids)
            targets = rig.targets(action)
            mujoco.mj_copyData(snapshot, env.model, env.data)
            step = env.step(action)
            rewards.append(float(step.active_reward[0]))
            obs = np.asarray(step.obs, dtype=np.float32)
            if step.terminated[0] or step.truncated[0]:
                # the env reset the character; redo the last step to show where it ended
                mujoco.mj_copyData(env.data, env.model, snapshot)
                env.data.ctrl[:] = np.asarray(targets).reshape(-1)
                mujoco.mj_step(env.model, env.data, nstep=rig.substeps)
                ended, terminated = k + 1, bool(step.terminated[0])
                if terminated:
                    strip_steps = _with_step(strip_steps, ended)

        backend = screen.backend

    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{stem}_{_safe(name)}.png"
    gif = out_dir / f"{stem}_{_safe(name)}.gif"
    reward = float(np.mean(rewards)) if rewards else None
    episode_steps = ended if ended is not None else steps
    result = RenderResult(
        png=png,
        gif=gif,
        clip=name,
        steps=steps,
        frames=len(gif_frames),
        episode_steps=episode_steps if policy is not None else steps,
        terminated=terminated,
        tracking_reward=reward if policy is not None else None,
        control_dt=rig.dt,
        global_step=policy.global_step if policy is not None else None,
        backend=backend,
        strip_steps=tuple(strip_steps),
    )
    cells = [strip_cells[k] for k in strip_steps]
    rows = [[g for _, g in cells]]
    if policy is not None:
        rows.insert(0, [p for p, _ in cells if p is not None])
    header = [title, result.summary()]
    _filmstrip(rows, header).save(png)
    # GIF delays are in 1/100 s: alternate them so that the mean rate is ``fps``
    ticks = np.rint(np.arange(len(gif_frames) + 1) * 100.0 / fps).astype(np.int64)
    gif_frames[0].save(
        gif,
        save_all=True,
        append_images=gif_frames[1:],
        duration=[int(10 * max(2, d)) for d in np.diff(ticks)],
        loop=0,
    )
    return result


def _clip_id(names: Sequence[str], clip: str | None) -> int:
    """Index of ``clip`` (exact, else case-insensitive) among ``names``; the first if None."""
    if clip is None:
        return 0
    if clip in names:
        return list(names).index(clip)
    lowered = [n.lower() for n in names]
    if clip.lower() in lowered:
        return lowered.index(clip.lower())
    raise ValueError(f"unknown clip {clip!r}; this env has {', '.join(names)}")


def _build_env(config: Any, clip_holder: list[int]) -> Any:
    """One character of the config's env, every reset on ``clip_holder[0]``."""
    from learner.envs.builders import ENV_BUILDERS

    # the rollout is never cut by the training time limit
    config = config.with_overrides(
        num_envs=1, max_episode_steps=max(config.max_episode_steps, 1_000_000)
    )
    return ENV_BUILDERS[config.env](config, lambda: clip_holder[0])


def render_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    clip: str | None = None,
    seconds: float = 5.0,
    fps: float = 15.0,
    width: int = 320,
    height: int = 240,
    frames_in_strip: int = 8,
    seed: int = 0,
    start_phase: float = 0.0,
    config_overrides: dict[str, Any] | None = None,
) -> RenderResult:
    """Play a checkpoint's policy on ``clip`` (default: its first clip) for ``seconds``
    beside the reference and write ``render_<clip>.png`` and ``render_<clip>.gif``."""
    import torch

    from learner.evaluate import load_policy

    _check_sizes(seconds, width, height, frames_in_strip)
    torch.set_num_threads(1)  # one small forward pass per step
    try:
        policy = load_policy(checkpoint, **(config_overrides or {}))
    except (pickle.UnpicklingError, EOFError, RuntimeError, KeyError) as exc:
        kind = type(exc).__name__
        raise ValueError(f"{checkpoint} is not a clipsched train checkpoint ({kind})") from exc
    holder = [0]
    env = _build_env(policy.config, holder)
    try:
        holder[0] = _clip_id(env.clip_names, clip)
        if policy.model.config.obs_dim != env.obs_dim:
            raise ValueError(
                f"the checkpoint expects {policy.model.config.obs_dim} observations, its env "
                f"gives {env.obs_dim} (were its clips moved? pass clips=...)"
            )
        title = (
            f"{Path(checkpoint).name} after {policy.global_step:,} steps  |  "
            f"{policy.config.env}  |  top: policy (orange)  bottom: reference (blue)"
        )
        return _play(
            env, policy, holder[0], seconds, fps, (width, height), frames_in_strip,
            start_phase, seed, Path(out_dir), "render", title,
        )  # fmt: skip
    finally:
        env.close()


def render_reference(
    out_dir: str | Path,
    clips: Sequence[str] = (),
    clip: str | None = None,
    env: str = "humanoid",
    seconds: float = 5.0,
    fps: float = 15.0,
    width: int = 320,
    height: int = 240,
    frames_in_strip: int = 8,
    start_phase: float = 0.0,
) -> RenderResult:
    """Render a reference clip alone (names or clip files in ``clips``, default the env's
    set; ``clip`` picks one) into ``reference_<clip>.png`` and ``.gif``."""
    from learner.config import TrainConfig

    _check_sizes(seconds, width, height, frames_in_strip)
    holder = [0]
    config = TrainConfig(env=env, clips=tuple(clips), num_envs=1)  # type: ignore[arg-type]
    vec = _build_env(config, holder)
    try:
        holder[0] = _clip_id(vec.clip_names, clip)
        source = getattr(vec.clips[holder[0]], "source", "")
        title = f"reference clip {vec.clip_names[holder[0]]}  |  {env}" + (
            f"  |  from {source}" if source else ""
        )
        return _play(
            vec, None, holder[0], seconds, fps, (width, height), frames_in_strip,
            start_phase, 0, Path(out_dir), "reference", title,
        )  # fmt: skip
    finally:
        vec.close()


def _check_sizes(seconds: float, width: int, height: int, frames_in_strip: int) -> None:
    """ValueError for non-positive durations or sizes."""
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds:g}")
    if width < 16 or height < 16:
        raise ValueError(f"image size must be at least 16x16, got {width}x{height}")
    if frames_in_strip < 1:
        raise ValueError(f"frames_in_strip must be >= 1, got {frames_in_strip}")


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:
    """``WxH`` -> (W, H)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 320x240, got {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16, got {text!r}")
    return w, h


def run_render(args: argparse.Namespace) -> int:
    """Entry point of ``clipsched render``."""
    width, height = args.size
    backend = gl_backend()
    if backend is not None:  # for mujoco's own GL context, when mujoco is imported next
        os.environ.setdefault("MUJOCO_GL", backend)
    try:
        if args.reference_only:
            result = render_reference(
                args.out, args.clips or (), args.clip, args.env, args.seconds, args.fps,
                width, height, args.frames, args.start_phase,
            )  # fmt: skip
        elif args.checkpoint is None:
            print("clipsched render: give a CHECKPOINT or --reference-only", file=sys.stderr)
            return 2
        else:
            overrides = {"clips": tuple(args.clips)} if args.clips else {}
            result = render_checkpoint(
                args.checkpoint, args.out, args.clip, args.seconds, args.fps, width, height,
                args.frames, args.seed, args.start_phase, overrides,
            )  # fmt: skip
    except RenderError as exc:
        print(f"clipsched render: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        print(f"clipsched render: {message}", file=sys.stderr)
        return 2
    print(f"png: {result.png}")
    print(f"gif: {result.gif} ({result.frames} frames at {args.fps:g} fps)")
    print(result.summary())
    return 0


def add_render_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``render`` to the root CLI."""
    parser = subparsers.add_parser(
        "render",
        help="filmstrip PNG and GIF of a checkpoint's policy beside its reference clip",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT", help="a latest.pt")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    parser.add_argument("--clip", metavar="NAME", help="clip to play (default: the first)")
    parser.add_argument("--seconds", type=float, default=5.0, help="rollout length (5)")
    parser.add_argument("--fps", type=float, default=15.0, help="GIF frame rate, <= 30 (15)")
    parser.add_argument(
        "--size", type=_size, default=(320, 240), metavar="WxH", help="one panel (320x240)"
    )
    parser.add_argument("--frames", type=int, default=8, help="frames in the filmstrip (8)")
    parser.add_argument("--seed", type=int, default=0, help="env seed")
    parser.add_argument(
        "--start-phase", type=float, default=0.0, help="clip phase in [0, 1) to start at (0)"
    )
    parser.add_argument(
        "--reference-only", action="store_true", help="render the reference clip alone"
    )
    parser.add_argument(
        "--clips",
        nargs="+",
        metavar="NAME_OR_PATH",
        help="clip names or files (reference only; with a checkpoint: where its clips are now)",
    )
    parser.add_argument(
        "--env", choices=("humanoid", "planar"), default="humanoid", help="reference only"
    )
    parser.set_defaults(func=run_render)


__all__ = [
    "GL_BACKENDS",
    "Offscreen",
    "RenderError",
    "RenderResult",
    "add_render_command",
    "gl_backend",
    "render_checkpoint",
    "render_model",
    "render_reference",
    "run_render",
]
