"""The contract every batched multi-clip imitation env meets, and what it reports.

A batched env steps ``num_envs`` characters at once and computes, at every control step,
the per-term tracking rewards of *every* clip (so the learner can aggregate over clips
with ``max`` / ``lse`` / ``threshold``, design note §3). When an episode ends the env
resets that slot at once with the next clip from ``next_clip`` (the learner's prefetch
queue, which never waits on the network) and reports the finished episode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

NextClip = Callable[[], int]
"""Returns the clip id for the next episode; must not block."""


@dataclass(frozen=True)
class EpisodeEnd:
    """One finished episode, as the env saw it."""

    env_index: int
    clip_id: int
    steps: int
    success: float
    """1.0 when the character did not fall and tracked the clip well enough, else 0.0."""
    tracking_return: float
    """Sum over the episode of the active clip's (unnormalised) tracking reward."""
    term_count: int
    term_mean: np.ndarray
    """(T,) mean over the episode of each reward term of the active clip."""
    term_m2: np.ndarray
    """(T,) sum of squared deviations of each term (for the Chan et al. merge)."""
    terminated: bool = False
    """The episode ended by a termination (a fall, straying from the reference), not by
    reaching its time limit or the end of its clip."""


@dataclass(frozen=True)
class VecStep:
    """What one batched step returns."""

    obs: np.ndarray
    """(N, obs_dim) float32, already reset for slots whose episode ended."""
    clip_terms: np.ndarray
    """(N, K, T) float32: per-term reward in [0, 1] of every clip at this step."""
    active_reward: np.ndarray
    """(N,) float32: the active clip's weighted tracking reward (DeepMimic sum)."""
    clip_ids: np.ndarray
    """(N,) int64: the active clip of the step just taken."""
    terminated: np.ndarray
    """(N,) bool: the episode ended by a fall."""
    truncated: np.ndarray
    """(N,) bool: the episode hit its time limit (bootstrap from ``final_obs``)."""
    final_obs: np.ndarray
    """(N, obs_dim) float32: the observation before the reset, valid where done."""
    episodes: list[EpisodeEnd]


class VecMultiClipEnv(Protocol):
    """A batch of imitation envs sharing one clip library."""

    num_envs: int
    obs_dim: int
    action_dim: int
    clip_names: list[str]
    term_names: tuple[str, ...]
    term_weights: np.ndarray
    """(T,) DeepMimic weights of the terms in the active clip's reward; sum to 1."""

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every slot with clips from ``next_clip``; return (N, obs_dim) obs."""
        ...

    def step(self, actions: np.ndarray) -> VecStep:
        """Apply (N, action_dim) actions in [-1, 1] and advance one control step."""
        ...

    def close(self) -> None:
        """Release simulator resources."""
        ...
