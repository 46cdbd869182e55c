"""Motion clips: loading, interpolation, derived clips, built-in gaits, reference tables."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from learner import clips as cl
from learner import humanoid as hm
from learner import quaternions as quat

DEEPMIMIC = Path(__file__).resolve().parents[3] / "shared" / "data" / "deepmimic"
needs_data = pytest.mark.skipif(
    not (DEEPMIMIC / "humanoid3d_walk.txt").is_file(), reason="../shared/data not present"
)


@pytest.fixture(scope="module")
def kinematics() -> hm.Kinematics:
    return hm.Kinematics()


@pytest.fixture(scope="module")
def builtin() -> dict[str, cl.MotionClip]:
    return cl.builtin_clips()


@pytest.fixture(scope="module")
def walk(builtin: dict[str, cl.MotionClip]) -> cl.MotionClip:
    """A real walk when ../shared/data is present, else the built-in one."""
    if (DEEPMIMIC / "humanoid3d_walk.txt").is_file():
        return cl.load_deepmimic(DEEPMIMIC / "humanoid3d_walk.txt")
    return builtin["walk"]


def _same_rotations(a: np.ndarray, b: np.ndarray, atol: float = 1e-9) -> bool:
    return bool(np.all(quat.angle_between(a, b) < atol))


def _assert_same_pose(a: np.ndarray, b: np.ndarray, atol: float = 1e-9) -> None:
    idx = hm.MODEL_INDEX
    np.testing.assert_allclose(a[..., :3], b[..., :3], atol=atol)
    np.testing.assert_allclose(a[..., idx.hinge_qpos], b[..., idx.hinge_qpos], atol=atol)
    assert _same_rotations(a[..., hm.ROOT_QUAT], b[..., hm.ROOT_QUAT], atol=1e-6)
    assert _same_rotations(a[..., idx.ball_qpos], b[..., idx.ball_qpos], atol=1e-6)


# --- loading ----------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize(("name", "frames"), [("walk", 39), ("jog", 26), ("run", 25)])
def test_deepmimic_clip_loads_frames_rate_and_loop(name: str, frames: int) -> None:
    clip = cl.load_deepmimic(DEEPMIMIC / f"humanoid3d_{name}.txt")
    assert clip.name == name
    assert clip.qpos.shape == (frames, hm.NQ)
    assert clip.fps == pytest.approx(30.0, rel=1e-3)
    assert clip.loop
    norms = np.linalg.norm(clip.qpos[:, hm.MODEL_INDEX.ball_qpos], axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-12)


def _write_deepmimic(path: Path, qpos: np.ndarray, durations: list[float], loop: str) -> None:
    pose = hm.qpos_to_deepmimic_pose(qpos)
    frames = np.concatenate([np.array([*durations, 0.0])[:, None], pose], axis=1)
    path.write_text(json.dumps({"Loop": loop, "Frames": frames.tolist()}))


def test_deepmimic_file_round_trips_to_the_same_poses(
    tmp_path: Path, builtin: dict[str, cl.MotionClip]
) -> None:
    walk = builtin["walk"]
    path = tmp_path / "humanoid3d_stroll.txt"
    _write_deepmimic(path, walk.qpos, [1 / walk.fps] * (walk.num_frames - 1), "wrap")
    clip = cl.load_clip(path)
    assert (clip.name, clip.loop) == ("stroll", True)
    assert clip.fps == pytest.approx(walk.fps)
    np.testing.assert_allclose(clip.qpos, walk.qpos, atol=1e-12)


def test_deepmimic_file_with_uneven_frame_times_is_resampled(
    tmp_path: Path, builtin: dict[str, cl.MotionClip]
) -> None:
    qpos = builtin["run"].qpos[:5]
    path = tmp_path / "uneven.txt"
    _write_deepmimic(path, qpos, [0.02, 0.04, 0.02, 0.04], "none")
    clip = cl.load_deepmimic(path)
    assert not clip.loop
    assert clip.fps == pytest.approx(1 / 0.03)
    assert clip.num_frames == 5
    # new frames at 0, .03, .06, .09, .12 s; the old ones were at 0, .02, .06, .08, .12 s
    _assert_same_pose(clip.qpos[[0, 2, 4]], qpos[[0, 2, 4]])
    expected = hm.interpolate_qpos(qpos[1], qpos[2], np.array(0.25))
    _assert_same_pose(clip.qpos[1], expected)


def test_npz_round_trip_keeps_the_clip(tmp_path: Path, builtin: dict[str, cl.MotionClip]) -> None:
    clip = builtin["run"]
    path = tmp_path / "run.npz"
    cl.save_npz(clip, path)
    loaded = cl.load_clip(path)
    assert (loaded.name, loaded.fps, loaded.loop) == (clip.name, clip.fps, clip.loop)
    np.testing.assert_array_equal(loaded.qpos, clip.qpos)


def test_npz_with_another_joint_order_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    names = np.array(list(reversed(hm.JOINT_NAMES)))
    np.savez(path, fps=30.0, qpos=np.tile(hm.rest_qpos(), (3, 1)), joint_names=names)
    with pytest.raises(ValueError, match="joint_names"):
        cl.load_npz(path)


def test_unknown_clip_format_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown clip format"):
        cl.load_clip(tmp_path / "walk.bvh")


def test_clip_with_wrong_pose_width_is_rejected() -> None:
    with pytest.raises(ValueError, match="qpos"):
        cl.MotionClip("bad", 30.0, np.zeros((5, 10)))


def test_find_motion_files_reads_pybullet_data_or_returns_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    motions = tmp_path / "data" / "motions"
    motions.mkdir(parents=True)
    (motions / "humanoid3d_walk.txt").write_text("{}")
    (motions / "other_clip.txt").write_text("{}")
    fake = types.ModuleType("pybullet_data")
    fake.getDataPath = lambda: str(tmp_path)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pybullet_data", fake)
    assert cl.find_motion_files() == {"walk": motions / "humanoid3d_walk.txt"}
    monkeypatch.setitem(sys.modules, "pybullet_data", None)  # import raises ImportError
    assert cl.find_motion_files() == {}


# --- sampling ---------------------------------------------------------------------------


def test_sampling_at_frame_times_returns_the_frames(walk: cl.MotionClip) -> None:
    times = np.arange(walk.num_frames - 1) / walk.fps
    _assert_same_pose(walk.sample(times), walk.qpos[:-1])


def test_sampling_between_frames_slerps_rotations(walk: cl.MotionClip) -> None:
    i = 5
    mid = walk.sample((i + 0.25) / walk.fps)[0]
    a, b = walk.qpos[i], walk.qpos[i + 1]
    idx = hm.MODEL_INDEX
    # slerp(a, b, t) = a exp(t log(a^-1 b))
    qa, qb = a[idx.ball_qpos], b[idx.ball_qpos]
    step = quat.to_rotvec(quat.multiply(quat.conjugate(qa), qb))
    expected = quat.multiply(qa, quat.from_rotvec(0.25 * step))
    assert _same_rotations(mid[idx.ball_qpos], expected, atol=1e-7)
    np.testing.assert_allclose(mid[:3], a[:3] + 0.25 * (b[:3] - a[:3]))


def test_looping_clip_repeats_shifted_by_the_cycle_displacement(walk: cl.MotionClip) -> None:
    t = np.array([0.1, 0.5, 0.9]) * walk.duration
    later = walk.sample(t + 2 * walk.duration)
    now = walk.sample(t)
    offset = walk.qpos[-1, :2] - walk.qpos[0, :2]
    np.testing.assert_allclose(later[:, :2], now[:, :2] + 2 * offset, atol=1e-9)
    np.testing.assert_allclose(later[:, 2:], now[:, 2:], atol=1e-9)


def test_non_looping_clip_holds_its_ends(walk: cl.MotionClip) -> None:
    once = cl.MotionClip("once", walk.fps, walk.qpos, loop=False)
    _assert_same_pose(once.sample(-1.0)[0], once.qpos[0])
    _assert_same_pose(once.sample(once.duration + 3.0)[0], once.qpos[-1])
    # at the ends the velocity is the one-sided rate over the last half frame
    end = once.velocities(once.duration)[0]
    inside = once.velocities(once.duration - 0.25 / once.fps)[0]
    np.testing.assert_allclose(end, inside, atol=1e-9)


def test_velocities_are_the_frame_to_frame_rates(walk: cl.MotionClip) -> None:
    i = 7
    qvel = walk.velocities((i + 0.5) / walk.fps)[0]
    a, b = walk.qpos[i], walk.qpos[i + 1]
    idx = hm.MODEL_INDEX
    np.testing.assert_allclose(qvel[:3], (b[:3] - a[:3]) * walk.fps, atol=1e-9)
    np.testing.assert_allclose(
        qvel[idx.hinge_qvel], (b[idx.hinge_qpos] - a[idx.hinge_qpos]) * walk.fps, atol=1e-9
    )
    # a ball joint turning at a constant local rate w for one frame: b = a exp(w / fps)
    rotated = quat.multiply(a[idx.ball_qpos], quat.from_rotvec(qvel[idx.ball_qvel] / walk.fps))
    assert _same_rotations(rotated, b[idx.ball_qpos], atol=1e-7)


def test_reversed_clip_plays_backwards_with_negated_velocities(walk: cl.MotionClip) -> None:
    back = walk.reversed("Back")
    t = np.array([0.13, 0.4, 0.77]) * walk.duration
    _assert_same_pose(back.sample(t), walk.sample(walk.duration - t))
    np.testing.assert_allclose(back.velocities(t), -walk.velocities(walk.duration - t), atol=1e-7)
    assert back.duration == walk.duration


def test_time_scaled_clip_is_faster_by_its_rate(walk: cl.MotionClip) -> None:
    fast = walk.time_scaled(1.5, "Fast")
    t = np.array([0.1, 0.3, 0.6]) * fast.duration
    _assert_same_pose(fast.sample(t), walk.sample(1.5 * t))
    np.testing.assert_allclose(fast.velocities(t), 1.5 * walk.velocities(1.5 * t), atol=1e-7)
    assert fast.duration == pytest.approx(walk.duration / 1.5)


# --- built-in and derived clips ---------------------------------------------------------


def test_builtin_gaits_keep_a_foot_on_the_ground_and_close_their_cycle(
    builtin: dict[str, cl.MotionClip], kinematics: hm.Kinematics
) -> None:
    for clip in builtin.values():
        assert clip.loop
        soles = kinematics.sole_height(clip.qpos)
        assert soles.min() == pytest.approx(0.0, abs=1e-9)
        np.testing.assert_allclose(clip.qpos[-1, 2:], clip.qpos[0, 2:], atol=1e-12)
    walk = cl.reference_table(builtin["walk"], kinematics)
    run = cl.reference_table(builtin["run"], kinematics)
    assert 0.5 < walk.mean_forward_speed < run.mean_forward_speed


def _five_sources() -> list[str]:
    sources = ["builtin"]
    if (DEEPMIMIC / "humanoid3d_walk.txt").is_file():
        sources.append(str(DEEPMIMIC))
    return sources


@pytest.mark.parametrize("source", _five_sources())
def test_five_clip_example_has_idle_walk_back_run_sprint(
    source: str, kinematics: hm.Kinematics
) -> None:
    clips = cl.five_clip_example(source, sprint_rate=1.4)
    assert [c.name for c in clips] == list(cl.FIVE_CLIPS)
    by_name = {c.name: c for c in clips}
    walk, back = by_name["Walk"], by_name["Back"]
    np.testing.assert_array_equal(back.qpos, walk.qpos[::-1])
    assert by_name["Sprint"].fps == pytest.approx(1.4 * by_name["Run"].fps)
    speeds = {c.name: cl.reference_table(c, kinematics).mean_forward_speed for c in clips}
    assert speeds["Back"] < -0.3
    assert abs(speeds["Idle"]) < 1e-9
    assert 0.3 < speeds["Walk"] < speeds["Run"] < speeds["Sprint"]
    # Idle: a held pose, symmetric legs, both soles on the ground, only a small sway
    idle = by_name["Idle"]
    idx = hm.MODEL_INDEX
    right, left = idx.ball_order(["right_hip", "left_hip"])
    mirror = np.array([1.0, -1.0, 1.0, -1.0])
    assert _same_rotations(
        idle.qpos[:, idx.ball_qpos[left]], idle.qpos[:, idx.ball_qpos[right]] * mirror
    )
    assert np.ptp(idle.qpos[:, :3], axis=0).max() == 0.0
    assert kinematics.sole_height(idle.qpos[:1])[0] == pytest.approx(0.0, abs=1e-9)
    sway = quat.angle_between(idle.qpos[:, idx.ball_qpos], idle.qpos[:1, idx.ball_qpos])
    assert 0.0 < sway.max() < 0.1


def test_five_clip_example_reads_native_files_from_a_directory(
    tmp_path: Path, builtin: dict[str, cl.MotionClip]
) -> None:
    cl.save_npz(builtin["walk"], tmp_path / "walk.npz")
    cl.save_npz(builtin["run"], tmp_path / "humanoid3d_run.npz")
    clips = cl.five_clip_example(tmp_path)
    np.testing.assert_array_equal(clips[1].qpos, builtin["walk"].qpos)
    np.testing.assert_array_equal(clips[3].qpos, builtin["run"].qpos)


def test_five_clip_example_without_a_run_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run"):
        cl.five_clip_example(tmp_path)


# --- reference tables -------------------------------------------------------------------


def test_reference_table_holds_samples_velocities_and_kinematics(
    walk: cl.MotionClip, kinematics: hm.Kinematics
) -> None:
    table = cl.reference_table(walk, kinematics, rate=60.0)
    assert table.num_rows == round(walk.duration * 60.0)
    np.testing.assert_allclose(table.times[1] - table.times[0], walk.duration / table.num_rows)
    np.testing.assert_array_equal(table.qpos, walk.sample(table.times))
    np.testing.assert_array_equal(table.qvel, walk.velocities(table.times))
    ee = kinematics.end_effectors(table.qpos)
    feats, quats = hm.tracked_state(table.qpos, table.qvel, ee)
    np.testing.assert_array_equal(table.features, feats)
    np.testing.assert_array_equal(table.quats, quats)


def test_looping_clip_velocities_do_not_difference_across_the_seam() -> None:
    from learner.clips import load_shipped

    walk = load_shipped("walk")  # its last frame differs from its first (0.5 rad at a joint)
    assert walk.loop
    qvel = walk.velocities(np.array([0.0, 1e-6, walk.duration - 1e-6, walk.duration]))
    inside = walk.velocities(np.array([0.5 / walk.fps, walk.duration - 0.5 / walk.fps]))
    # at the seam the velocity is the one-sided difference inside the cycle, not a spike
    np.testing.assert_allclose(qvel[0], inside[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(qvel[2], inside[1], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(qvel[3], qvel[0], rtol=1e-6, atol=1e-6)  # the next cycle
    assert np.abs(qvel[:, 6:]).max() < 6.0
