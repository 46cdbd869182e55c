"""A tiny batched multi-clip env for learner tests: a point mass tracking a clip's speed.

Implements ``learner.envs.base.VecMultiClipEnv`` with numpy only, so loop tests run in
milliseconds. Clip i asks for speed ``speeds[i]``; the two reward terms are
``speed = exp(-2 (v - v_i)^2)`` and ``effort = exp(-a_1^2)``. The episode is truncated
after ``episode_len`` steps and terminated ("falls") when |v| > 4.
"""

from __future__ import annotations

import numpy as np

from learner.envs.base import EpisodeEnd, NextClip, VecStep


class FakeVecEnv:
    """Point masses with per-clip target speeds; calls ``next_clip`` in slot order on resets."""

    term_names = ("speed", "effort")

    def __init__(
        self,
        clip_names: list[str],
        num_envs: int,
        next_clip: NextClip,
        *,
        episode_len: int = 40,
        skill_one_hot: bool = True,
        success_threshold: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.clip_names = list(clip_names)
        self.num_envs = num_envs
        self.action_dim = 2
        self.skill_one_hot = skill_one_hot
        k = len(clip_names)
        self.obs_dim = 3 + (k if skill_one_hot else 0)
        self.term_weights = np.array([0.8, 0.2])
        self.speeds = np.linspace(-1.5, 1.5, k) if k > 1 else np.zeros(1)
        self.episode_len = episode_len
        self.success_threshold = success_threshold
        self._next_clip = next_clip
        self._rng = np.random.default_rng(seed)
        self.v = np.zeros(num_envs)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.clip = np.zeros(num_envs, dtype=np.int64)
        self._sum = np.zeros((num_envs, 2))
        self._sumsq = np.zeros((num_envs, 2))
        self._ret = np.zeros(num_envs)
        self.closed = False

    def _obs(self) -> np.ndarray:
        phase = 2 * np.pi * self.t / self.episode_len
        parts = [self.v[:, None], np.sin(phase)[:, None], np.cos(phase)[:, None]]
        if self.skill_one_hot:
            parts.append(np.eye(len(self.clip_names))[self.clip])
        return np.concatenate(parts, axis=1).astype(np.float32)

    def _reset_slot(self, i: int) -> None:
        self.clip[i] = self._next_clip()
        self.v[i] = self._rng.normal(0.0, 0.3)
        self.t[i] = 0
        self._sum[i] = 0.0
        self._sumsq[i] = 0.0
        self._ret[i] = 0.0

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every slot with clips from ``next_clip``."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        for i in range(self.num_envs):
            self._reset_slot(i)
        return self._obs()

    def step(self, actions: np.ndarray) -> VecStep:
        """Accelerate by a_0; a_1 is pure effort."""
        a = np.clip(actions, -1.0, 1.0)
        self.v = self.v + 0.5 * a[:, 0]
        self.t += 1
        speed_terms = np.exp(-2.0 * (self.v[:, None] - self.speeds[None, :]) ** 2)
        effort = np.exp(-(a[:, 1] ** 2))
        clip_terms = np.stack(
            [speed_terms, np.broadcast_to(effort[:, None], speed_terms.shape)], axis=-1
        ).astype(np.float32)
        rows = np.arange(self.num_envs)
        active = clip_terms[rows, self.clip]  # (N, T)
        active_reward = (active @ self.term_weights).astype(np.float32)
        self._sum += active
        self._sumsq += active.astype(np.float64) ** 2
        self._ret += active_reward
        clip_ids = self.clip.copy()
        terminated = np.abs(self.v) > 4.0
        truncated = (self.t >= self.episode_len) & ~terminated
        final_obs = self._obs()
        episodes: list[EpisodeEnd] = []
        for i in np.flatnonzero(terminated | truncated):
            n = int(self.t[i])
            mean = self._sum[i] / n
            m2 = self._sumsq[i] - n * mean**2
            success = float(not terminated[i] and self._ret[i] / n >= self.success_threshold)
            episodes.append(
                EpisodeEnd(
                    env_index=int(i),
                    clip_id=int(clip_ids[i]),
                    steps=n,
                    success=success,
                    tracking_return=float(self._ret[i]),
                    term_count=n,
                    term_mean=mean.copy(),
                    term_m2=np.maximum(m2, 0.0),
                )
            )
            self._reset_slot(int(i))
        return VecStep(
            obs=self._obs(),
            clip_terms=clip_terms,
            active_reward=active_reward,
            clip_ids=clip_ids,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            episodes=episodes,
        )

    def close(self) -> None:
        """Nothing to release."""
        self.closed = True
