"""Per-clip outcome statistics as a monoid of batch deltas (pure numpy).

Every outcome batch changes a run's per-clip statistics: counters, two moving averages,
discounted Beta pseudo-counts and per-term reward moments. Folding a batch into the
stored statistics is a read-modify-write of one row per touched clip (and per touched
clip and term); at 10,000 clips a 256-outcome batch touches ~256 clips, ~1,800 rows.
Instead, each batch is summarised once, independently of the state it will be applied
to, as a ``ClipDelta`` over the clips it touched, and deltas compose associatively
("apply A, then B" is one delta), so the store appends one delta per batch and folds
them into the base statistics only now and then. Per clip i, with n observations of
the clip in the delta, in order:

- counters (episodes, steps, return and success sums) add: ``N <- N + n``;
- the moving average ``J <- (1 - a) J + a v`` over the delta's values ``v_1..v_n`` is the
  affine map ``J -> d J + c`` with ``d = (1 - a)^n`` and ``c = sum_j a (1 - a)^(n - j) v_j``,
  except that a clip's first observation *ever* sets ``J = v`` (the rule of
  ``bandits.ema_update``). Whether a delta holds the first observation depends on the
  state it is applied to (episodes == 0 before it), so the delta also carries
  ``c_first = (1 - a)^(n - 1) v_1 + sum_{j>1} a (1 - a)^(n - j) v_j``, the value of ``J``
  when the clip was unseen: ``apply(J) = d J + c`` if the clip was seen, else ``c_first``.
  Composition, A then B: ``d = d_A d_B``, ``c = c_A d_B + c_B``,
  ``c_first = c_first_A d_B + c_B`` if A observed the clip, else ``c_first_B``;
- discounted pseudo-counts ``S <- g S + s``, ``F <- g F + (1 - s)`` are the affine maps
  ``S -> g^n S + sum_j g^(n - j) s_j``, which compose the same way (no first-ever case);
- per-term reward moments (count, mean, M2) merge with Chan et al. (``merge_moments``),
  exact and associative; a missing (clip, term) entry is count 0, the merge identity.

``apply_delta`` applies one delta to ``ClipStats`` with exactly the floating-point
operations of the per-batch functions in ``bandits`` and ``normalizers``, so folding
batch deltas one by one in order gives the numbers the row-per-clip store gave;
``compose`` is the monoid product (equal up to rounding) used to prove the algebra and
available to merge deltas.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler_service.algorithms.bandits import _later_occurrences
from scheduler_service.algorithms.normalizers import Moments, merge_moments, reduce_moments_by_key
from scheduler_service.algorithms.probabilities import FloatArray

IntArray = npt.NDArray[np.int64]


def _sums(index: IntArray, weights: FloatArray, size: int) -> FloatArray:
    """Per-bin sums of ``weights`` (``np.bincount``; each bin sums in input order)."""
    return np.asarray(np.bincount(index, weights=weights, minlength=size), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class ClipStats:
    """A run's per-clip statistics: arrays over its K clips, moments (K, T) over ``terms``."""

    episodes: IntArray
    steps: IntArray
    return_sum: FloatArray
    success_sum: FloatArray
    ema_success: FloatArray
    ema_return: FloatArray
    ts_successes: FloatArray
    ts_failures: FloatArray
    terms: tuple[str, ...]
    """Reward-term names, sorted; the columns of ``moments``."""
    moments: Moments
    """Per (clip, term) count, mean and M2; count 0 where the clip never had the term."""

    @classmethod
    def zeros(cls, num_clips: int) -> ClipStats:
        """The statistics of a run without outcomes."""
        k = int(num_clips)
        return cls(
            episodes=np.zeros(k, np.int64),
            steps=np.zeros(k, np.int64),
            return_sum=np.zeros(k),
            success_sum=np.zeros(k),
            ema_success=np.zeros(k),
            ema_return=np.zeros(k),
            ts_successes=np.zeros(k),
            ts_failures=np.zeros(k),
            terms=(),
            moments=Moments.zeros((k, 0)),
        )

    @property
    def num_clips(self) -> int:
        """K."""
        return int(self.episodes.shape[0])


