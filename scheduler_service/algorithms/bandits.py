"""Bandit rules that boost the weak clips (§6): per-clip moving averages, UCB and Thompson.

The need signal is "how under-trained is clip i": low success ``J^_i`` (or low normalised
return), so both rules raise the share of clips the policy fails. Batches of outcomes are
folded in order but vectorised: an observation followed by r later observations of the same
clip in the batch is discounted r times. Random draws use the ``np.random.Generator`` passed in.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from scheduler_service.algorithms.probabilities import (
    FloatArray,
    apply_floor,
    as_clip_vector,
    as_float_array,
    check_scalar,
    softmax,
)

IntArray = npt.NDArray[np.int64]


def _as_clip_ids(clip_ids: npt.ArrayLike, num_clips: int) -> IntArray:
    """``clip_ids`` as a 1-D int64 array of indices in [0, num_clips)."""
    raw = np.asarray(clip_ids)
    if raw.ndim != 1:
        raise ValueError(f"clip_ids must be a 1-D array, got shape {raw.shape}")
    if raw.size and not np.issubdtype(raw.dtype, np.integer):
        as_float = as_float_array(raw, "clip_ids")
        if np.any(as_float != np.round(as_float)):
            raise ValueError("clip_ids must be integers")
    ids = raw.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= num_clips):
        raise ValueError(f"clip_ids must be in [0, {num_clips})")
    return ids


def _later_occurrences(clip_ids: IntArray) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """Per observation: how many later observations share its clip, and whether it is the first."""
    n = clip_ids.shape[0]
    order = np.argsort(clip_ids, kind="stable")
    sorted_ids = clip_ids[order]
    index = np.arange(n)
    starts = np.ones(n, dtype=bool)
    starts[1:] = sorted_ids[1:] != sorted_ids[:-1]
    rank = index - np.maximum.accumulate(np.where(starts, index, 0))
    group_size = np.bincount(sorted_ids)[sorted_ids] if n else np.zeros(0, dtype=np.int64)
    later = np.empty(n, dtype=np.int64)
    later[order] = group_size - 1 - rank
    first = np.empty(n, dtype=bool)
    first[order] = rank == 0
    return later, first


def _batch_inputs(
    clip_ids: npt.ArrayLike, values: npt.ArrayLike, num_clips: int, name: str
) -> tuple[IntArray, FloatArray]:
    ids = _as_clip_ids(clip_ids, num_clips)
    batch = as_float_array(values, name)
    if batch.shape != ids.shape:
        raise ValueError(f"{name} must have the shape of clip_ids {ids.shape}, got {batch.shape}")
    return ids, batch


def ema_update(
    ema: npt.ArrayLike,
    count: npt.ArrayLike,
    clip_ids: npt.ArrayLike,
    values: npt.ArrayLike,
    alpha: float,
) -> tuple[FloatArray, FloatArray]:
    """Fold outcomes, in order, into the per-clip moving average J^_i; returns (ema, count).

    J^_i <- (1 - alpha) J^_i + alpha v for each value v of clip i; a clip's first observation
    ever (count 0) sets J^_i = v.
    """
    previous = as_clip_vector(ema, "ema", non_negative=False)
    k = previous.shape[0]
    seen = as_clip_vector(count, "count", k)
    ids, batch = _batch_inputs(clip_ids, values, k, "values")
    rate = check_scalar(alpha, "alpha", low=0.0, high=1.0, open_low=True)
    later, first = _later_occurrences(ids)
    new_obs = np.bincount(ids, minlength=k).astype(np.float64)
    # An observation followed by r later ones of its clip ends with weight alpha (1 - alpha)^r,
    # or (1 - alpha)^r if it is the clip's first observation ever (it replaces the EMA).
    decay = (1.0 - rate) ** later.astype(np.float64)
    sets_ema = first & (seen[ids] == 0.0)
    weight = np.where(sets_ema, decay, rate * decay)
    kept = np.where((seen == 0.0) & (new_obs > 0.0), 0.0, previous * (1.0 - rate) ** new_obs)
    new_ema: FloatArray = kept + np.bincount(ids, weights=weight * batch, minlength=k)
    return new_ema, seen + new_obs


def ucb_probs(
    pulls: npt.ArrayLike,
    ema_signal: npt.ArrayLike,
    c: float,
    temperature: float,
    p_min: float,
) -> FloatArray:
    """UCB shares: p = floor(softmax(score / T)), score_i = (1 - J^_i) + c sqrt(2 ln N / n_i).

    ``pulls`` n_i are episodes per clip (N = sum n_i), ``ema_signal`` J^_i in [0, 1]. An unpulled
    clip gets the largest score any pulled clip could have, 1 + c sqrt(2 ln N) (or the largest
    actual score if higher), so it is tried first.
    """
    n = as_clip_vector(pulls, "pulls")
    k = n.shape[0]
    signal = as_clip_vector(ema_signal, "ema_signal", k)
    if np.any(signal > 1.0):
        raise ValueError("ema_signal must be in [0, 1]")
    exploration = check_scalar(c, "c", low=0.0)
    tau = check_scalar(temperature, "temperature", low=0.0, open_low=True)
    pulled = n > 0.0
    if not pulled.any():
        return apply_floor(np.ones(k), p_min)
    log_total = np.log(max(float(n.sum()), 1.0))
    # score_i = (1 - J^_i) + c sqrt(2 ln N / n_i) for pulled clips.
    bonus = exploration * np.sqrt(2.0 * log_total / np.where(pulled, n, 1.0))
    score = 1.0 - signal + bonus
    unpulled_score = max(1.0 + exploration * np.sqrt(2.0 * log_total), float(score[pulled].max()))
    score = np.where(pulled, score, unpulled_score)
    return apply_floor(softmax(score / tau), p_min)


def thompson_probs(
    successes: npt.ArrayLike,
    failures: npt.ArrayLike,
    prior: tuple[float, float],
    p_min: float,
    rng: np.random.Generator,
    draws: int = 256,
) -> FloatArray:
    """Thompson shares: p_i = P(clip i has the largest failure probability theta_i), floored.

    theta_i ~ Beta(prior_a + failures_i, prior_b + successes_i); p_i is the share of ``draws``
    joint draws (one (draws, K) matrix) in which clip i has the largest theta.
    """
    s = as_clip_vector(successes, "successes")
    k = s.shape[0]
    f = as_clip_vector(failures, "failures", k)
    if len(prior) != 2:
        raise ValueError(f"prior must be a pair (a, b), got {prior!r}")
    prior_a = check_scalar(prior[0], "prior a", low=0.0, open_low=True)
    prior_b = check_scalar(prior[1], "prior b", low=0.0, open_low=True)
    if int(draws) != draws or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    theta = rng.beta(prior_a + f, prior_b + s, size=(int(draws), k))
    winners = np.argmax(theta, axis=1)
    shares = np.bincount(winners, minlength=k).astype(np.float64) / float(draws)
    return apply_floor(shares, p_min)


def discounted_counts(
    successes: npt.ArrayLike,
    failures: npt.ArrayLike,
    clip_ids: npt.ArrayLike,
    success_values: npt.ArrayLike,
    gamma: float,
) -> tuple[FloatArray, FloatArray]:
    """Fold outcomes, in order, into discounted Beta pseudo-counts; returns (successes, failures).

    Per outcome of clip i with success s in [0, 1]: S_i <- gamma S_i + s, F_i <- gamma F_i + 1 - s.
    """
    prior_s = as_clip_vector(successes, "successes")
    k = prior_s.shape[0]
    prior_f = as_clip_vector(failures, "failures", k)
    ids, batch = _batch_inputs(clip_ids, success_values, k, "success_values")
    if np.any((batch < 0.0) | (batch > 1.0)):
        raise ValueError("success_values must be in [0, 1]")
    discount = check_scalar(gamma, "gamma", low=0.0, high=1.0, open_low=True)
    later, _ = _later_occurrences(ids)
    new_obs = np.bincount(ids, minlength=k).astype(np.float64)
    # An outcome followed by r later outcomes of its clip is discounted gamma^r.
    weight = discount ** later.astype(np.float64)
    carry = discount**new_obs
    new_s = prior_s * carry + np.bincount(ids, weights=weight * batch, minlength=k)
    new_f = prior_f * carry + np.bincount(ids, weights=weight * (1.0 - batch), minlength=k)
    return new_s, new_f
