"""The service's per-run arithmetic over per-clip arrays, built on ``algorithms``.

Pure functions (numpy in, numpy out, random generator passed in): one controller update
(smoothed usage, the strategy's new ``clip_probs``, adaptive reward weights and the
early-curriculum boost), the partial-override rule for targets / probabilities / weights,
and the merge of a batch of per-episode reward-term moments by (clip, term). The maths
itself lives in ``scheduler_service.algorithms``; this module only decides which piece
runs when, on which arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from scheduler_service.algorithms.aggregation import adaptive_weights_step, curriculum_weights
from scheduler_service.algorithms.bandits import thompson_probs, ucb_probs
from scheduler_service.algorithms.normalizers import (
    reduce_moments_by_key as reduce_moments_by_key,  # moved to algorithms; re-exported
)
from scheduler_service.algorithms.probabilities import (
    controller_step,
    difficulty_step,
    normalize_shares,
)
from scheduler_service.domain import AggregationParams, StrategyKind, StrategyParams

SHARE_TOLERANCE = 1e-9
"""Slack allowed when partial shares sum to exactly one."""


@dataclass(frozen=True)
class PolicyInputs:
    """What one controller update looks at (arrays over clips, in clip id order)."""

    target_usage: np.ndarray
    clip_probs: np.ndarray
    base_weights: np.ndarray
    """Adaptive reward weights before the curriculum boost."""
    reward_weights: np.ndarray
    """The weights actors use now (base weights with the boost)."""
    usage: np.ndarray
    """Smoothed usage ``u`` (see ``smoothed_usage``)."""
    success: np.ndarray
    """Moving-average success ``J^_i``; 0 for clips never reported (treated as untrained)."""
    episodes: np.ndarray
    thompson_successes: np.ndarray
    thompson_failures: np.ndarray
    total_steps: int


@dataclass(frozen=True)
class PolicyStep:
    """The result of one controller update."""

    clip_probs: np.ndarray
    base_weights: np.ndarray
    reward_weights: np.ndarray


def smoothed_usage(previous: np.ndarray | None, window: np.ndarray, ema: float) -> np.ndarray:
    """u <- ema * u_window + (1 - ema) * u_previous; the first window is taken as is."""
    if previous is None:
        return window
    return normalize_shares(ema * window + (1.0 - ema) * previous)


def _static(params: StrategyParams, x: PolicyInputs, rng: np.random.Generator) -> np.ndarray:
    return x.clip_probs


def _controller(params: StrategyParams, x: PolicyInputs, rng: np.random.Generator) -> np.ndarray:
    # p <- softmax(log p + eta (u* - u)), floored (§2)
    return controller_step(x.clip_probs, x.target_usage, x.usage, params.eta, _p_min(params))


def _difficulty(params: StrategyParams, x: PolicyInputs, rng: np.random.Generator) -> np.ndarray:
    # p <- softmax(log p + eta (s_bar - s)), s_bar = sum_i u*_i s_i (§2, difficulty variant)
    return difficulty_step(x.clip_probs, x.target_usage, x.success, params.eta, _p_min(params))


def _ucb(params: StrategyParams, x: PolicyInputs, rng: np.random.Generator) -> np.ndarray:
    # score_i = (1 - J^_i) + c sqrt(2 ln N / n_i); p = softmax(score / T), floored (§6)
    return ucb_probs(
        x.episodes.astype(np.float64),
        x.success,
        params.ucb_c,
        params.ucb_temperature,
        _p_min(params),
    )


def _thompson(params: StrategyParams, x: PolicyInputs, rng: np.random.Generator) -> np.ndarray:
    # theta_i ~ Beta(a + failures_i, b + successes_i); p_i = P(clip i fails most) (§6)
    return thompson_probs(
        x.thompson_successes, x.thompson_failures, params.thompson_prior, _p_min(params), rng
    )


STRATEGY_STEPS: Mapping[
    StrategyKind, Callable[[StrategyParams, PolicyInputs, np.random.Generator], np.ndarray]
] = {
    "static": _static,
    "controller": _controller,
    "difficulty": _difficulty,
    "ucb": _ucb,
    "thompson": _thompson,
}
"""Strategy kind -> new ``clip_probs`` at a controller update."""


def _p_min(params: StrategyParams) -> float:
    return 0.0 if params.p_min is None else params.p_min


def effective_weights(
    aggregation: AggregationParams,
    clip_names: tuple[str, ...],
    base_weights: np.ndarray,
    total_steps: int,
) -> np.ndarray:
    """The weights actors use: the base weights with the §8 early-curriculum boost applied."""
    curriculum = aggregation.curriculum
    if curriculum is None:
        return base_weights
    boosted = np.isin(np.asarray(clip_names, dtype=object), list(curriculum.clips))
    return curriculum_weights(
        base_weights,
        boosted,
        curriculum.boost,
        curriculum.hold_steps,
        curriculum.release_steps,
        total_steps,
    )


def policy_step(
    strategy: StrategyParams,
    aggregation: AggregationParams,
    clip_names: tuple[str, ...],
    x: PolicyInputs,
    rng: np.random.Generator,
    *,
    clip_probs_frozen: bool,
    reward_weights_frozen: bool,
) -> PolicyStep:
    """One controller update: new ``clip_probs`` (unless frozen) and reward weights."""
    clip_probs = (
        x.clip_probs if clip_probs_frozen else STRATEGY_STEPS[strategy.kind](strategy, x, rng)
    )
    if reward_weights_frozen:
        return PolicyStep(clip_probs, x.base_weights, x.reward_weights)
    base = x.base_weights
    if aggregation.adaptive_weights:
        # w <- softmax(log w + lambda (u* - u)) (§8)
        base = adaptive_weights_step(base, x.target_usage, x.usage, aggregation.weight_lr)
    return PolicyStep(
        clip_probs, base, effective_weights(aggregation, clip_names, base, x.total_steps)
    )


def invalid_step(step: PolicyStep) -> str | None:
    """Why a policy step cannot be used (a non-finite or negative value, probabilities or
    weights that do not sum to 1), or None when it is sound."""
    for name in ("clip_probs", "base_weights", "reward_weights"):
        values = np.asarray(getattr(step, name), dtype=np.float64)
        if not np.all(np.isfinite(values)):
            return f"{name} not finite"
        if np.any(values < 0.0):
            return f"{name} negative"
    for name in ("clip_probs", "reward_weights"):
        total = float(np.sum(getattr(step, name)))
        if abs(total - 1.0) > 1e-6:
            return f"{name} sum to {total!r}, not 1"
    return None


def guarded_policy_step(
    strategy: StrategyParams,
    aggregation: AggregationParams,
    clip_names: tuple[str, ...],
    x: PolicyInputs,
    rng: np.random.Generator,
    *,
    clip_probs_frozen: bool,
    reward_weights_frozen: bool,
) -> tuple[PolicyStep, str | None]:
    """``policy_step``, or the last good policy and the reason when the update fails or
    gives values a sampler cannot use: no configuration can make a run stop taking outcomes."""
    last_good = PolicyStep(x.clip_probs, x.base_weights, x.reward_weights)
    try:
        with np.errstate(all="ignore"):
            step = policy_step(
                strategy,
                aggregation,
                clip_names,
                x,
                rng,
                clip_probs_frozen=clip_probs_frozen,
                reward_weights_frozen=reward_weights_frozen,
            )
    except (ArithmeticError, ValueError) as exc:
        return last_good, f"{strategy.kind} update failed: {exc}"
    reason = invalid_step(step)
    return (last_good, f"{strategy.kind} update rejected: {reason}") if reason else (step, None)


def apply_partial_shares(current: np.ndarray, named: Mapping[int, float]) -> np.ndarray:
    """The partial-override rule for targets, probabilities and weights.

    Naming every clip gives relative values: they are normalised to sum 1. Naming some
    clips gives their new shares exactly (their sum S must be <= 1); the clips left out
    share the rest, 1 - S, in proportion to their current values. If the clips left out
    all have value 0, the named values are normalised instead. Raises ValueError.
    """
    k = current.shape[0]
    values = np.array([float(v) for v in named.values()], dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("values must be finite and non-negative")
    ids = np.fromiter(named.keys(), dtype=np.int64, count=len(named))
    if len(named) == k:
        result = np.zeros(k)
        result[ids] = values
        return normalize_shares(result)
    named_sum = float(values.sum())
    if named_sum > 1.0 + SHARE_TOLERANCE:
        raise ValueError(
            f"the named shares sum to {named_sum:.6g} > 1 while {k - len(named)} clip(s) are "
            "left out; name every clip to give relative values, or give shares summing to <= 1"
        )
    rest = np.ones(k, dtype=bool)
    rest[ids] = False
    rest_mass = float(current[rest].sum())
    result = np.zeros(k)
    result[ids] = values
    if rest_mass > 0.0:
        result[rest] = current[rest] / rest_mass * max(0.0, 1.0 - named_sum)
    return normalize_shares(result)
