"""Where an actor gets its next clip and sends finished episodes.

``ClipSource`` is the seam between the training loop and the scheduler: the loop calls
``next_clip()`` at every episode reset and ``report()`` for every finished episode, and
neither call may block. ``StaticClipSource`` samples in process from fixed
``clip_probs`` (design note §1) and keeps its own per-clip normalisers; the HTTP-backed
source ``clipsched.client.SchedulerClipSource`` asks the scheduler instead.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from scheduler_service.algorithms.aggregation import AggregationKind
from scheduler_service.algorithms.normalizers import Moments, merge_moments
from scheduler_service.algorithms.probabilities import normalize_shares
from scheduler_service.algorithms.sampler import ClipSampler


@dataclass(frozen=True)
class Outcome:
    """One finished episode, ready to be reported to the scheduler."""

    episode_id: str
    clip_id: int
    steps: int
    episode_return: float
    success: float
    term_count: int = 0
    term_mean: tuple[float, ...] = ()
    term_m2: tuple[float, ...] = ()


@dataclass(frozen=True)
class ActorConfig:
    """What an actor needs to sample clips and compute its reward, as of ``state_version``."""

    state_version: int
    clip_names: tuple[str, ...]
    clip_probs: np.ndarray
    """(K,) sampling probabilities."""
    reward_weights: np.ndarray
    """(K,) weights w_i of the reward aggregation (§3)."""
    aggregation: AggregationKind
    temperature: float
    threshold_delta: float
    term_names: tuple[str, ...]
    norm_mean: np.ndarray
    """(K, T) running mean of each clip's reward terms."""
    norm_std: np.ndarray
    """(K, T) running std of each clip's reward terms."""
    norm_count: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """(K, T) how many steps the normaliser has seen (0 = not yet usable)."""


class ClipSource(Protocol):
    """Gives clips for resets and takes finished episodes; never blocks."""

    def next_clip(self) -> int:
        """Clip id for the next episode."""
        ...

    def report(self, outcome: Outcome) -> None:
        """Queue a finished episode for the scheduler."""
        ...

    def actor_config(self) -> ActorConfig:
        """The latest known reward weights, aggregation and normalisers."""
        ...

    def close(self) -> None:
        """Flush what can be flushed and stop background work."""
        ...


class StaticClipSource:
    """In-process sampling from fixed ``clip_probs``; normalisers merged locally."""

    def __init__(
        self,
        clip_names: list[str],
        term_names: tuple[str, ...],
        clip_probs: np.ndarray | None = None,
        *,
        reward_weights: np.ndarray | None = None,
        aggregation: AggregationKind = "max",
        temperature: float = 0.3,
        threshold_delta: float = 0.5,
        seed: int = 0,
    ) -> None:
        k = len(clip_names)
        probs = normalize_shares(np.ones(k) if clip_probs is None else clip_probs)
        weights = normalize_shares(probs if reward_weights is None else reward_weights)
        self._rng = np.random.default_rng(seed)
        self._sampler = ClipSampler(probs)
        self._lock = threading.Lock()
        self._moments = Moments.zeros((k, len(term_names)))
        self._template = ActorConfig(
            state_version=0,
            clip_names=tuple(clip_names),
            clip_probs=probs,
            reward_weights=weights,
            aggregation=aggregation,
            temperature=temperature,
            threshold_delta=threshold_delta,
            term_names=term_names,
            norm_mean=self._moments.mean,
            norm_std=self._moments.std,
            norm_count=self._moments.count,
        )
        self._version = 0
        self.outcomes: list[Outcome] = []

    def next_clip(self) -> int:
        """Draw one clip id from ``clip_probs``."""
        return int(self._sampler.sample(1, self._rng)[0])

    def report(self, outcome: Outcome) -> None:
        """Merge the episode's term moments into the clip's normaliser."""
        with self._lock:
            self.outcomes.append(outcome)
            if outcome.term_count > 0:
                k, t = self._moments.count.shape
                count = np.zeros((k, t))
                mean = np.zeros((k, t))
                m2 = np.zeros((k, t))
                count[outcome.clip_id] = outcome.term_count
                mean[outcome.clip_id] = outcome.term_mean
                m2[outcome.clip_id] = outcome.term_m2
                self._moments = merge_moments(self._moments, Moments(count, mean, m2))
                self._version += 1

    def actor_config(self) -> ActorConfig:
        """Fixed probabilities and weights, with the locally merged normalisers."""
        with self._lock:
            moments = self._moments
            version = self._version
        return replace(
            self._template,
            state_version=version,
            norm_mean=moments.mean.copy(),
            norm_std=moments.std.copy(),
            norm_count=moments.count.copy(),
        )

    def close(self) -> None:
        """Nothing to flush in process."""
