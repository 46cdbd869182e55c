"""Running observation normaliser and reward scaler, updated once per batch (never per env).

The moments are merged with the parallel rule of Chan, Golub & LeVeque (1979) from
``scheduler_service.algorithms.normalizers``; a whole rollout (T * N observations) is
one merge. Batched normalisation instead of per-env wrappers is one of the things that
made a lean PPO fast on this CPU (measured-facts.md).
"""

from __future__ import annotations

import numpy as np
import torch

from scheduler_service.algorithms.normalizers import Moments, merge_moments


class RunningObsNormalizer:
    """Per-feature running mean/std of observations: o~ = clip((o - mu) / sqrt(var + eps))."""

    def __init__(self, obs_dim: int, clip: float = 10.0, eps: float = 1e-8) -> None:
        self.obs_dim = obs_dim
        self.clip = clip
        self.eps = eps
        self.moments = Moments.zeros((obs_dim,))
        self._refresh()

    @property
    def count(self) -> float:
        """How many observations have been merged."""
        return float(self.moments.count[0]) if self.obs_dim else 0.0

    def update(self, batch: np.ndarray) -> None:
        """Merge a batch of observations of shape (..., obs_dim) in one step."""
        flat = np.asarray(batch, dtype=np.float64).reshape(-1, self.obs_dim)
        if flat.shape[0] == 0:
            return
        self.moments = merge_moments(self.moments, Moments.from_batch(flat, axis=0))
        self._refresh()

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """Normalised float32 copy of (..., obs_dim) observations, clipped to [-clip, clip]."""
        out = (np.asarray(obs, dtype=np.float32) - self._mean) * self._inv_std
        # clip(x, -c, c) as min(max(x, -c), c): the ufuncs skip np.clip's Python wrapper,
        # which cost more than the maths at the rollout's one call per step
        np.maximum(out, -self.clip, out=out)
        return np.minimum(out, self.clip, out=out)

    def _refresh(self) -> None:
        """Cache float32 mean and 1/std (identity before the first update)."""
        seen = self.moments.count > 0
        mean = np.where(seen, self.moments.mean, 0.0)
        var = np.where(seen, self.moments.variance, 1.0)
        self._mean = mean.astype(np.float32)
        self._inv_std = (1.0 / np.sqrt(var + self.eps)).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Moments as tensors (checkpoints load with ``weights_only=True``)."""
        return {
            "count": torch.from_numpy(np.array(self.moments.count, dtype=np.float64)),
            "mean": torch.from_numpy(np.array(self.moments.mean, dtype=np.float64)),
            "m2": torch.from_numpy(np.array(self.moments.m2, dtype=np.float64)),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.moments = _moments_from_state(state)
        self._refresh()


def _moments_from_state(state: dict[str, torch.Tensor]) -> Moments:
    return Moments(
        count=state["count"].numpy().astype(np.float64),
        mean=state["mean"].numpy().astype(np.float64),
        m2=state["m2"].numpy().astype(np.float64),
    )


class ReturnScaler:
    """Batched reward scaling by the running std of the discounted return (no centring).

    Per env, G_t = gamma * G_{t-1} * (1 - done_{t-1}) + r_t; the moments of all G of a
    rollout are merged at once and rewards are divided by sqrt(Var[G] + eps) (then
    clipped), so value targets stay O(1) whatever the reward scale. Scaling by a
    positive constant leaves the optimal policy unchanged.
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8) -> None:
        self.gamma = gamma
        self.clip = clip
        self.eps = eps
        self.moments = Moments.zeros((1,))
        self.returns = np.zeros(num_envs)

    def scale(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """Update with a (T, N) rollout of rewards/episode ends; return the scaled rewards."""
        discounted = np.empty(rewards.shape, dtype=np.float64)
        running = self.returns
        for t in range(rewards.shape[0]):
            running = self.gamma * running + rewards[t]
            discounted[t] = running
            running = np.where(dones[t], 0.0, running)
        self.returns = running
        self.moments = merge_moments(self.moments, Moments.from_batch(discounted.reshape(-1, 1)))
        std = float(np.sqrt(self.moments.variance[0] + self.eps))
        return np.clip(rewards / std, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Moments and the per-env running returns, as tensors."""
        return {
            "count": torch.from_numpy(np.array(self.moments.count, dtype=np.float64)),
            "mean": torch.from_numpy(np.array(self.moments.mean, dtype=np.float64)),
            "m2": torch.from_numpy(np.array(self.moments.m2, dtype=np.float64)),
            "returns": torch.from_numpy(self.returns.copy()),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.moments = _moments_from_state(state)
        self.returns = state["returns"].numpy().astype(np.float64)
