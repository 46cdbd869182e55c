"""One slot of a batched env as a ``gymnasium.Env`` (for ``check_env``, SB3 and other trainers).

``reset(options={"clip_id": i})`` picks the clip, else it is uniform from ``np_random``.
``info`` carries ``clip_terms`` (K, T) and ``clip_id``; at the end of an episode also
``success`` and ``tracking_return``. The reward is the active clip's weighted tracking
reward; at an episode's end the observation returned is the final one (not the reset's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from learner.envs.base import NextClip, VecMultiClipEnv


class SingleClipGymEnv(gym.Env[np.ndarray, np.ndarray]):
    """A 1-slot batched env behind the gymnasium API."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self, make_vec: Callable[[NextClip], VecMultiClipEnv]) -> None:
        """``make_vec(next_clip)`` builds the 1-slot batched env that takes clips from here."""
        self._clip_id = 0
        self.vec = make_vec(self._pending_clip)
        if self.vec.num_envs != 1:
            raise ValueError(f"the wrapped env must have one slot, got {self.vec.num_envs}")
        self.clip_names = self.vec.clip_names
        bound = np.finfo(np.float32).max
        self.observation_space = gym.spaces.Box(
            -bound, bound, shape=(self.vec.obs_dim,), dtype=np.float32
        )
        self.action_space = gym.spaces.Box(
            -1.0, 1.0, shape=(self.vec.action_dim,), dtype=np.float32
        )

    def _pending_clip(self) -> int:
        return self._clip_id

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode on ``options["clip_id"]`` or a uniformly drawn clip."""
        super().reset(seed=seed)
        k = len(self.clip_names)
        if options and "clip_id" in options:
            clip_id = int(options["clip_id"])
            if not 0 <= clip_id < k:
                raise ValueError(f"clip_id must be in 0..{k - 1}, got {clip_id}")
        else:
            clip_id = int(self.np_random.integers(k))
        self._clip_id = clip_id
        obs = self.vec.reset(seed=int(self.np_random.integers(2**31)))
        return obs[0], {"clip_id": clip_id}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One control step; the reward is the active clip's weighted tracking reward."""
        result = self.vec.step(np.asarray(action, dtype=np.float64)[None, :])
        terminated, truncated = bool(result.terminated[0]), bool(result.truncated[0])
        info: dict[str, Any] = {
            "clip_terms": result.clip_terms[0],
            "clip_id": int(result.clip_ids[0]),
        }
        obs = result.obs[0]
        if result.episodes:
            episode = result.episodes[0]
            info["success"] = episode.success
            info["tracking_return"] = episode.tracking_return
            obs = result.final_obs[0]
        return obs, float(result.active_reward[0]), terminated, truncated, info

    def close(self) -> None:
        """Release the batched env."""
        self.vec.close()