@dataclass(frozen=True, eq=False)
class AffineDelta:
    """Per touched clip, ``x -> decay x + carry``, or ``first`` when the clip was unseen."""

    decay: FloatArray
    carry: FloatArray
    first: FloatArray


@dataclass(frozen=True, eq=False)
class ClipDelta:
    """What one or more outcome batches do to ``ClipStats``, over the clips they touched.

    Arrays are aligned with ``clip_ids`` (sorted, unique; every entry has episodes > 0),
    moments are (m, T) over ``terms`` (sorted) with count 0 for absent entries.
    """

    clip_ids: IntArray
    episodes: IntArray
    steps: IntArray
    return_sum: FloatArray
    success_sum: FloatArray
    ema_success: AffineDelta
    ema_return: AffineDelta
    ts_decay: FloatArray
    """g^n: the factor of the pseudo-counts before the delta."""
    ts_successes: FloatArray
    ts_failures: FloatArray
    terms: tuple[str, ...]
    moments: Moments

    @classmethod
    def empty(cls) -> ClipDelta:
        """The identity: touches no clip."""
        z, zi = np.zeros(0), np.zeros(0, np.int64)
        affine = AffineDelta(z, z, z)
        return cls(zi, zi, zi, z, z, affine, affine, z, z, z, (), Moments.zeros((0, 0)))


def _ema_delta(
    local: IntArray,
    later: IntArray,
    first: npt.NDArray[np.bool_],
    values: FloatArray,
    m: int,
    a: float,
) -> AffineDelta:
    """(d, c, c_first) of the moving average for the observations ``values`` of clips ``local``."""
    n = np.bincount(local, minlength=m).astype(np.float64)
    # an observation followed by r later ones of its clip ends with weight a (1 - a)^r,
    # or (1 - a)^r if it set the average (the clip's first observation ever)
    decay_r = (1.0 - a) ** later.astype(np.float64)
    weight = a * decay_r
    first_weight = np.where(first, decay_r, weight)
    return AffineDelta(
        decay=(1.0 - a) ** n,
        carry=_sums(local, weight * values, m),
        first=_sums(local, first_weight * values, m),
    )


def batch_delta(
    clip_ids: npt.ArrayLike,
    steps: npt.ArrayLike,
    returns: npt.ArrayLike,
    success: npt.ArrayLike,
    *,
    ema_alpha: float,
    thompson_gamma: float,
    term_clip_ids: npt.ArrayLike | None = None,
    term_names: Sequence[str] = (),
    term_moments: Moments | None = None,
) -> ClipDelta:
    """The delta of an ordered batch of outcomes (one entry per outcome, in order).

    ``term_clip_ids``, ``term_names`` and ``term_moments`` list the reward-term moments
    of the outcomes (one entry per outcome and term with count > 0).
    """
    ids = np.asarray(clip_ids, dtype=np.int64)
    touched, inverse = np.unique(ids, return_inverse=True)
    local = inverse.reshape(-1).astype(np.int64)
    m = touched.shape[0]
    step_values = np.asarray(steps, dtype=np.float64)
    return_values = np.asarray(returns, dtype=np.float64)
    success_values = np.asarray(success, dtype=np.float64)
    later, first = _later_occurrences(local)
    n = np.bincount(local, minlength=m).astype(np.float64)
    g = float(thompson_gamma)
    # S <- g S + s per outcome: an outcome followed by r later ones of its clip weighs g^r
    ts_weight = g ** later.astype(np.float64)
    terms, moments = _dense_term_moments(touched, term_clip_ids, term_names, term_moments)
    return ClipDelta(
        clip_ids=touched.astype(np.int64),
        episodes=n.astype(np.int64),
        steps=np.rint(_sums(local, step_values, m)).astype(np.int64),
        return_sum=_sums(local, return_values, m),
        success_sum=_sums(local, success_values, m),
        ema_success=_ema_delta(local, later, first, success_values, m, float(ema_alpha)),
        ema_return=_ema_delta(local, later, first, return_values, m, float(ema_alpha)),
        ts_decay=g**n,
        ts_successes=_sums(local, ts_weight * success_values, m),
        ts_failures=_sums(local, ts_weight * (1.0 - success_values), m),
        terms=terms,
        moments=moments,
    )


