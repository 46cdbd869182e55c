"""Property tests: every probability function returns a finite distribution or a ValueError.

Each case feeds one hypothesis-drawn vector into one argument of one function (the other
arguments come from a seeded generator) and checks: finite, non-negative, >= the floor,
sum 1 to 1e-12; NaN, negative and (where it is invalid) all-zero vectors raise ValueError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_service.algorithms.aggregation import (
    adaptive_weights_step,
    aggregate_lse,
    curriculum_weights,
)
from scheduler_service.algorithms.bandits import thompson_probs, ucb_probs
from scheduler_service.algorithms.probabilities import (
    apply_floor,
    controller_step,
    difficulty_step,
    normalize_shares,
    usage_shares,
)
from scheduler_service.algorithms.sampler import ClipSampler


@dataclass(frozen=True)
class Inputs:
    """Random valid companions of the vector under test."""

    k: int
    rng: np.random.Generator
    p_min: float
    rate: float

    def simplex(self) -> np.ndarray:
        return self.rng.dirichlet(np.ones(self.k))


@dataclass(frozen=True)
class Case:
    """One function with the drawn vector in one argument position."""

    call: Callable[[np.ndarray, Inputs], np.ndarray]
    floor: bool = True
    zero_ok: bool = False


CASES: dict[str, Case] = {
    "normalize_shares": Case(lambda v, x: normalize_shares(v), floor=False),
    "apply_floor": Case(lambda v, x: apply_floor(v, x.p_min)),
    "usage_shares": Case(
        lambda v, x: usage_shares(v, x.rng.random(x.k), "episodes"), floor=False, zero_ok=True
    ),
    "controller_step.clip_probs": Case(
        lambda v, x: controller_step(v, x.simplex(), x.simplex(), x.rate, x.p_min)
    ),
    "controller_step.usage": Case(
        lambda v, x: controller_step(x.simplex(), x.simplex(), v, x.rate, x.p_min)
    ),
    "controller_step.target_usage": Case(
        lambda v, x: controller_step(x.simplex(), v, x.simplex(), x.rate, x.p_min)
    ),
    "difficulty_step": Case(
        lambda v, x: difficulty_step(v, x.simplex(), x.rng.random(x.k), x.rate, x.p_min)
    ),
    "ucb_probs": Case(
        lambda v, x: ucb_probs(v, x.rng.random(x.k), x.rate, 0.01 + x.rate, x.p_min),
        zero_ok=True,
    ),
    "thompson_probs": Case(
        lambda v, x: thompson_probs(v, x.rng.random(x.k) * 50, (1.0, 1.0), x.p_min, x.rng, 64),
        zero_ok=True,
    ),
    "adaptive_weights_step": Case(
        lambda v, x: adaptive_weights_step(v, x.simplex(), x.simplex(), x.rate, x.p_min)
    ),
    "curriculum_weights": Case(
        lambda v, x: curriculum_weights(
            v, x.rng.random(x.k) < 0.5, 1.0 + x.rate, 100, 100, int(x.rng.integers(0, 300))
        ),
        floor=False,
    ),
    "ClipSampler.probs": Case(lambda v, x: ClipSampler(v).probs, floor=False),
}

magnitudes = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-9, max_value=1e9, allow_subnormal=False),
)
vectors = st.one_of(
    st.lists(magnitudes, min_size=1, max_size=40).filter(lambda v: max(v) > 0.0),
    # Constant vectors: (1 / K) * K rounds below 1 for some K.
    st.builds(
        lambda k, value: [value] * k,
        st.integers(min_value=1, max_value=200),
        st.floats(min_value=1e-9, max_value=1e9),
    ),
)


@st.composite
def vector_and_inputs(draw: st.DrawFn) -> tuple[np.ndarray, Inputs]:
    values = np.asarray(draw(vectors), dtype=np.float64)
    k = values.shape[0]
    p_min = draw(st.floats(min_value=0.0, max_value=1.0)) / k
    rate = draw(st.floats(min_value=0.0, max_value=5.0))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    return values, Inputs(k=k, rng=np.random.default_rng(seed), p_min=p_min, rate=rate)


def assert_distribution(probs: np.ndarray, k: int, p_min: float) -> None:
    assert probs.shape == (k,)
    assert probs.dtype == np.float64
    assert np.all(np.isfinite(probs))
    assert np.all(probs >= 0.0)
    assert abs(float(probs.sum()) - 1.0) <= 1e-12
    assert np.all(probs >= p_min * (1.0 - 1e-12))


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=60, deadline=None, database=None)
@given(drawn=vector_and_inputs())
def test_probabilities_are_finite_non_negative_and_sum_to_one(
    name: str, drawn: tuple[np.ndarray, Inputs]
) -> None:
    values, inputs = drawn
    case = CASES[name]
    before = values.copy()
    probs = case.call(values, inputs)
    assert_distribution(probs, inputs.k, inputs.p_min if case.floor else 0.0)
    np.testing.assert_array_equal(values, before)  # the input is not mutated


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=25, deadline=None, database=None)
@given(
    drawn=vector_and_inputs(),
    bad=st.sampled_from([np.nan, np.inf, -np.inf, -1.0, -1e-9]),
    position=st.integers(min_value=0),
)
def test_nan_inf_or_negative_entries_raise_value_error(
    name: str, drawn: tuple[np.ndarray, Inputs], bad: float, position: int
) -> None:
    values, inputs = drawn
    values[position % inputs.k] = bad
    with pytest.raises(ValueError):
        CASES[name].call(values, inputs)


@pytest.mark.parametrize("name", sorted(n for n, case in CASES.items() if not case.zero_ok))
@given(k=st.integers(min_value=1, max_value=30), seed=st.integers(min_value=0, max_value=100))
@settings(max_examples=10, deadline=None, database=None)
def test_all_zero_vectors_raise_value_error(name: str, k: int, seed: int) -> None:
    inputs = Inputs(k=k, rng=np.random.default_rng(seed), p_min=0.0, rate=1.0)
    with pytest.raises(ValueError, match="all zero"):
        CASES[name].call(np.zeros(k), inputs)


@pytest.mark.parametrize("name", sorted(n for n, case in CASES.items() if case.zero_ok))
def test_all_zero_counts_give_a_valid_distribution(name: str) -> None:
    inputs = Inputs(k=4, rng=np.random.default_rng(0), p_min=0.1, rate=1.0)
    assert_distribution(CASES[name].call(np.zeros(4), inputs), 4, 0.0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_wrong_shapes_raise_value_error(name: str) -> None:
    inputs = Inputs(k=3, rng=np.random.default_rng(0), p_min=0.0, rate=1.0)
    for bad in (np.ones((3, 1)), np.ones(0)):
        with pytest.raises(ValueError):
            CASES[name].call(bad, inputs)


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.lists(st.floats(min_value=1e-200, max_value=1e200, allow_subnormal=False), max_size=30),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_floor_and_controller_cope_with_extreme_magnitudes(
    values: list[float], floor_fraction: float
) -> None:
    weights = np.asarray([*values, 1.0])
    k = weights.shape[0]
    p_min = floor_fraction / k
    assert_distribution(apply_floor(weights, p_min), k, p_min)
    assert_distribution(controller_step(weights, weights, weights[::-1], 2.0, p_min), k, p_min)


@settings(max_examples=100, deadline=None, database=None)
@given(
    rewards=st.lists(st.floats(min_value=-1e4, max_value=1e4), min_size=1, max_size=12),
    weight_seed=st.integers(min_value=0, max_value=1000),
    tau=st.floats(min_value=1e-3, max_value=10.0),
)
def test_lse_stays_between_its_bounds(rewards: list[float], weight_seed: int, tau: float) -> None:
    r = np.asarray(rewards)
    w: np.ndarray = np.random.default_rng(weight_seed).random(size=(r.shape[0],))
    w[0] = max(w[0], 1e-3)
    got = float(aggregate_lse(r, w, tau))
    assert np.isfinite(got)
    # max_i (r_i + tau log w_i) <= lse <= max_{w_i > 0} r_i + tau log sum_i w_i
    lower = float(np.max(r + tau * np.log(w)))
    upper = float(r[w > 0].max() + tau * np.log(w.sum()))
    scale = 1e-9 * max(1.0, float(np.abs(r).max()))
    assert lower - scale <= got <= upper + scale
