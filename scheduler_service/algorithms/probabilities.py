"""Clip-sampling probabilities: shares, the probability floor and the usage controller (§1, §2).

Every function takes arrays over clips (length K), never mutates them, and returns a new
float64 probability vector that is finite, non-negative and sums to 1. Bad input (NaN/Inf,
negative values, wrong shape, out-of-range parameters) raises ``ValueError`` naming it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
"""A float64 array (over clips unless stated)."""

UsageMeasure = Literal["episodes", "steps"]
"""What usage counts: finished episodes (the note's default) or env steps."""

LOG_EPS = 1e-12
"""Added inside ``log p`` so that a zero probability gives a large negative logit, not -inf."""


def as_float_array(values: npt.ArrayLike, name: str) -> FloatArray:
    """``values`` as a finite float64 array; ValueError naming ``name`` otherwise."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite (got NaN or Inf)")
    return array


def as_clip_vector(
    values: npt.ArrayLike, name: str, size: int | None = None, *, non_negative: bool = True
) -> FloatArray:
    """``values`` as a finite, non-empty 1-D float64 vector (of length ``size`` if given)."""
    array = as_float_array(values, name)
    if array.ndim != 1 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    if size is not None and array.shape[0] != size:
        raise ValueError(f"{name} must have length {size} (one per clip), got {array.shape[0]}")
    if non_negative and np.any(array < 0.0):
        raise ValueError(f"{name} must be non-negative")
    return array


def check_scalar(
    value: float, name: str, *, low: float = -np.inf, high: float = np.inf, open_low: bool = False
) -> float:
    """``value`` as a finite float in [low, high] (or (low, high] if ``open_low``)."""
    number = float(value)
    below = number <= low if open_low else number < low
    if not np.isfinite(number) or below or number > high:
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be finite and in {bracket}{low}, {high}], got {value!r}")
    return number


def as_shares(values: npt.ArrayLike, name: str, size: int | None) -> FloatArray:
    """A share vector of length ``size`` (normalised to sum 1); ValueError naming ``name``."""
    array = as_clip_vector(values, name, size)
    largest = float(array.max())
    if largest <= 0.0:
        raise ValueError(f"{name} must not be all zero")
    # Divide by the largest value first so that the sum cannot overflow.
    scaled = array / largest
    result: FloatArray = scaled / scaled.sum()
    return result


def softmax(logits: FloatArray) -> FloatArray:
    """Numerically stable softmax over the last axis: exp(z - max z) / sum exp(z - max z)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    result: FloatArray = shifted / shifted.sum(axis=-1, keepdims=True)
    return result


def normalize_shares(values: npt.ArrayLike) -> FloatArray:
    """Non-negative, finite, not-all-zero values over clips, scaled to sum 1."""
    return as_shares(values, "values", None)


def apply_floor(probs: npt.ArrayLike, p_min: float) -> FloatArray:
    """Raise every probability to at least ``p_min``, keeping the others' ratios; sums to 1.

    The m smallest clips are set to p_min and the rest are scaled by
    s_m = (1 - m p_min) / sum_{j >= m} p_(j) (p_(j) sorted ascending), with the smallest m such
    that every scaled clip stays >= p_min. A vector already above the floor comes back as is.
    Requires 0 <= p_min <= 1/K.
    """
    p = normalize_shares(probs)
    k = p.shape[0]
    check_scalar(p_min, "p_min", low=0.0, high=1.0)
    if p_min * k > 1.0 + 1e-12:
        raise ValueError(f"p_min must be <= 1/K = {1.0 / k:.6g} for K={k} clips, got {p_min!r}")
    if p_min == 0.0 or float(p.min()) >= p_min:
        return p
    order = np.argsort(p, kind="stable")
    ascending = p[order]
    # tail[m] = sum_{j >= m} p_(j); flooring the m smallest scales the rest by s_m.
    tail = np.cumsum(ascending[::-1])[::-1]
    floored_mass = np.arange(k) * p_min
    # The condition p_(m) s_m >= p_min is monotone in m; m = K - 1 always holds (K p_min <= 1).
    holds = ascending * (1.0 - floored_mass) >= p_min * tail
    holds[-1] = True
    m = int(np.argmax(holds))
    scale = max(1.0 - m * p_min, 0.0) / float(ascending[m:].sum())
    result = np.empty(k, dtype=np.float64)
    result[order[:m]] = p_min
    result[order[m:]] = np.maximum(ascending[m:] * scale, p_min)
    return result


def usage_shares(
    episodes: npt.ArrayLike, steps: npt.ArrayLike, measure: UsageMeasure
) -> FloatArray:
    """Measured usage share u_i per clip, by episodes or env steps; uniform if nothing ran."""
    by_measure = {"episodes": episodes, "steps": steps}
    if measure not in by_measure:
        raise ValueError(f"measure must be 'episodes' or 'steps', got {measure!r}")
    episode_counts = as_clip_vector(episodes, "episodes")
    as_clip_vector(steps, "steps", episode_counts.shape[0])
    counts = as_clip_vector(by_measure[measure], measure)
    if float(counts.sum()) <= 0.0:
        return np.full(counts.shape[0], 1.0 / counts.shape[0])
    return normalize_shares(counts)


def controller_step(
    clip_probs: npt.ArrayLike,
    target_usage: npt.ArrayLike,
    usage: npt.ArrayLike,
    eta: float,
    p_min: float,
) -> FloatArray:
    """One usage-controller update: p <- floor(softmax(log p + eta (u* - u))).

    ``clip_probs``, ``target_usage`` and ``usage`` are normalised to shares first.
    """
    p = as_shares(clip_probs, "clip_probs", None)
    k = p.shape[0]
    target = as_shares(target_usage, "target_usage", k)
    measured = as_shares(usage, "usage", k)
    rate = check_scalar(eta, "eta", low=0.0)
    # p_i <- softmax_i(log(p_i + 1e-12) + eta (u*_i - u_i))
    logits = np.log(p + LOG_EPS) + rate * (target - measured)
    return apply_floor(softmax(logits), p_min)


def difficulty_step(
    clip_probs: npt.ArrayLike,
    target_usage: npt.ArrayLike,
    success: npt.ArrayLike,
    eta: float,
    p_min: float,
) -> FloatArray:
    """Difficulty variant: p <- floor(softmax(log p + eta (s_bar - s))), s_bar = sum_i u*_i s_i.

    Clips whose success ``s_i`` (in [0, 1]) is below the target-weighted mean gain probability.
    """
    p = as_shares(clip_probs, "clip_probs", None)
    k = p.shape[0]
    target = as_shares(target_usage, "target_usage", k)
    s = as_clip_vector(success, "success", k)
    if np.any(s > 1.0):
        raise ValueError("success must be in [0, 1]")
    rate = check_scalar(eta, "eta", low=0.0)
    s_bar = float(target @ s)
    # p_i <- softmax_i(log(p_i + 1e-12) + eta (s_bar - s_i))
    logits = np.log(p + LOG_EPS) + rate * (s_bar - s)
    return apply_floor(softmax(logits), p_min)
