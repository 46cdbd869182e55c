"""The humanoid imitation env: contract, reference rewards, resets, falls, episodes, obs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from learner import clips as cl
from learner import humanoid as hm
from learner import quaternions as quat
from learner.envs.base import VecMultiClipEnv
from learner.envs.humanoid import (
    STATE_DIM,
    HumanoidConfig,
    HumanoidGymEnv,
    HumanoidVecEnv,
)
from learner.rewards import TERM_NAMES

DEEPMIMIC = Path(__file__).resolve().parents[3] / "shared" / "data" / "deepmimic"
BUILTIN = HumanoidConfig(clip_source="builtin")


def _cycle(ids: list[int]) -> tuple[Callable[[], int], list[int]]:
    """A next_clip that hands out ``ids`` round-robin and records every call."""
    calls: list[int] = []

    def next_clip() -> int:
        clip = ids[len(calls) % len(ids)]
        calls.append(clip)
        return clip

    return next_clip, calls


def _env(
    num_envs: int = 3, config: HumanoidConfig = BUILTIN, ids: list[int] | None = None
) -> HumanoidVecEnv:
    next_clip, _ = _cycle(ids or [0, 1, 2, 3, 4])
    return HumanoidVecEnv(None, num_envs, next_clip, config, seed=0)


def test_batched_env_meets_the_contract() -> None:
    env: VecMultiClipEnv = _env()
    assert env.clip_names == list(cl.FIVE_CLIPS)
    assert env.term_names == TERM_NAMES
    assert env.action_dim == hm.NUM_ACTUATORS
    # state, phase, the reference 1-3 steps ahead, one-hot
    assert env.obs_dim == STATE_DIM + 2 + 3 * STATE_DIM + 5
    np.testing.assert_allclose(env.term_weights.sum(), 1.0)


def test_gym_wrapper_passes_the_env_checker() -> None:
    env = HumanoidGymEnv(config=BUILTIN)
    check_env(env, skip_render_check=True)
    _, info = env.reset(seed=3, options={"clip_id": 2})
    assert info["clip_id"] == 2
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert info["clip_terms"].shape == (5, len(TERM_NAMES))
    assert 0.0 <= reward <= 1.0


def test_reset_starts_every_slot_on_its_clip_reference() -> None:
    next_clip, calls = _cycle([4, 1, 2])
    env = HumanoidVecEnv(None, 3, next_clip, BUILTIN, seed=1)
    obs = env.reset()
    assert calls == [4, 1, 2]
    np.testing.assert_array_equal(env.clip, [4, 1, 2])
    assert obs.shape == (3, env.obs_dim) and obs.dtype == np.float32
    terms = env.current_terms()
    np.testing.assert_allclose(terms[np.arange(3), env.clip], 1.0, atol=1e-6)
    # random phases: the three slots did not start at the same phase fraction
    assert len(set(np.round(env.phase0, 6))) == 3


def test_reward_is_one_on_every_clip_reference_and_falls_with_pose_error() -> None:
    env = _env(num_envs=1)
    env.reset()
    env.step(np.zeros((1, env.action_dim)))  # advance the phases off the reset frame
    idx = hm.MODEL_INDEX
    knee = idx.hinge_qpos[idx.hinge_order(["right_knee"])[0]]
    for clip_id in range(5):
        env.set_reference_state(0, clip_id)
        np.testing.assert_allclose(env.current_terms()[0, clip_id], 1.0, atol=1e-6)
        previous = np.ones(len(TERM_NAMES))
        for error in (0.1, 0.3, 0.6):
            env.set_reference_state(0, clip_id)
            env.data.qpos[knee] -= error
            mujoco.mj_kinematics(env.model, env.data)
            terms = env.current_terms()[0, clip_id]
            assert terms[0] < previous[0]  # pose
            assert terms[2] < previous[2]  # end effector (the foot moved)
            assert terms[1] == pytest.approx(1.0, abs=1e-6)  # velocities untouched
            previous = terms


def test_step_reports_terms_of_every_clip_and_the_active_weighted_reward() -> None:
    env = _env(num_envs=4)
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    step = env.step(rng.uniform(-1, 1, size=(4, env.action_dim)))
    assert step.clip_terms.shape == (4, 5, len(TERM_NAMES))
    assert step.clip_terms.dtype == np.float32 and step.active_reward.dtype == np.float32
    assert np.all((step.clip_terms >= 0) & (step.clip_terms <= 1))
    active = step.clip_terms[np.arange(4), step.clip_ids]
    np.testing.assert_allclose(step.active_reward, active @ env.term_weights, rtol=1e-6)
    np.testing.assert_array_equal(step.clip_ids, [0, 1, 2, 3])
    assert np.all(np.isfinite(step.obs))


def test_reference_actions_track_better_than_random_actions() -> None:
    rewards = {}
    config = dataclasses.replace(BUILTIN, action_mode="absolute")
    for name in ("reference", "random"):
        env = _env(num_envs=4, config=config, ids=[1])
        env.reset(seed=2)
        rng = np.random.default_rng(0)
        total = 0.0
        for _ in range(10):
            if name == "reference":
                actions = env.reference_actions()
            else:
                actions = rng.uniform(-1, 1, (4, env.action_dim))
            total += env.step(actions).active_reward.mean()
        rewards[name] = total / 10
    assert rewards["reference"] > rewards["random"] + 0.2


def test_a_fall_terminates_reports_the_episode_and_resets_the_slot() -> None:
    next_clip, calls = _cycle([1, 3])
    env = HumanoidVecEnv(None, 2, next_clip, BUILTIN, seed=0)
    env.reset()
    env._qpos[0, 2] = 0.1  # lying on its back: root and chest spheres on the floor
    env._qpos[0, hm.ROOT_QUAT] = quat.from_axis_angle(np.array([0.0, 1.0, 0.0]), -np.pi / 2)
    env._qvel[0] = 0.0
    step = env.step(np.zeros((2, env.action_dim)))
    assert step.terminated.tolist() == [True, False]
    assert not step.truncated.any()
    (episode,) = step.episodes
    assert (episode.env_index, episode.clip_id, episode.steps) == (0, 1, 1)
    assert episode.success == 0.0
    assert episode.term_count == 1 and episode.term_mean.shape == (len(TERM_NAMES),)
    assert calls == [1, 3, 1]  # the slot drew its next clip at once
    assert env.steps[0] == 0 and env.clip[0] == 1
    # the new episode starts on its reference; final_obs is the pre-reset observation
    np.testing.assert_allclose(env.current_terms()[0, 1], 1.0, atol=1e-6)
    assert not np.array_equal(step.final_obs[0], step.obs[0])


def test_time_limit_truncates_and_counts_success() -> None:
    config = HumanoidConfig(clip_source="builtin", max_episode_steps=4, success_threshold=0.0)
    env = _env(num_envs=2, config=config, ids=[0])
    env.reset()
    rewards = []
    for _ in range(4):
        step = env.step(env.reference_actions())
        rewards.append(step.active_reward)
    assert step.truncated.all() and not step.terminated.any()
    assert [e.success for e in step.episodes] == [1.0, 1.0]
    for episode in step.episodes:
        assert episode.steps == episode.term_count == 4
        assert episode.tracking_return == pytest.approx(
            float(np.sum([r[episode.env_index] for r in rewards])), rel=1e-5
        )


def test_observation_carries_phase_skill_one_hot_and_speed_target() -> None:
    config = HumanoidConfig(
        clip_source="builtin", skill_one_hot=True, speed_target=True, future_frames=()
    )
    env = _env(num_envs=5, config=config)
    obs = env.reset()
    assert env.obs_dim == STATE_DIM + 2 + 5 + 1
    one_hot = obs[:, STATE_DIM + 2 : STATE_DIM + 7]
    np.testing.assert_array_equal(one_hot, np.eye(5, dtype=np.float32)[env.clip])
    speeds = obs[:, -1]
    assert speeds[2] < 0 < speeds[1] < speeds[3] < speeds[4]  # Back, Walk, Run, Sprint
    assert abs(speeds[0]) < 1e-6  # Idle
    phase = obs[:, STATE_DIM : STATE_DIM + 2]
    np.testing.assert_allclose(np.hypot(phase[:, 0], phase[:, 1]), 1.0, rtol=1e-6)
    plain = _env(
        num_envs=1,
        config=HumanoidConfig(clip_source="builtin", skill_one_hot=False, future_frames=()),
    )
    assert plain.obs_dim == STATE_DIM + 2


def test_observation_does_not_depend_on_position_or_heading() -> None:
    env = _env(num_envs=1)
    env.reset()
    before = env._observe(*env.state())
    root = env._qpos[0]
    root[:2] += [3.0, -2.0]
    turn = np.array([np.cos(0.4), 0.0, 0.0, np.sin(0.4)])  # 0.8 rad about z
    root[hm.ROOT_QUAT] = quat.multiply(turn, root[hm.ROOT_QUAT])
    vel = env._qvel[0]
    vel[:3] = quat.rotate(turn, vel[:3])
    mujoco.mj_kinematics(env.model, env.data)
    np.testing.assert_allclose(env._observe(*env.state()), before, atol=1e-5)


def test_all_clip_phases_advance_with_time() -> None:
    env = _env(num_envs=2)
    env.reset()
    before = env.clip_phases()
    env.step(np.zeros((2, env.action_dim)))
    step = env.config.control_dt / np.array([t.duration for t in env.tables])
    np.testing.assert_allclose((env.clip_phases() - before) % 1.0, np.broadcast_to(step, (2, 5)))


def test_env_takes_clip_names_files_and_motion_clips(tmp_path: Path) -> None:
    walk = cl.builtin_clips()["walk"]
    cl.save_npz(walk.renamed("my_walk"), tmp_path / "my_walk.npz")
    clips: list[str | cl.MotionClip] = [
        "Idle",
        str(tmp_path / "my_walk.npz"),
        walk.time_scaled(0.5, "slow_walk"),
    ]
    env = HumanoidVecEnv(clips, 1, lambda: 2, BUILTIN, seed=0)
    assert env.clip_names == ["Idle", "my_walk", "slow_walk"]
    env.reset()
    assert env.step(np.zeros((1, env.action_dim))).clip_terms.shape == (1, 3, 4)
    with pytest.raises(ValueError, match="unknown clip"):
        HumanoidVecEnv(["Moonwalk"], 1, lambda: 0, BUILTIN, seed=0)


def test_next_clip_out_of_range_is_an_error() -> None:
    env = HumanoidVecEnv(None, 1, lambda: 7, BUILTIN, seed=0)
    with pytest.raises(ValueError, match="next_clip returned 7"):
        env.reset()


@pytest.mark.skipif(
    not (DEEPMIMIC / "humanoid3d_walk.txt").is_file(), reason="../shared/data not present"
)
def test_env_runs_on_the_real_deepmimic_clips() -> None:
    config = HumanoidConfig(clip_source=str(DEEPMIMIC))
    env = _env(num_envs=2, config=config)
    env.reset(seed=0)
    assert [t.name for t in env.tables] == list(cl.FIVE_CLIPS)
    np.testing.assert_allclose(env.current_terms()[np.arange(2), env.clip], 1.0, atol=1e-6)
    for _ in range(3):
        step = env.step(env.reference_actions())
    assert np.all(np.isfinite(step.obs))
    assert step.active_reward.min() > 0.3
