"""Running moments for per-clip, per-term reward normalisation (§3) with the parallel merge.

``Moments`` holds count, mean and M2 (sum of squared deviations) elementwise, e.g. shape
(K, T) for K clips and T reward terms. Batches computed anywhere (actors, learners, replicas)
merge exactly, in any order, with Chan, Golub & LeVeque's pairwise formula.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler_service.algorithms.probabilities import FloatArray


@dataclass(frozen=True, eq=False)
class Moments:
    """Elementwise count, mean and M2 = sum (x - mean)^2; the three arrays share one shape."""

    count: FloatArray
    mean: FloatArray
    m2: FloatArray

    def __post_init__(self) -> None:
        count = np.asarray(self.count, dtype=np.float64)
        mean = np.asarray(self.mean, dtype=np.float64)
        m2 = np.asarray(self.m2, dtype=np.float64)
        if not count.shape == mean.shape == m2.shape:
            raise ValueError(
                f"count, mean and m2 must share one shape, got {count.shape}, {mean.shape}, "
                f"{m2.shape}"
            )
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "m2", m2)

    @property
    def variance(self) -> FloatArray:
        """Population variance m2 / count (0 where count == 0)."""
        result: FloatArray = np.divide(
            self.m2, self.count, out=np.zeros_like(self.m2), where=self.count > 0.0
        )
        return result

    @property
    def std(self) -> FloatArray:
        """Population standard deviation sqrt(variance)."""
        result: FloatArray = np.sqrt(np.maximum(self.variance, 0.0))
        return result

    @classmethod
    def zeros(cls, shape: int | tuple[int, ...]) -> Moments:
        """Empty moments (count 0) of the given shape."""
        return cls(count=np.zeros(shape), mean=np.zeros(shape), m2=np.zeros(shape))

    @classmethod
    def from_batch(cls, values: npt.ArrayLike, axis: int = 0) -> Moments:
        """Moments of ``values`` reduced over ``axis`` (an empty axis gives zero moments)."""
        array = np.asarray(values, dtype=np.float64)
        n = array.shape[axis]
        reduced_shape = np.delete(np.asarray(array.shape), axis)
        shape = tuple(int(d) for d in reduced_shape)
        if n == 0:
            return cls.zeros(shape)
        mean = array.mean(axis=axis)
        deviations = array - np.expand_dims(mean, axis)
        m2 = np.square(deviations).sum(axis=axis)
        return cls(count=np.full(shape, float(n)), mean=mean, m2=m2)


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan, Golub & LeVeque (1979) merge: the moments of the union of both samples.

    n = n_a + n_b; delta = mean_b - mean_a; mean = mean_a + delta n_b / n;
    m2 = m2_a + m2_b + delta^2 n_a n_b / n. Entries with n == 0 stay zero.
    """
    if a.count.shape != b.count.shape:
        raise ValueError(f"cannot merge moments of shapes {a.count.shape} and {b.count.shape}")
    n = a.count + b.count
    nonempty = n > 0.0
    delta = b.mean - a.mean
    share_b = np.divide(b.count, n, out=np.zeros_like(n), where=nonempty)
    mean = np.where(nonempty, a.mean + delta * share_b, 0.0)
    m2 = np.where(nonempty, a.m2 + b.m2 + delta * delta * a.count * share_b, 0.0)
    return Moments(count=n, mean=mean, m2=m2)


def reduce_moments_by_key(keys: np.ndarray, moments: Moments) -> tuple[np.ndarray, Moments]:
    """Merge the 1-D moments that share a key; returns sorted unique keys and their moments.

    A segmented pairwise reduction with ``merge_moments``: each round merges neighbours
    (0, 1), (2, 3), ... inside every run of equal keys, so a batch of n entries takes
    about log2(n) vectorised rounds.
    """
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    count, mean, m2 = moments.count[order], moments.mean[order], moments.m2[order]
    while keys.shape[0] > 1:
        same_next = keys[1:] == keys[:-1]
        if not same_next.any():
            break
        index = np.arange(keys.shape[0])
        starts = np.concatenate(([True], ~same_next))
        rank = index - np.maximum.accumulate(np.where(starts, index, 0))
        has_next = np.concatenate((same_next, [False]))
        left = np.flatnonzero((rank % 2 == 0) & has_next)
        right = left + 1
        merged = merge_moments(
            Moments(count=count[left], mean=mean[left], m2=m2[left]),
            Moments(count=count[right], mean=mean[right], m2=m2[right]),
        )
        count, mean, m2 = count.copy(), mean.copy(), m2.copy()
        count[left], mean[left], m2[left] = merged.count, merged.mean, merged.m2
        keep = np.ones(keys.shape[0], dtype=bool)
        keep[right] = False
        keys, count, mean, m2 = keys[keep], count[keep], mean[keep], m2[keep]
    return keys, Moments(count=count, mean=mean, m2=m2)


def normalize(
    values: npt.ArrayLike, mean: npt.ArrayLike, std: npt.ArrayLike, eps: float = 1e-8
) -> FloatArray:
    """z-score (x - mu) / (sigma + eps), broadcasting ``mean`` and ``std`` against ``values``."""
    x = np.asarray(values, dtype=np.float64)
    result: FloatArray = (x - np.asarray(mean, dtype=np.float64)) / (
        np.asarray(std, dtype=np.float64) + eps
    )
    return result
