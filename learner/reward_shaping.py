"""The training reward: per-clip z-scored imitation terms, aggregated over clips (§3).

Input is what the env gives at every step, the per-term reward of every clip
``clip_terms`` (N, K, T) in [0, 1], and the latest ``ActorConfig`` (reward weights,
aggregation, per-clip term normalisers). Steps, batched over all envs with numpy:

1. normalise each term (design note §3, mandatory per-clip normalisation):
   ``per_clip``: z_{n,i,t} = (x_{n,i,t} - mu_{i,t}) / (sigma_{i,t} + eps);
   ``global``: one mean/std per term pooled over all clips (the naive baseline);
   ``none``: raw terms. A (clip, term) whose normaliser has seen fewer than
   ``min_count`` steps keeps its raw value;
2. weighted sum over terms with the env's DeepMimic ``term_weights``: r_{n,i} = sum_t c_t z_{n,i,t};
3. aggregate over clips with ``max`` / ``lse`` / ``threshold``
   (``scheduler_service.algorithms.aggregation``) and the reward weights ``w``, or take
   the active clip's r_{n,c_n} (``active_clip``, used to train per-clip experts);
4. keep the reward positive. Raw terms give r in [0, 1] for every aggregation (the
   LogSumExp of values in [0, 1] with weights summing to 1 lies between their weighted
   mean and their max), which is what DeepMimic and MimicKit give PPO: a fall forfeits
   the rest of the episode's reward, so tracking pays and surviving badly pays little.
   z-scores average zero, so an aggregate of them would make a fall *earn* the end of
   a below-average episode; with ``normalization`` on, the aggregate is squashed,
   r = sigmoid(r~) in (0, 1): still monotone in every clip's normalised tracking (the
   aggregation and its clip comparison are unchanged), never negative, near 0 for a
   character far off every clip. ``alive_bonus`` (default 0) is added last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from clipsched.clip_source import ActorConfig
from scheduler_service.algorithms.aggregation import AggregationKind, aggregate
from scheduler_service.algorithms.normalizers import Moments, merge_moments

NormalizationMode = Literal["per_clip", "global", "none"]
RewardSource = Literal["aggregate", "active_clip"]


@dataclass(frozen=True)
class ShapingSettings:
    """How the learner turns clip terms into its reward (overrides of the ActorConfig)."""

    normalization: NormalizationMode = "per_clip"
    aggregation: AggregationKind | None = None
    """None = use the ActorConfig's (i.e. the scheduler's) aggregation."""
    temperature: float | None = None
    threshold_delta: float | None = None
    source: RewardSource = "aggregate"
    min_count: int = 1000
    """Steps a (clip, term) normaliser must have seen before its z-score is used."""
    alive_bonus: float = 0.0
    eps: float = 1e-3
    """Added to sigma: terms live in [0, 1], and this keeps a near-constant term finite."""


@dataclass(frozen=True)
class ShapedReward:
    """One step's training reward and the normalised per-clip rewards behind it."""

    reward: np.ndarray
    """(N,) float32 training reward."""
    clip_rewards: np.ndarray
    """(N, K) normalised per-clip rewards r~_{n,i}."""


