"""Survival alone never pays: on every shipped clip and under every reward shaping, the
reference's own PD targets earn more than standing in the rest pose (zero action), which
earns more than falling at once.

The humanoid env runs in ``absolute`` action mode, where action 0 is the rest pose. Each
slot's first episode is played with one action rule; its per-step terms of every clip are
then shaped offline by ``RewardShaper`` with each normalisation (none, per-clip z-scores,
global z-scores, with normaliser statistics taken from either rule's own steps) and each
aggregation (max, LogSumExp, threshold mix), and summed over the episode.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from clipsched.clip_source import ActorConfig
from learner.envs.humanoid import HumanoidConfig, HumanoidVecEnv
from learner.reward_shaping import RewardShaper, ShapingSettings
from learner.rewards import TERM_NAMES

CLIPS = ["Idle", "Walk", "Back", "Run", "Sprint", "walk", "jog", "run"]
"""The five-clip example (from the shipped clips) and the three shipped clips."""
SLOTS = 4


def first_episodes(rule: str) -> list[tuple[int, np.ndarray]]:
    """(clip id, (steps, K, T) terms of every clip) of each slot's first episode, per clip."""
    episodes: list[tuple[int, np.ndarray]] = []
    config = HumanoidConfig(action_mode="absolute", clip_source="shipped")
    for clip_id in range(len(CLIPS)):
        env = HumanoidVecEnv(CLIPS, SLOTS, lambda c=clip_id: c, config, seed=clip_id)
        env.reset(seed=clip_id)
        terms: list[list[np.ndarray]] = [[] for _ in range(SLOTS)]
        open_slots = set(range(SLOTS))
        while open_slots:
            actions = env.reference_actions() if rule == "reference" else np.zeros((SLOTS, 28))
            step = env.step(actions)
            for i in list(open_slots):
                terms[i].append(step.clip_terms[i])
            for end in step.episodes:
                if end.env_index in open_slots:
                    open_slots.discard(end.env_index)
                    episodes.append((clip_id, np.stack(terms[end.env_index])))
        env.close()
    return episodes


@pytest.fixture(scope="module")
def rollouts() -> dict[str, list[tuple[int, np.ndarray]]]:
    return {rule: first_episodes(rule) for rule in ("reference", "zero")}


def actor_config(aggregation: str, steps: list[np.ndarray]) -> ActorConfig:
    """Uniform reward weights and per-clip term moments measured on ``steps``."""
    k = len(CLIPS)
    pooled = np.concatenate([s.reshape(-1, k, len(TERM_NAMES)) for s in steps])
    return ActorConfig(
        state_version=1,
        clip_names=CLIPS,
        clip_probs=np.full(k, 1.0 / k),
        reward_weights=np.full(k, 1.0 / k),
        aggregation=aggregation,  # type: ignore[arg-type]
        temperature=0.3,
        threshold_delta=0.5,
        term_names=TERM_NAMES,
        norm_mean=pooled.mean(axis=0),
        norm_std=pooled.std(axis=0),
        norm_count=np.full((k, len(TERM_NAMES)), float(len(pooled))),
    )


def episode_return(shaper: RewardShaper, clip_id: int, terms: np.ndarray) -> float:
    """Undiscounted sum of the shaped reward over the episode."""
    ids = np.full(len(terms), clip_id)
    return float(shaper(terms.astype(np.float32), ids).reward.sum())


@pytest.mark.parametrize(
    ("normalization", "aggregation", "statistics"),
    [
        *itertools.product(["per_clip", "global"], ["max", "lse", "threshold"], ["zero", "ref"]),
        *[("none", aggregation, "zero") for aggregation in ("max", "lse", "threshold")],
    ],
)
def test_tracking_beats_standing_beats_falling_on_every_clip(
    rollouts: dict[str, list[tuple[int, np.ndarray]]],
    normalization: str,
    aggregation: str,
    statistics: str,
) -> None:
    source = rollouts["zero" if statistics == "zero" else "reference"]
    env_weights = np.asarray(HumanoidConfig().term_weights)
    for reward_source in ("aggregate", "active_clip"):
        shaper = RewardShaper(
            env_weights,
            ShapingSettings(
                normalization=normalization,  # type: ignore[arg-type]
                source=reward_source,  # type: ignore[arg-type]
                min_count=1,
            ),
            TERM_NAMES,
        )
        shaper.set_actor_config(actor_config(aggregation, [t for _, t in source]))
        for clip_id, name in enumerate(CLIPS):
            tracked = [
                episode_return(shaper, c, t) for c, t in rollouts["reference"] if c == clip_id
            ]
            standing = [episode_return(shaper, c, t) for c, t in rollouts["zero"] if c == clip_id]
            fallen = [episode_return(shaper, c, t[:1]) for c, t in rollouts["zero"] if c == clip_id]
            assert np.mean(tracked) > np.mean(standing) > np.mean(fallen) >= 0.0, (
                name, reward_source, np.mean(tracked), np.mean(standing), np.mean(fallen)
            )  # fmt: skip
