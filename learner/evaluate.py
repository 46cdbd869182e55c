"""Deterministic evaluation of a trained policy: load a checkpoint, play episodes, measure skill.

Skill is what a user of an imitation learner asks first: per clip, the share of episodes
that ran to their end without a termination and tracked the clip (``success``), the mean
tracking reward per step, the mean episode length and how episodes ended. Evaluation
plays the policy's mean action (no exploration noise), resets each env slot with the
clip being evaluated, and counts the first ``episodes`` episodes that finish.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learner.config import TrainConfig, coerce_fields
from learner.envs.base import VecMultiClipEnv
from learner.models import ActorCritic, ModelConfig
from learner.normalization import RunningObsNormalizer


@dataclass
class Policy:
    """A trained actor with its observation normaliser and the config it was trained with."""

    model: ActorCritic
    obs_norm: RunningObsNormalizer | None
    config: TrainConfig
    global_step: int = 0

    def act(self, raw_obs: np.ndarray, clip_ids: np.ndarray) -> np.ndarray:
        """(N, action_dim) mean actions in [-1, 1] for (N, obs_dim) raw observations."""
        obs = self.obs_norm.normalize(raw_obs) if self.obs_norm else raw_obs.astype(np.float32)
        num_clips = self.model.config.num_clips
        weights = torch.full((num_clips,), 1.0 / num_clips)
        with torch.inference_mode():
            mean = self.model.action_mean(
                torch.from_numpy(np.asarray(obs, dtype=np.float32)),
                torch.as_tensor(clip_ids, dtype=torch.long),
                weights,
            )
        return np.clip(mean.numpy(), -1.0, 1.0)


def load_policy(path: str | Path, **config_overrides: Any) -> Policy:
    """The policy of a ``clipsched train`` checkpoint (``latest.pt``); config fields may be
    overridden (e.g. ``clips`` to point at the same clip elsewhere)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    saved = torch.load(path, weights_only=True)
    model = ActorCritic(ModelConfig.from_dict(saved["model_config"]))
    model.load_state_dict(saved["model"])
    model.eval()
    obs_norm = None
    if saved.get("obs_norm") is not None:
        obs_norm = RunningObsNormalizer(model.config.obs_dim)
        obs_norm.load_state_dict(saved["obs_norm"])
    known = {k: v for k, v in saved["config"].items() if k in TrainConfig.__dataclass_fields__}
    config = TrainConfig(**coerce_fields(known)).with_overrides(**config_overrides)
    return Policy(model, obs_norm, config, int(saved.get("global_step", 0)))


@dataclass(frozen=True)
class ClipSkill:
    """Deterministic skill on one clip."""

    clip: str
    episodes: int
    success: float
    """Share of episodes that ran to their end without a termination and tracked the clip."""
    tracking_reward: float
    """Mean active-clip tracking reward per step, in [0, 1]."""
    episode_length: float
    """Mean control steps per episode."""
    full_length: float
    """Share of episodes that ran to their end (time limit or clip end) without a fall."""

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain data for JSON."""
        return dict(self.__dict__)


def evaluate_clip(
    policy: Policy,
    make_env: Callable[[Callable[[], int]], VecMultiClipEnv],
    clip_id: int,
    episodes: int = 16,
    max_steps: int = 20_000,
    seed: int = 1000,
) -> ClipSkill:
    """Play the policy's mean action on ``clip_id`` until ``episodes`` episodes finished
    (or ``max_steps`` control steps of the batch passed)."""
    env = make_env(lambda: clip_id)
    try:
        obs = env.reset(seed=seed)
        ids = np.full(env.num_envs, clip_id)
        ends = []
        steps = 0
        while len(ends) < episodes and steps < max_steps:
            step = env.step(policy.act(np.asarray(obs, dtype=np.float32), ids))
            steps += 1
            ends.extend(e for e in step.episodes if e.clip_id == clip_id)
            obs = step.obs
        ends = ends[:episodes]
        name = env.clip_names[clip_id]
    finally:
        env.close()
    if not ends:
        return ClipSkill(name, 0, 0.0, 0.0, float(steps), 0.0)
    lengths = np.array([e.steps for e in ends], dtype=np.float64)
    returns = np.array([e.tracking_return for e in ends])
    return ClipSkill(
        clip=name,
        episodes=len(ends),
        success=float(np.mean([e.success for e in ends])),
        tracking_reward=float(returns.sum() / lengths.sum()),
        episode_length=float(lengths.mean()),
        full_length=float(np.mean([not e.terminated for e in ends])),
    )


def evaluate(
    policy: Policy, episodes: int = 16, num_envs: int = 8, seed: int = 1000
) -> list[ClipSkill]:
    """Deterministic skill of a policy on each of its clips, in its own env."""
    from learner.envs.builders import ENV_BUILDERS

    config = policy.config.with_overrides(num_envs=num_envs, seed=seed)
    build = ENV_BUILDERS[config.env]
    probe = build(config.with_overrides(num_envs=1), lambda: 0)
    names = list(probe.clip_names)
    probe.close()
    return [
        evaluate_clip(policy, lambda next_clip: build(config, next_clip), k, episodes, seed=seed)
        for k in range(len(names))
    ]


__all__ = ["ClipSkill", "Policy", "evaluate", "evaluate_clip", "load_policy"]
