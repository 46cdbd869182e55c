"""Batched clip sampling from fixed probabilities, fast at 10,000 clips.

``ClipSampler`` is built once per distribution (rebuild it when ``clip_probs`` change) and
holds two tables: the cumulative distribution, searched with ``searchsorted`` for a few
draws, and a Vose alias table, O(1) per draw, for large batches. The alias table is built
without a Python loop over clips (see ``_alias_table``).
"""

from __future__ import annotations

import sys

import numpy as np
import numpy.typing as npt

from scheduler_service.algorithms.probabilities import FloatArray, normalize_shares

IntArray = npt.NDArray[np.int64]

ALIAS_MIN_DRAWS = 128
"""``sample`` uses the alias table from this many draws on (see bench/bench_sampling.py)."""

ALIAS_MIN_CLIPS = 64
"""Below this many clips the CDF search is about as fast at any n, so the alias table is unused."""


def _merge_ranks(first: FloatArray, second: FloatArray) -> tuple[IntArray, IntArray]:
    """For two ascending arrays: #{second < first_i} per i, and #{first <= second_j} per j.

    One stable merge (timsort on two sorted runs is linear), placing ``first`` before
    ``second`` on ties; about twice as fast as two ``searchsorted`` calls here.
    """
    order = np.argsort(np.concatenate((first, second)), kind="stable")
    position = np.empty(order.shape[0], dtype=np.int64)
    position[order] = np.arange(order.shape[0])
    before_first = position[: first.shape[0]] - np.arange(first.shape[0])
    before_second = position[first.shape[0] :] - np.arange(second.shape[0])
    return before_first, before_second


def _alias_table(probs: FloatArray) -> tuple[FloatArray, IntArray]:
    """Vose alias table (keep probability, alias) for ``probs``, built with array operations.

    With q_i = K p_i, column i keeps clip i with probability prob_i and gives the rest to
    alias_i. Lay the deficits 1 - q_j of the small clips (q_j < 1) end to end on a line, and
    the surpluses q_l - 1 of the large clips beside them: small j takes its whole deficit
    from the large clip whose surplus interval holds the start of j's deficit. A large clip
    l overdrawn by o_l (the last small it serves runs past its interval) keeps
    prob_l = 1 - o_l and takes o_l from the next large clip, exactly as sequential Vose
    turns an exhausted large clip into a small one. Every clip's mass then equals q_i.
    """
    k = probs.shape[0]
    q = probs * k
    prob = np.ones(k, dtype=np.float64)
    alias = np.arange(k, dtype=np.int64)
    is_small = q < 1.0
    if is_small.all():
        # Rounding can put every q_i a hair below 1 (near-uniform probs): the largest is "large".
        is_small[np.argmax(q)] = False
    small = np.flatnonzero(is_small)
    large = np.flatnonzero(~is_small)
    if small.size == 0:
        return prob, alias
    small_q = q[small]
    deficit_end = np.cumsum(1.0 - small_q)
    # deficit_start[j] = deficit_end[j - 1] exactly, so one merge answers both questions below.
    deficit_start = np.empty_like(deficit_end)
    deficit_start[0] = 0.0
    deficit_start[1:] = deficit_end[:-1]
    surplus_end = np.cumsum(q[large] - 1.0)
    starts_before, served_by = _merge_ranks(surplus_end, deficit_start)
    # Small j is served by large l with surplus_end[l-1] <= deficit_start[j] < surplus_end[l],
    # i.e. l = #{surplus_end <= deficit_start[j]}.
    donor = np.minimum(served_by, large.size - 1)
    prob[small] = small_q
    alias[small] = large[donor]
    # Overdraw of large l: the end of the deficit running over surplus_end[l], minus it. That
    # deficit is number #{deficit_end < surplus_end[l]}, i.e. #{deficit_start < surplus_end[l]}
    # without deficit_start[0] = 0 and with deficit_end[-1].
    crossing = starts_before - (surplus_end > 0.0) + (deficit_end[-1] < surplus_end)
    ends = deficit_end[np.minimum(crossing, small.size - 1)]
    overdraw = np.where(crossing < small.size, ends - surplus_end, 0.0)
    overdraw[-1] = 0.0
    overdraw = np.clip(overdraw, 0.0, 1.0)
    prob[large] = 1.0 - overdraw
    alias[large[:-1]] = np.where(overdraw[:-1] > 0.0, large[1:], large[:-1])
    return prob, alias


class ClipSampler:
    """Immutable sampler of clip ids from fixed probabilities (CDF search + Vose alias table)."""

    __slots__ = ("_alias_from", "_cdf", "_num_clips", "_probs", "_table")

    def __init__(self, probs: npt.ArrayLike) -> None:
        p = normalize_shares(probs)
        self._probs = p
        self._num_clips: int = p.shape[0]
        cumulative = np.cumsum(p)
        # Dividing by the last entry makes it exactly 1.0, so u in [0, 1) always lands on a
        # clip with positive probability (zero-probability clips repeat the previous value).
        self._cdf: FloatArray = cumulative / cumulative[-1]
        # The CDF search costs ~log2 K per draw, the alias table a constant: see the bench.
        # With few clips ``sample`` never uses the alias table, so it is built on first use.
        self._alias_from = ALIAS_MIN_DRAWS if self._num_clips >= ALIAS_MIN_CLIPS else sys.maxsize
        self._table: tuple[FloatArray, IntArray] | None = (
            _alias_table(p) if self._num_clips >= ALIAS_MIN_CLIPS else None
        )

    @property
    def probs(self) -> FloatArray:
        """The sampling probabilities (a copy, summing to 1)."""
        return self._probs.copy()

    @property
    def num_clips(self) -> int:
        """How many clips K the sampler draws from."""
        return self._num_clips

    def sample(self, n: int, rng: np.random.Generator) -> IntArray:
        """``n`` >= 1 independent clip ids (int64) drawn with probabilities ``probs``."""
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        count = int(n)
        if count < self._alias_from:
            return self.sample_inverse_cdf(count, rng)
        return self.sample_alias(count, rng)

    def sample_inverse_cdf(self, n: int, rng: np.random.Generator) -> IntArray:
        """``n`` draws by inverse CDF: the first clip whose cumulative probability exceeds u."""
        found = self._cdf.searchsorted(rng.random(n), side="right")
        result: IntArray = found.astype(np.int64, copy=False)
        return result

    def sample_alias(self, n: int, rng: np.random.Generator) -> IntArray:
        """``n`` alias draws: column c = floor(K u), kept if frac(K u) < keep_c, else alias_c."""
        # One uniform per draw: its integer part picks the column, its fraction the coin
        # (53 - log2 K bits of resolution left for the coin, ample for K <= 1e6).
        if self._table is None:
            self._table = _alias_table(self._probs)  # idempotent, so a race is harmless
        keep_prob, alias = self._table
        scaled = rng.random(n) * self._num_clips
        column = scaled.astype(np.int64)
        np.minimum(column, self._num_clips - 1, out=column)
        keep = scaled - column < keep_prob[column]
        drawn: IntArray = np.where(keep, column, alias[column])
        return drawn