def _dense_term_moments(
    touched: IntArray,
    term_clip_ids: npt.ArrayLike | None,
    term_names: Sequence[str],
    term_moments: Moments | None,
) -> tuple[tuple[str, ...], Moments]:
    """Per-entry term moments reduced (Chan) per (clip, term) into (m, T) arrays."""
    m = touched.shape[0]
    if term_moments is None or term_clip_ids is None or not len(term_names):
        return (), Moments.zeros((m, 0))
    terms = tuple(sorted(set(term_names)))
    column = {term: j for j, term in enumerate(terms)}
    rows = np.searchsorted(touched, np.asarray(term_clip_ids, dtype=np.int64))
    cols = np.fromiter((column[name] for name in term_names), np.int64, len(term_names))
    keys, reduced = reduce_moments_by_key(rows * len(terms) + cols, term_moments)
    out = Moments.zeros((m, len(terms)))
    r, c = keys // len(terms), keys % len(terms)
    out.count[r, c], out.mean[r, c], out.m2[r, c] = reduced.count, reduced.mean, reduced.m2
    return terms, out


def _widen(terms: tuple[str, ...], moments: Moments, to: tuple[str, ...]) -> Moments:
    """Moments over ``terms`` as columns of the (sorted, larger) ``to``; new columns empty."""
    if terms == to:
        return moments
    rows = moments.count.shape[0]
    out = Moments.zeros((rows, len(to)))
    cols = [to.index(term) for term in terms]
    out.count[:, cols], out.mean[:, cols], out.m2[:, cols] = moments.count, moments.mean, moments.m2
    return out


def apply_delta(stats: ClipStats, delta: ClipDelta) -> ClipStats:
    """The statistics after the delta's outcomes (inputs are not mutated)."""
    return _apply(stats, delta, copy=True)


def fold(stats: ClipStats, deltas: Iterable[ClipDelta]) -> ClipStats:
    """``stats`` after each delta in turn (one copy of the state, then updates in place)."""
    out = stats
    copied = False
    for delta in deltas:
        out = _apply(out, delta, copy=not copied)
        copied = True
    return out


def _apply(stats: ClipStats, delta: ClipDelta, *, copy: bool) -> ClipStats:
    """``apply_delta``; with ``copy=False`` the arrays of ``stats`` are updated in place."""
    i = delta.clip_ids
    seen = stats.episodes[i] > 0

    def own(values: np.ndarray) -> np.ndarray:
        return values.copy() if copy else values

    episodes, steps = own(stats.episodes), own(stats.steps)
    return_sum, success_sum = own(stats.return_sum), own(stats.success_sum)
    ema_success, ema_return = own(stats.ema_success), own(stats.ema_return)
    ts_successes, ts_failures = own(stats.ts_successes), own(stats.ts_failures)
    # counters add: N <- N + n
    episodes[i] += delta.episodes
    steps[i] += delta.steps
    return_sum[i] += delta.return_sum
    success_sum[i] += delta.success_sum
    # J <- d J + c for clips seen before, J <- c_first for clips first seen in the delta
    for values, part in ((ema_success, delta.ema_success), (ema_return, delta.ema_return)):
        values[i] = np.where(seen, values[i] * part.decay + part.carry, 0.0 + part.first)
    # successes lie in [0, 1] and so does their EMA, but d J + c can round an ulp past 1
    # (the UCB/Thompson steps reject a signal above 1)
    ema_success[i] = np.clip(ema_success[i], 0.0, 1.0)
    # S <- g^n S + sum_j g^(n - j) s_j (and F alike)
    ts_successes[i] = ts_successes[i] * delta.ts_decay + delta.ts_successes
    ts_failures[i] = ts_failures[i] * delta.ts_decay + delta.ts_failures

    terms = tuple(sorted(set(stats.terms) | set(delta.terms)))
    if terms != stats.terms:
        moments = _widen(stats.terms, stats.moments, terms)  # new arrays
    else:
        moments = Moments(
            count=own(stats.moments.count), mean=own(stats.moments.mean), m2=own(stats.moments.m2)
        )
    if delta.terms:
        patch = _widen(delta.terms, delta.moments, terms)
        # Chan et al.: the moments of the union of stored and new samples
        merged = merge_moments(
            Moments(count=moments.count[i], mean=moments.mean[i], m2=moments.m2[i]), patch
        )
        moments.count[i], moments.mean[i], moments.m2[i] = merged.count, merged.mean, merged.m2
    return ClipStats(
        episodes=episodes,
        steps=steps,
        return_sum=return_sum,
        success_sum=success_sum,
        ema_success=ema_success,
        ema_return=ema_return,
        ts_successes=ts_successes,
        ts_failures=ts_failures,
        terms=terms,
        moments=moments,
    )


