"""Reward aggregation across clips (§3) and the reward-weight updates (§8).

``rewards`` has shape (..., K): per-clip (normalised) rewards r_i, vectorised over any leading
axes (envs, time steps); the aggregates have shape (...). ``reward_weights`` w has shape (K,)
or any shape that broadcasts against ``rewards``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np
import numpy.typing as npt

from scheduler_service.algorithms.probabilities import (
    LOG_EPS,
    FloatArray,
    apply_floor,
    as_clip_vector,
    as_float_array,
    as_shares,
    check_scalar,
    softmax,
)

AggregationKind = Literal["max", "lse", "threshold"]
"""How per-clip rewards become one training reward."""


def _as_rewards(rewards: npt.ArrayLike) -> FloatArray:
    array = as_float_array(rewards, "rewards")
    if array.ndim == 0 or array.shape[-1] == 0:
        raise ValueError(f"rewards must have shape (..., K) with K >= 1, got {array.shape}")
    return array


def _as_weights(reward_weights: npt.ArrayLike, rewards: FloatArray) -> FloatArray:
    weights = as_float_array(reward_weights, "reward_weights")
    if weights.ndim == 0 or weights.shape[-1] != rewards.shape[-1]:
        raise ValueError(
            f"reward_weights must have K={rewards.shape[-1]} entries on the last axis, "
            f"got shape {weights.shape}"
        )
    try:
        shape = np.broadcast_shapes(weights.shape, rewards.shape)
    except ValueError as exc:
        raise ValueError(f"reward_weights {weights.shape} do not broadcast to rewards") from exc
    if shape != rewards.shape:
        raise ValueError(f"reward_weights {weights.shape} do not broadcast to {rewards.shape}")
    if np.any(weights < 0.0):
        raise ValueError("reward_weights must be non-negative")
    if np.any(weights.sum(axis=-1) <= 0.0):
        raise ValueError("reward_weights must not be all zero")
    return weights


def aggregate_max(rewards: npt.ArrayLike) -> FloatArray:
    """DeepMimic-style r = max_i r_i over the last axis."""
    result: FloatArray = _as_rewards(rewards).max(axis=-1)
    return result


def aggregate_lse(
    rewards: npt.ArrayLike, reward_weights: npt.ArrayLike, temperature: float
) -> FloatArray:
    """Weighted LogSumExp r = tau log sum_i w_i exp(r_i / tau); clips with w_i = 0 are left out."""
    r = _as_rewards(rewards)
    w = _as_weights(reward_weights, r)
    tau = check_scalar(temperature, "temperature", low=0.0, open_low=True)
    log_w = np.log(w, out=np.full(w.shape, -np.inf), where=w > 0.0)
    # z_i = log w_i + r_i / tau; r = tau (z_max + log sum_i exp(z_i - z_max)), stable for any scale.
    z = log_w + r / tau
    z_max = z.max(axis=-1, keepdims=True)
    total = np.exp(z - z_max).sum(axis=-1)
    result: FloatArray = tau * (z_max[..., 0] + np.log(total))
    return result


def aggregate_threshold(
    rewards: npt.ArrayLike, reward_weights: npt.ArrayLike, delta: float
) -> FloatArray:
    """Threshold mix r = sum_i w_i 1[r_i >= r_top - delta] r_i, r_top = max_i r_i."""
    r = _as_rewards(rewards)
    w = _as_weights(reward_weights, r)
    margin = check_scalar(delta, "delta", low=0.0)
    r_top = r.max(axis=-1, keepdims=True)
    within = r >= r_top - margin
    result: FloatArray = np.sum(np.where(within, w * r, 0.0), axis=-1)
    return result


AGGREGATORS: Mapping[
    AggregationKind, Callable[[npt.ArrayLike, npt.ArrayLike, float, float], FloatArray]
] = {
    "max": lambda rewards, weights, temperature, delta: aggregate_max(rewards),
    "lse": lambda rewards, weights, temperature, delta: aggregate_lse(
        rewards, weights, temperature
    ),
    "threshold": lambda rewards, weights, temperature, delta: aggregate_threshold(
        rewards, weights, delta
    ),
}
"""Aggregation kind -> aggregate(rewards, reward_weights, temperature, delta)."""


def aggregate(
    rewards: npt.ArrayLike,
    kind: AggregationKind,
    reward_weights: npt.ArrayLike,
    temperature: float,
    delta: float,
) -> FloatArray:
    """Aggregate per-clip rewards (..., K) -> (...) with the chosen ``kind``."""
    aggregator = AGGREGATORS.get(kind)
    if aggregator is None:
        raise ValueError(f"aggregation kind must be one of {sorted(AGGREGATORS)}, got {kind!r}")
    return aggregator(rewards, reward_weights, temperature, delta)


def adaptive_weights_step(
    reward_weights: npt.ArrayLike,
    target_usage: npt.ArrayLike,
    usage: npt.ArrayLike,
    weight_lr: float,
    w_min: float = 0.0,
) -> FloatArray:
    """Adaptive reward weights (§8): w <- floor(softmax(log w + lambda (u* - u)), w_min).

    Inputs are normalised to shares first; the result sums to 1.
    """
    w = as_shares(reward_weights, "reward_weights", None)
    k = w.shape[0]
    target = as_shares(target_usage, "target_usage", k)
    measured = as_shares(usage, "usage", k)
    rate = check_scalar(weight_lr, "weight_lr", low=0.0)
    # w_i <- softmax_i(log(w_i + 1e-12) + lambda (u*_i - u_i))
    logits = np.log(w + LOG_EPS) + rate * (target - measured)
    return apply_floor(softmax(logits), w_min)


def curriculum_factor(boost: float, hold_steps: int, release_steps: int, steps: int) -> float:
    """Early-curriculum factor f: boost before hold_steps, then linear to 1 over release_steps."""
    factor = check_scalar(boost, "boost", low=0.0, open_low=True)
    for name, value in (
        ("hold_steps", hold_steps),
        ("release_steps", release_steps),
        ("steps", steps),
    ):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if steps < hold_steps:
        return factor
    if steps >= hold_steps + release_steps:
        return 1.0
    # f = boost + (1 - boost) (steps - hold_steps) / release_steps
    return factor + (1.0 - factor) * (steps - hold_steps) / release_steps


def curriculum_weights(
    reward_weights: npt.ArrayLike,
    boosted: npt.ArrayLike,
    boost: float,
    hold_steps: int,
    release_steps: int,
    steps: int,
) -> FloatArray:
    """§8 early curriculum: w'_i = w_i f for boosted clips (w_i otherwise), renormalised."""
    w = as_clip_vector(reward_weights, "reward_weights")
    mask = np.asarray(boosted)
    if mask.shape != w.shape or mask.dtype != np.bool_:
        raise ValueError(f"boosted must be a boolean array of shape {w.shape}")
    factor = curriculum_factor(boost, hold_steps, release_steps, steps)
    scaled = np.where(mask, w * factor, w)
    total = float(scaled.sum())
    if total <= 0.0:
        raise ValueError("reward_weights must not be all zero")
    result: FloatArray = scaled / total
    return result
