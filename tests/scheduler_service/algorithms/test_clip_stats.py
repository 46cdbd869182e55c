"""The per-clip statistics monoid: folding batch deltas equals folding outcomes one by one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_service.algorithms.bandits import discounted_counts, ema_update
from scheduler_service.algorithms.clip_stats import (
    ClipDelta,
    ClipStats,
    apply_delta,
    batch_delta,
    compose,
    fold,
)
from scheduler_service.algorithms.normalizers import Moments, merge_moments

K = 6
TERMS = ("pose", "root", "velocity")


@dataclass(frozen=True)
class Outcome:
    clip: int
    steps: int
    episode_return: float
    success: float
    terms: tuple[tuple[str, float, float, float], ...]  # (name, count, mean, m2)


outcomes_st = st.builds(
    Outcome,
    clip=st.integers(0, K - 1),
    steps=st.integers(1, 500),
    episode_return=st.floats(-100.0, 100.0, allow_nan=False),
    success=st.sampled_from([0.0, 1.0, 0.25]),
    terms=st.lists(
        st.tuples(
            st.sampled_from(TERMS),
            st.floats(1.0, 50.0),
            st.floats(-5.0, 5.0),
            st.floats(0.0, 20.0),
        ),
        max_size=3,
        unique_by=lambda term: term[0],
    ).map(tuple),
)
batches_st = st.lists(st.lists(outcomes_st, min_size=1, max_size=12), min_size=1, max_size=6)
rates_st = st.tuples(st.floats(0.01, 0.99), st.floats(0.5, 1.0))


def delta_of(batch: list[Outcome], alpha: float, gamma: float) -> ClipDelta:
    entries = [(o.clip, *term) for o in batch for term in o.terms]
    return batch_delta(
        [o.clip for o in batch],
        [o.steps for o in batch],
        [o.episode_return for o in batch],
        [o.success for o in batch],
        ema_alpha=alpha,
        thompson_gamma=gamma,
        term_clip_ids=[e[0] for e in entries],
        term_names=[e[1] for e in entries],
        term_moments=Moments(
            count=np.array([e[2] for e in entries]),
            mean=np.array([e[3] for e in entries]),
            m2=np.array([e[4] for e in entries]),
        ),
    )


def reference(outcomes: list[Outcome], alpha: float, gamma: float) -> ClipStats:
    """The statistics folded one outcome at a time, with the plain update rules."""
    stats = ClipStats.zeros(K)
    moments: dict[tuple[int, str], tuple[float, float, float]] = {}
    for o in outcomes:
        i = o.clip
        first_ever = stats.episodes[i] == 0
        stats.episodes[i] += 1
        stats.steps[i] += o.steps
        stats.return_sum[i] += o.episode_return
        stats.success_sum[i] += o.success
        for ema, v in ((stats.ema_success, o.success), (stats.ema_return, o.episode_return)):
            # J <- v on the first observation ever, else J <- (1 - a) J + a v
            ema[i] = v if first_ever else (1.0 - alpha) * ema[i] + alpha * v
        stats.ts_successes[i] = gamma * stats.ts_successes[i] + o.success
        stats.ts_failures[i] = gamma * stats.ts_failures[i] + 1.0 - o.success
        for name, count, mean, m2 in o.terms:
            old = Moments(*(np.array([x]) for x in moments.get((i, name), (0.0, 0.0, 0.0))))
            merged = merge_moments(
                old, Moments(np.array([count]), np.array([mean]), np.array([m2]))
            )
            moments[(i, name)] = (
                float(merged.count[0]),
                float(merged.mean[0]),
                float(merged.m2[0]),
            )
    terms = tuple(sorted({name for _, name in moments}))
    dense = Moments.zeros((K, len(terms)))
    for (i, name), (count, mean, m2) in moments.items():
        j = terms.index(name)
        dense.count[i, j], dense.mean[i, j], dense.m2[i, j] = count, mean, m2
    return dataclasses.replace(stats, terms=terms, moments=dense)


def assert_stats_close(a: ClipStats, b: ClipStats) -> None:
    np.testing.assert_array_equal(a.episodes, b.episodes)
    np.testing.assert_array_equal(a.steps, b.steps)
    for name in (
        "return_sum",
        "success_sum",
        "ema_success",
        "ema_return",
        "ts_successes",
        "ts_failures",
    ):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-9)
    assert a.terms == b.terms
    for name in ("count", "mean", "m2"):
        np.testing.assert_allclose(
            getattr(a.moments, name), getattr(b.moments, name), rtol=1e-9, atol=1e-8
        )


@settings(max_examples=200, deadline=None)
@given(batches=batches_st, rates=rates_st)
def test_folding_batch_deltas_equals_folding_outcomes_one_by_one(
    batches: list[list[Outcome]], rates: tuple[float, float]
) -> None:
    alpha, gamma = rates
    folded = fold(ClipStats.zeros(K), [delta_of(b, alpha, gamma) for b in batches])
    assert_stats_close(folded, reference([o for b in batches for o in b], alpha, gamma))


@settings(max_examples=200, deadline=None)
@given(batches=batches_st, rates=rates_st)
def test_one_composed_delta_equals_the_deltas_in_turn(
    batches: list[list[Outcome]], rates: tuple[float, float]
) -> None:
    alpha, gamma = rates
    deltas = [delta_of(b, alpha, gamma) for b in batches]
    composed = ClipDelta.empty()
    for delta in deltas:
        composed = compose(composed, delta)
    # from an empty run (every clip's first observation is in the deltas) ...
    assert_stats_close(apply_delta(ClipStats.zeros(K), composed), fold(ClipStats.zeros(K), deltas))
    # ... and from a run that has seen some clips already
    start = fold(ClipStats.zeros(K), deltas[:1])
    tail = ClipDelta.empty()
    for delta in deltas[1:]:
        tail = compose(tail, delta)
    assert_stats_close(apply_delta(start, tail), fold(start, deltas[1:]))


@settings(max_examples=100, deadline=None)
@given(batches=st.lists(st.lists(outcomes_st, min_size=1, max_size=8), min_size=3, max_size=3))
def test_compose_is_associative_with_an_identity(batches: list[list[Outcome]]) -> None:
    a, b, c = (delta_of(batch, 0.1, 0.99) for batch in batches)
    left, right = compose(compose(a, b), c), compose(a, compose(b, c))
    start = fold(ClipStats.zeros(K), [delta_of(batches[0][:1], 0.1, 0.99)])
    for s in (ClipStats.zeros(K), start):
        assert_stats_close(apply_delta(s, left), apply_delta(s, right))
        for unit in (compose(ClipDelta.empty(), a), compose(a, ClipDelta.empty())):
            assert_stats_close(apply_delta(s, unit), apply_delta(s, a))


@settings(max_examples=100, deadline=None)
@given(batches=batches_st, rates=rates_st)
def test_applying_a_batch_delta_repeats_the_per_batch_rules_bit_for_bit(
    batches: list[list[Outcome]], rates: tuple[float, float]
) -> None:
    """What the row-per-clip store computed (``ema_update``, ``discounted_counts``)."""
    alpha, gamma = rates
    stats = ClipStats.zeros(K)
    ema_s, ema_r, count = np.zeros(K), np.zeros(K), np.zeros(K)
    ts_s, ts_f = np.zeros(K), np.zeros(K)
    for batch in batches:
        ids = np.array([o.clip for o in batch])
        success = np.array([o.success for o in batch])
        returns = np.array([o.episode_return for o in batch])
        ema_s, _ = ema_update(ema_s, count, ids, success, alpha)
        ema_s = np.clip(ema_s, 0.0, 1.0)  # the store keeps J^ of successes within [0, 1]
        ema_r, count = ema_update(ema_r, count, ids, returns, alpha)
        ts_s, ts_f = discounted_counts(ts_s, ts_f, ids, success, gamma)
        stats = apply_delta(stats, delta_of(batch, alpha, gamma))
    np.testing.assert_array_equal(stats.ema_success, ema_s)
    np.testing.assert_array_equal(stats.ema_return, ema_r)
    np.testing.assert_array_equal(stats.ts_successes, ts_s)
    np.testing.assert_array_equal(stats.ts_failures, ts_f)
    np.testing.assert_array_equal(stats.episodes, count.astype(np.int64))


def test_the_first_observation_ever_sets_the_average_wherever_it_falls() -> None:
    a = delta_of([Outcome(0, 10, 5.0, 1.0, ())], 0.5, 0.9)
    b = delta_of([Outcome(0, 10, 1.0, 0.0, ()), Outcome(1, 10, 7.0, 1.0, ())], 0.5, 0.9)
    stats = fold(ClipStats.zeros(K), [a, b])
    # clip 0: J = 5, then 0.5 * 5 + 0.5 * 1 = 3; clip 1: first observation sets J = 7
    assert stats.ema_return[:2].tolist() == [3.0, 7.0]
    assert apply_delta(ClipStats.zeros(K), compose(a, b)).ema_return[:2].tolist() == [3.0, 7.0]
    assert stats.ts_successes[0] == pytest.approx(0.9)
    assert stats.ts_failures[0] == pytest.approx(1.0)


def test_fold_does_not_mutate_its_input() -> None:
    base = ClipStats.zeros(K)
    fold(base, [delta_of([Outcome(2, 3, 1.0, 1.0, (("pose", 3.0, 1.0, 0.5),))], 0.1, 0.9)] * 2)
    assert base.episodes.sum() == 0 and base.terms == () and base.moments.count.shape == (K, 0)


def test_the_success_moving_average_never_leaves_0_1_by_rounding() -> None:
    # all-success batches: mathematically J^ stays exactly 1; d J + c may round past it
    rng = np.random.default_rng(3)
    stats = ClipStats.zeros(2)
    for _ in range(300):
        n = int(rng.integers(1, 20))
        ids = rng.integers(0, 2, n)
        delta = batch_delta(
            ids,
            np.ones(n),
            np.zeros(n),
            np.ones(n),
            ema_alpha=float(rng.uniform(0.001, 0.5)),
            thompson_gamma=0.99,
        )
        stats = apply_delta(stats, delta)
        assert np.all(stats.ema_success <= 1.0) and np.all(stats.ema_success >= 0.0)