def compose(a: ClipDelta, b: ClipDelta) -> ClipDelta:
    """The delta of "A, then B": ``apply(apply(s, a), b) == apply(s, compose(a, b))``."""
    ids = np.union1d(a.clip_ids, b.clip_ids).astype(np.int64)
    m = ids.shape[0]
    ia, ib = np.searchsorted(ids, a.clip_ids), np.searchsorted(ids, b.clip_ids)
    in_a = np.zeros(m, bool)
    in_a[ia] = True

    def spread(values: np.ndarray, at: IntArray, fill: float) -> np.ndarray:
        out = np.full(m, fill, dtype=values.dtype)
        out[at] = values
        return out

    def total(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        result: np.ndarray = spread(x, ia, 0) + spread(y, ib, 0)
        return result

    def affine(pa: AffineDelta, pb: AffineDelta) -> AffineDelta:
        d_b, c_b = spread(pb.decay, ib, 1.0), spread(pb.carry, ib, 0.0)
        first_a = spread(pa.first, ia, 0.0)
        return AffineDelta(
            decay=spread(pa.decay, ia, 1.0) * d_b,  # d = d_A d_B
            carry=spread(pa.carry, ia, 0.0) * d_b + c_b,  # c = c_A d_B + c_B
            # unseen before A: A sets J = c_first_A, then B maps it; else B's own rule
            first=np.where(in_a, first_a * d_b + c_b, spread(pb.first, ib, 0.0)),
        )

    ts_decay_b = spread(b.ts_decay, ib, 1.0)
    terms = tuple(sorted(set(a.terms) | set(b.terms)))
    ma, mb = _widen(a.terms, a.moments, terms), _widen(b.terms, b.moments, terms)
    moments = merge_moments(
        Moments(*(spread_rows(x, ia, m) for x in (ma.count, ma.mean, ma.m2))),
        Moments(*(spread_rows(x, ib, m) for x in (mb.count, mb.mean, mb.m2))),
    )
    return ClipDelta(
        clip_ids=ids,
        episodes=total(a.episodes, b.episodes).astype(np.int64),
        steps=total(a.steps, b.steps).astype(np.int64),
        return_sum=total(a.return_sum, b.return_sum),
        success_sum=total(a.success_sum, b.success_sum),
        ema_success=affine(a.ema_success, b.ema_success),
        ema_return=affine(a.ema_return, b.ema_return),
        ts_decay=spread(a.ts_decay, ia, 1.0) * ts_decay_b,
        ts_successes=spread(a.ts_successes, ia, 0.0) * ts_decay_b + spread(b.ts_successes, ib, 0.0),
        ts_failures=spread(a.ts_failures, ia, 0.0) * ts_decay_b + spread(b.ts_failures, ib, 0.0),
        terms=terms,
        moments=moments,
    )


def spread_rows(values: FloatArray, at: IntArray, rows: int) -> FloatArray:
    """(len(at), T) rows placed at row indices ``at`` of a zero (rows, T) array."""
    out = np.zeros((rows, values.shape[1]))
    out[at] = values
    return out
