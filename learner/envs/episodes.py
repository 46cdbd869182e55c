"""Per-slot episode bookkeeping shared by the batched envs.

Every slot of a batched env counts its control steps, sums the active clip's tracking
reward, and keeps running per-term moments (Welford) so that the finished episode reports
``term_mean`` / ``term_m2`` for the scheduler's Chan et al. merge (design note §3). The
env decides when an episode ends and whether it succeeded; this only keeps the numbers.
"""

from __future__ import annotations

import numpy as np

from learner.envs.base import EpisodeEnd


def welford_update(
    count: np.ndarray, mean: np.ndarray, m2: np.ndarray, value: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One batched Welford step: (N,) counts *after* adding the (N, T) value -> new mean, m2.

    delta = x - mean;  mean' = mean + delta / n;  m2' = m2 + delta * (x - mean')
    """
    delta = value - mean
    new_mean = mean + delta / count[:, None]
    new_m2 = m2 + delta * (value - new_mean)
    return new_mean, new_m2


class EpisodeStats:
    """Steps, tracking return and per-term moments of the episode running in each slot."""

    def __init__(self, num_envs: int, num_terms: int) -> None:
        self.steps = np.zeros(num_envs, dtype=np.int64)
        """(N,) control steps of each slot's episode so far."""
        self.tracking_return = np.zeros(num_envs)
        """(N,) sum of the active clip's weighted tracking reward."""
        self.term_mean = np.zeros((num_envs, num_terms))
        self.term_m2 = np.zeros((num_envs, num_terms))

    def reset_slot(self, i: int) -> None:
        """Start a new episode in slot ``i``."""
        self.steps[i] = 0
        self.tracking_return[i] = 0.0
        self.term_mean[i] = 0.0
        self.term_m2[i] = 0.0

    def add(self, active_terms: np.ndarray, active_reward: np.ndarray) -> None:
        """Count one step of every slot: (N, T) active-clip terms, (N,) their weighted sum."""
        self.steps += 1
        self.term_mean, self.term_m2 = welford_update(
            self.steps, self.term_mean, self.term_m2, active_terms
        )
        self.tracking_return += active_reward

    def end(
        self,
        slots: np.ndarray,
        clip: np.ndarray,
        fell: np.ndarray,
        success_threshold: float,
    ) -> list[EpisodeEnd]:
        """The finished episodes of ``slots`` (before their reset).

        ``clip`` and ``fell`` are (N,) over all slots. Success: the character did not fall
        and its mean tracking reward per step reached ``success_threshold``.
        """
        ends = []
        for i in slots.tolist():
            steps = int(self.steps[i])
            mean_reward = self.tracking_return[i] / steps
            ends.append(
                EpisodeEnd(
                    env_index=i,
                    clip_id=int(clip[i]),
                    steps=steps,
                    success=float(not fell[i] and mean_reward >= success_threshold),
                    tracking_return=float(self.tracking_return[i]),
                    term_count=steps,
                    term_mean=self.term_mean[i].copy(),
                    term_m2=self.term_m2[i].copy(),
                    terminated=bool(fell[i]),
                )
            )
        return ends
