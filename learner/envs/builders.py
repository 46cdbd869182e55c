"""Build the batched env a ``TrainConfig`` asks for (``ENV_BUILDERS[config.env]``).

The training loop, the evaluation, the renderer and the experiments all build their envs
here, so a config means the same env everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from learner.config import TrainConfig
from learner.envs.base import NextClip, VecMultiClipEnv

EnvFactory = Callable[[TrainConfig, NextClip], VecMultiClipEnv]
"""Builds the batched env for a config; ``next_clip`` must be passed to the env."""


def _planar_env(config: TrainConfig, next_clip: NextClip) -> VecMultiClipEnv:
    from learner.envs.planar import PlanarConfig, PlanarVecEnv

    env_config = PlanarConfig(
        skill_one_hot=config.skill_one_hot,
        max_episode_steps=config.max_episode_steps,
        success_threshold=config.success_threshold,
        **({"term_weights": config.term_weights} if config.term_weights else {}),
    )
    clips = list(config.clips) or None
    env = PlanarVecEnv(clips, config.num_envs, next_clip, env_config, seed=config.seed)
    return cast(VecMultiClipEnv, env)


def humanoid_config(config: TrainConfig) -> Any:
    """The ``HumanoidConfig`` that a ``TrainConfig`` asks for."""
    from learner.envs.humanoid import HumanoidConfig, TermScales

    return HumanoidConfig(
        clip_source=config.clip_source,
        skill_one_hot=config.skill_one_hot,
        max_episode_steps=config.max_episode_steps,
        success_threshold=config.success_threshold,
        term_scales=TermScales.from_sequence(config.term_scales),
        action_mode=config.action_mode,
        action_scale=config.action_scale,
        future_frames=config.future_frames,
        contact_termination=config.contact_termination,
        contact_free_clips=config.contact_free_clips,
        pose_termination_distance=config.pose_termination_distance,
        root_height_termination=config.root_height_termination,
        end_with_clip=config.end_with_clip,
        **({"term_weights": config.term_weights} if config.term_weights else {}),
    )


def _humanoid_env(config: TrainConfig, next_clip: NextClip) -> VecMultiClipEnv:
    from learner.envs.humanoid import HumanoidVecEnv

    clips = list(config.clips) or None
    env = HumanoidVecEnv(
        clips, config.num_envs, next_clip, humanoid_config(config), seed=config.seed
    )
    return cast(VecMultiClipEnv, env)


ENV_BUILDERS: dict[str, EnvFactory] = {"planar": _planar_env, "humanoid": _humanoid_env}


__all__ = ["ENV_BUILDERS", "EnvFactory", "humanoid_config"]
