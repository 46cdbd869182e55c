"""The planar walker env: contract, rewards, episode bookkeeping, clips and determinism."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from learner.envs.base import VecMultiClipEnv
from learner.envs.planar import (
    DEFAULT_CLIPS,
    PlanarConfig,
    PlanarGymEnv,
    PlanarVecEnv,
    WalkerGeometry,
    default_clips,
    feet_relative_to_root,
    load_walker_model,
)
from learner.envs.planar_rewards import (
    FEET,
    JOINT_ANGLES,
    JOINT_VELOCITIES,
    NUM_FEATURES,
    ROOT_FORWARD_VELOCITY,
    TERM_NAMES,
    TermScales,
    scale_matrix,
    tracking_terms,
)

K = len(DEFAULT_CLIPS)
T = len(TERM_NAMES)


def make_env(
    num_envs: int = 4,
    clip_ids: list[int] | None = None,
    config: PlanarConfig | None = None,
    seed: int = 0,
) -> tuple[PlanarVecEnv, list[int]]:
    """An env whose next_clip cycles through ``clip_ids`` and records every id handed out."""
    calls: list[int] = []
    ids = clip_ids if clip_ids is not None else list(range(K))

    def next_clip() -> int:
        clip_id = ids[len(calls) % len(ids)]
        calls.append(clip_id)
        return clip_id

    return PlanarVecEnv(None, num_envs, next_clip, config, seed=seed), calls


@pytest.fixture(scope="module")
def geometry() -> WalkerGeometry:
    return WalkerGeometry.from_model(load_walker_model())


def test_gym_wrapper_passes_check_env() -> None:
    env = PlanarGymEnv(config=PlanarConfig(max_episode_steps=20))
    check_env(env, skip_render_check=True)


def test_gym_wrapper_reports_clip_terms_clip_id_and_success() -> None:
    env = PlanarGymEnv(config=PlanarConfig(max_episode_steps=3))
    obs, info = env.reset(seed=1, options={"clip_id": 2})
    assert info["clip_id"] == 2
    assert env.observation_space.contains(obs)
    ends = []
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert info["clip_terms"].shape == (K, T)
        assert info["clip_id"] == 2
        assert 0.0 <= reward <= 1.0
        ends.append(terminated or truncated)
    assert ends[-1]
    assert info["success"] in (0.0, 1.0)


def test_dimensions_follow_the_config() -> None:
    base, _ = make_env(num_envs=3, config=PlanarConfig(skill_one_hot=False))
    full, _ = make_env(num_envs=3, config=PlanarConfig(skill_one_hot=True, speed_target=True))
    protocol = [*VecMultiClipEnv.__annotations__, "reset", "step", "close"]
    assert all(hasattr(full, name) for name in protocol)
    assert full.obs_dim == base.obs_dim + K + 1
    assert base.reset(seed=0).shape == (3, base.obs_dim)
    assert full.reset(seed=0).dtype == np.float32
    assert full.action_dim == 6
    assert full.clip_names == list(DEFAULT_CLIPS)
    assert full.term_names == ("pose", "velocity", "end_effector", "root")
    assert np.isclose(full.term_weights.sum(), 1.0)


def test_tracking_terms_are_one_at_zero_error_and_fall_as_the_error_grows() -> None:
    scale = scale_matrix(TermScales())
    state = np.random.default_rng(0).normal(size=(1, NUM_FEATURES))
    for term, features in enumerate((JOINT_ANGLES, JOINT_VELOCITIES, FEET)):
        errors = np.array([0.0, 0.05, 0.2, 1.0])
        reference = np.repeat(state[:, None, :], len(errors), axis=1)
        reference[0, :, features] += errors[:, None]
        terms = tracking_terms(state, reference, scale)[0]
        assert terms.shape == (len(errors), T)
        assert terms[0, term] == pytest.approx(1.0)
        assert np.all(np.diff(terms[:, term]) < 0)
        others = np.delete(terms, term, axis=1)
        assert np.allclose(others, 1.0)


def test_root_term_falls_with_forward_speed_error() -> None:
    scale = scale_matrix(TermScales())
    state = np.zeros((1, NUM_FEATURES))
    reference = np.zeros((1, 3, NUM_FEATURES))
    reference[0, :, ROOT_FORWARD_VELOCITY] = [0.0, 1.2, 3.0]
    root = tracking_terms(state, reference, scale)[0, :, TERM_NAMES.index("root")]
    assert root[0] == pytest.approx(1.0)
    assert root[0] > root[1] > root[2] > 0.0


@pytest.mark.parametrize("clip_id", range(K))
def test_walker_on_the_active_reference_scores_one_on_every_term(clip_id: int) -> None:
    env, _ = make_env(num_envs=3, clip_ids=[clip_id])
    env.reset(seed=clip_id)  # reference-state initialisation puts it on the clip
    terms = env.current_terms()
    assert np.allclose(terms[:, clip_id], 1.0, atol=1e-6)
    env.step(np.zeros((3, 6)))
    env.step(np.zeros((3, 6)))
    env.set_reference_state(0, clip_id)
    assert np.allclose(env.current_terms()[0, clip_id], 1.0, atol=1e-6)


def test_every_clip_is_scored_at_its_own_phase() -> None:
    env, _ = make_env(num_envs=K, clip_ids=[1])  # everybody's active clip is Walk
    env.reset(seed=3)
    for _ in range(7):
        result = env.step(np.zeros((K, 6)))
    assert result.clip_terms.shape == (K, K, T)
    assert result.clip_terms.dtype == np.float32
    assert np.all((result.clip_terms >= 0.0) & (result.clip_terms <= 1.0))
    elapsed = env.steps * env.config.control_dt
    periods = np.array([clip.period for clip in env.clips])
    expected = (env.phase0[:, None] + elapsed[:, None] / periods[None, :]) % 1.0
    assert np.allclose(env.clip_phases(), expected)
    for i in range(K):  # walker i copies clip i, which is only active for i == 1
        env.set_reference_state(i, i)
    terms = env.current_terms()
    assert np.allclose(terms[np.arange(K), np.arange(K)], 1.0, atol=1e-6)
    assert np.all(terms[2, [1, 3], TERM_NAMES.index("root")] < 0.5)  # Back is not Walk or Run


def test_standing_on_idle_earns_the_max_reward_whatever_the_active_clip() -> None:
    env, _ = make_env(num_envs=K, clip_ids=list(range(K)))
    env.reset(seed=0)
    for i in range(K):
        env.set_reference_state(i, DEFAULT_CLIPS.index("Idle"))
    rewards = env.current_terms() @ env.term_weights.astype(np.float32)  # (N, K)
    assert np.allclose(rewards.max(axis=1), 1.0, atol=1e-6)
    active = rewards[np.arange(K), env.clip]
    assert np.all(active[1:] < 0.7)  # the moving clips themselves are poorly tracked


def test_autoreset_reports_episodes_and_term_moments() -> None:
    n, limit, order = 3, 6, [0, 1, 3, 2]
    config = PlanarConfig(max_episode_steps=limit)
    env, calls = make_env(num_envs=n, clip_ids=order, config=config)
    env.reset(seed=5)
    assert calls == order[:n]
    slot_clip = list(calls)  # clip handed to each slot by its latest next_clip call
    active_terms: list[list[np.ndarray]] = [[] for _ in range(n)]
    active_rewards: list[list[float]] = [[] for _ in range(n)]
    episodes = 0
    for _ in range(2 * limit + 1):
        result = env.step(np.zeros((n, 6)))
        assert list(result.clip_ids) == slot_clip
        for i in range(n):
            active_terms[i].append(result.clip_terms[i, slot_clip[i]].astype(np.float64))
            active_rewards[i].append(float(result.active_reward[i]))
        done = np.flatnonzero(result.terminated | result.truncated)
        assert [e.env_index for e in result.episodes] == list(done)
        for episode in result.episodes:
            i = episode.env_index
            x = np.array(active_terms[i])
            assert episode.clip_id == slot_clip[i]
            assert episode.steps == episode.term_count == len(x) <= limit
            assert np.allclose(episode.term_mean, x.mean(axis=0))
            assert np.allclose(episode.term_m2, ((x - x.mean(axis=0)) ** 2).sum(axis=0))
            assert episode.tracking_return == pytest.approx(sum(active_rewards[i]), rel=1e-5)
            direct_mean = np.mean(x @ env.term_weights)
            expect = float(not result.terminated[i] and direct_mean >= config.success_threshold)
            assert episode.success == expect
            slot_clip[i] = calls[n + episodes]  # autoreset asked next_clip, in slot order
            episodes += 1
            active_terms[i], active_rewards[i] = [], []
        assert list(env.clip) == slot_clip
        assert np.all(env.steps[done] == 0)
    assert episodes >= 2 * n  # every slot finished at least two episodes
    assert len(calls) == n + episodes
    assert calls == [order[j % len(order)] for j in range(len(calls))]


def test_truncation_at_the_time_limit_gives_final_obs() -> None:
    env, _ = make_env(num_envs=2, clip_ids=[0], config=PlanarConfig(max_episode_steps=2))
    env.reset(seed=0)
    env.step(np.zeros((2, 6)))
    result = env.step(np.zeros((2, 6)))
    assert np.all(result.truncated) and not np.any(result.terminated)
    assert [e.steps for e in result.episodes] == [2, 2]
    phase_sin = env.obs_dim - K - 2  # obs after reset restart the phase; final_obs does not
    assert not np.allclose(result.final_obs, result.obs)
    assert np.allclose(result.obs[:, phase_sin], np.sin(2 * np.pi * env.phase0))


def test_falling_terminates_the_episode() -> None:
    env, _ = make_env(num_envs=1, clip_ids=[1], config=PlanarConfig(max_episode_steps=300))
    env.reset(seed=0)
    collapse = np.tile([-1.0, 1.0, 0.0], (1, 2))  # hips and knees fully flexed
    for _ in range(120):
        result = env.step(collapse)
        if result.episodes:
            break
    assert result.terminated[0] and not result.truncated[0]
    (episode,) = result.episodes
    assert episode.success == 0.0 and episode.steps < 120
    pitch = result.final_obs[0, 13]
    fell = result.final_obs[0, 12] < env.config.fall_height or abs(pitch) > env.config.fall_pitch
    assert fell


def test_same_seed_gives_the_same_rollout() -> None:
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(40, 4, 6))
    rollouts = []
    for _ in range(2):
        env, calls = make_env(num_envs=4, config=PlanarConfig(max_episode_steps=15), seed=11)
        obs = [env.reset(seed=7)]
        terms = []
        for a in actions:
            result = env.step(a)
            obs.append(result.obs)
            terms.append(result.clip_terms)
        rollouts.append((np.array(obs), np.array(terms), calls))
    assert np.array_equal(rollouts[0][0], rollouts[1][0])
    assert np.array_equal(rollouts[0][1], rollouts[1][1])
    assert rollouts[0][2] == rollouts[1][2]
    other, _ = make_env(num_envs=4, seed=11)
    assert not np.array_equal(other.reset(seed=8), rollouts[0][0][0])


def test_feet_kinematics_match_mujoco(geometry: WalkerGeometry) -> None:
    model = load_walker_model()
    data = mujoco.MjData(model)
    rng = np.random.default_rng(2)
    for _ in range(5):
        data.qpos[2] = rng.uniform(-0.5, 0.5)
        data.qpos[3:] = rng.uniform(geometry.joint_low, geometry.joint_high)
        mujoco.mj_kinematics(model, data)
        root = data.body("torso").xpos
        expected = np.concatenate(
            [(data.site(f"foot_{leg}").xpos - root)[[0, 2]] for leg in ("r", "l")]
        )
        ours = feet_relative_to_root(data.qpos[None, 2], data.qpos[None, 3:], geometry)[0]
        assert np.allclose(ours, expected, atol=1e-9)


def test_clips_have_the_note_speeds_and_relations(geometry: WalkerGeometry) -> None:
    clips = default_clips(geometry, num_frames=64)
    speeds = {name: clip.mean_speed for name, clip in clips.items()}
    assert speeds == pytest.approx(
        {"Idle": 0.0, "Walk": 1.2, "Back": -0.8, "Run": 3.0, "Sprint": 4.5}
    )
    walk, back = clips["Walk"], clips["Back"]
    assert np.allclose(back.joint_angles[1:], walk.joint_angles[:0:-1])  # played backwards
    assert np.allclose(back.joint_velocities[1:], -walk.joint_velocities[:0:-1] * 2 / 3)
    run, sprint = clips["Run"], clips["Sprint"]
    assert np.allclose(sprint.joint_angles, run.joint_angles)
    assert sprint.period == pytest.approx(run.period / 1.5)
    for clip in clips.values():
        assert np.all(clip.joint_angles >= geometry.joint_low - 1e-9)
        assert np.all(clip.joint_angles <= geometry.joint_high + 1e-9)


def test_walk_reference_keeps_a_flat_foot_on_the_ground(geometry: WalkerGeometry) -> None:
    walk = default_clips(geometry, num_frames=128)["Walk"]
    site_drop = geometry.sole_drop + geometry.foot_site[1]  # site height of a flat foot
    heights = walk.root_height[:, None] + walk.feet[:, [1, 3]]
    assert np.all(heights >= site_drop - 1e-6)  # never below the ground
    assert np.allclose(heights.min(axis=1), site_drop, atol=1e-6)  # always one foot down


def test_unknown_clip_and_bad_clip_id_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown planar clip"):
        PlanarVecEnv(["Moonwalk"], 1, lambda: 0)
    env = PlanarVecEnv(["Idle", "Walk"], 1, lambda: 2)
    with pytest.raises(ValueError, match="next_clip returned 2"):
        env.reset(seed=0)


def test_unstable_simulation_ends_every_episode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # MuJoCo appends its warning to ./MUJOCO_LOG.TXT
    env, _ = make_env(num_envs=3, clip_ids=[0])
    env.reset(seed=0)
    env.data.qvel[0] = 1e12  # MuJoCo detects it and resets the whole model
    result = env.step(np.zeros((3, 6)))
    assert result.terminated.all()
    assert len(result.episodes) == 3
    assert np.isfinite(result.obs).all()