def squash(aggregate: np.ndarray) -> np.ndarray:
    """sigmoid(x) = 1 / (1 + exp(-x)), computed without overflow for large |x|."""
    x = np.asarray(aggregate, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def pooled_moments(moments: Moments) -> Moments:
    """Merge (K, T) per-clip moments into (1, T) moments over all clips (pairwise Chan merges)."""
    current = moments
    while current.count.shape[0] > 1:
        k = current.count.shape[0]
        if k % 2:
            pad = Moments.zeros((1, *current.count.shape[1:]))
            current = Moments(
                np.concatenate([current.count, pad.count]),
                np.concatenate([current.mean, pad.mean]),
                np.concatenate([current.m2, pad.m2]),
            )
        left = Moments(current.count[0::2], current.mean[0::2], current.m2[0::2])
        right = Moments(current.count[1::2], current.mean[1::2], current.m2[1::2])
        current = merge_moments(left, right)
    return current


def _config_moments(config: ActorConfig) -> tuple[Moments, np.ndarray]:
    """(K, T) moments from an ActorConfig and whether each entry has a known count."""
    mean = np.asarray(config.norm_mean, dtype=np.float64)
    std = np.asarray(config.norm_std, dtype=np.float64)
    count = np.asarray(config.norm_count, dtype=np.float64)
    if count.shape != mean.shape:
        # No counts (e.g. over HTTP): a positive std means the scheduler has data.
        count = np.where(std > 0.0, np.inf, 0.0)
    finite_count = np.where(np.isfinite(count), count, 1e12)
    return Moments(finite_count, mean, std**2 * finite_count), count


class RewardShaper:
    """Turns (N, K, T) clip terms into the (N,) training reward for the current ActorConfig."""

    def __init__(
        self,
        term_weights: np.ndarray,
        settings: ShapingSettings,
        term_names: tuple[str, ...] = (),
    ) -> None:
        self.term_weights = np.asarray(term_weights, dtype=np.float64)
        self.settings = settings
        self.term_names = tuple(term_names)
        self._scale = np.zeros((0, 0), dtype=np.float32)
        self._offset = np.zeros(0, dtype=np.float32)
        self._config: ActorConfig | None = None

    def set_actor_config(self, config: ActorConfig) -> None:
        """Precompute the affine map of each clip's terms for this ActorConfig.

        r_{n,i} = sum_t c_t (x_{n,i,t} - mu_{i,t}) / (sigma_{i,t} + eps)
                = sum_t x_{n,i,t} * scale_{i,t} + offset_i.
        """
        s = self.settings
        k, t = len(config.clip_names), len(self.term_weights)
        if self.term_names and config.term_names and tuple(config.term_names) != self.term_names:
            raise ValueError(f"normaliser terms {config.term_names} are not {self.term_names}")
        mean = np.zeros((k, t))
        inv_std = np.ones((k, t))
        if s.normalization != "none" and np.asarray(config.norm_mean).size == k * t:
            moments, count = _config_moments(config)
            if s.normalization == "global":
                pooled = pooled_moments(moments)
                moments = Moments(
                    *(np.broadcast_to(a, (k, t)) for a in (pooled.count, pooled.mean, pooled.m2))
                )
                count = moments.count
            usable = count >= s.min_count
            mean = np.where(usable, moments.mean, 0.0)
            inv_std = np.where(usable, 1.0 / (moments.std + s.eps), 1.0)
        scale = inv_std * self.term_weights
        self._scale = scale.astype(np.float32)
        self._offset = (-(mean * scale).sum(axis=1)).astype(np.float32)
        self._config = config

    def __call__(self, clip_terms: np.ndarray, clip_ids: np.ndarray) -> ShapedReward:
        """Training reward of one batched step."""
        if self._config is None:
            raise RuntimeError("RewardShaper.set_actor_config must be called first")
        config, s = self._config, self.settings
        clip_rewards = (clip_terms * self._scale).sum(axis=-1) + self._offset  # (N, K)
        if s.source == "active_clip":
            reward = clip_rewards[np.arange(clip_rewards.shape[0]), clip_ids]
        else:
            reward = aggregate(
                clip_rewards.astype(np.float64),
                s.aggregation or config.aggregation,
                config.reward_weights,
                config.temperature if s.temperature is None else s.temperature,
                config.threshold_delta if s.threshold_delta is None else s.threshold_delta,
            )
        reward = np.asarray(reward, dtype=np.float32)
        if s.normalization != "none":
            reward = squash(reward)
        reward = reward + np.float32(s.alive_bonus)
        return ShapedReward(reward=reward, clip_rewards=clip_rewards)
