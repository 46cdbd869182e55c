"""Reward shaping: per-clip z-scores, the global/none baselines, aggregation over clips."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from clipsched.clip_source import ActorConfig
from learner.reward_shaping import RewardShaper, ShapingSettings, pooled_moments, squash
from scheduler_service.algorithms.aggregation import aggregate
from scheduler_service.algorithms.normalizers import Moments

TERM_WEIGHTS = np.array([0.75, 0.25])
# clip 0 pays big rewards with a wide spread, clip 1 small ones with a narrow spread
MEAN = np.array([[0.8, 0.6], [0.2, 0.1]])
STD = np.array([[0.1, 0.2], [0.02, 0.05]])


def actor_config(
    aggregation: str = "max",
    count: float = 10_000.0,
    weights: tuple[float, float] = (0.5, 0.5),
) -> ActorConfig:
    return ActorConfig(
        state_version=1,
        clip_names=("Walk", "Run"),
        clip_probs=np.array([0.5, 0.5]),
        reward_weights=np.array(weights),
        aggregation=aggregation,  # type: ignore[arg-type]
        temperature=0.3,
        threshold_delta=0.5,
        term_names=("pose", "vel"),
        norm_mean=MEAN,
        norm_std=STD,
        norm_count=np.full((2, 2), count),
    )


def shaper(**settings: object) -> RewardShaper:
    defaults: dict[str, object] = {"alive_bonus": 0.0, "eps": 1e-8, "min_count": 100}
    return RewardShaper(TERM_WEIGHTS, ShapingSettings(**{**defaults, **settings}))  # type: ignore[arg-type]


def terms_at_clip_means() -> np.ndarray:
    """(N=1, K=2, T=2) terms: each clip's terms one std above its own mean."""
    return (MEAN + STD)[None].astype(np.float32)


def test_per_clip_z_score_puts_clips_on_the_same_scale() -> None:
    s = shaper(normalization="per_clip")
    s.set_actor_config(actor_config())
    out = s(terms_at_clip_means(), np.array([0]))
    # z = +1 for every term of both clips -> r_i = sum_t c_t * 1 = 1 for both clips
    np.testing.assert_allclose(out.clip_rewards, [[1.0, 1.0]], rtol=1e-5)


def test_without_normalisation_the_larger_scale_clip_dominates() -> None:
    s = shaper(normalization="none")
    s.set_actor_config(actor_config())
    terms = terms_at_clip_means()
    out = s(terms, np.array([0]))
    np.testing.assert_allclose(out.clip_rewards, [terms[0] @ TERM_WEIGHTS], rtol=1e-6)
    assert out.clip_rewards[0, 0] > 4 * out.clip_rewards[0, 1]


def test_global_mode_uses_one_mean_and_std_pooled_over_clips() -> None:
    s = shaper(normalization="global")
    s.set_actor_config(actor_config())
    terms = terms_at_clip_means()
    out = s(terms, np.array([0]))
    # equal counts: pooled mean = mean of clip means; pooled var = mean var + var of means
    pooled_mean = MEAN.mean(0)
    pooled_std = np.sqrt((STD**2).mean(0) + MEAN.var(0))
    expected = ((terms[0] - pooled_mean) / pooled_std) @ TERM_WEIGHTS
    np.testing.assert_allclose(out.clip_rewards[0], expected, rtol=1e-5)


def test_pooled_moments_equal_the_moments_of_all_samples() -> None:
    rng = np.random.default_rng(0)
    samples = [rng.normal(i, 1 + i, size=(n, 3)) for i, n in enumerate((5, 40, 7))]
    per_clip = [Moments.from_batch(x, axis=0) for x in samples]
    stacked = Moments(
        *(np.stack([getattr(m, f) for m in per_clip]) for f in ("count", "mean", "m2"))
    )
    pooled = pooled_moments(stacked)
    everything = np.concatenate(samples)
    np.testing.assert_allclose(pooled.mean[0], everything.mean(0), rtol=1e-9)
    np.testing.assert_allclose(pooled.variance[0], everything.var(0), rtol=1e-9)


def test_terms_stay_raw_until_the_normaliser_has_seen_enough_steps() -> None:
    s = shaper(normalization="per_clip", min_count=1000)
    s.set_actor_config(actor_config(count=999.0))
    terms = terms_at_clip_means()
    np.testing.assert_allclose(
        s(terms, np.array([0])).clip_rewards, [terms[0] @ TERM_WEIGHTS], rtol=1e-6
    )
    s.set_actor_config(actor_config(count=1000.0))
    np.testing.assert_allclose(s(terms, np.array([0])).clip_rewards, [[1.0, 1.0]], rtol=1e-5)


def test_missing_counts_use_the_normaliser_where_std_is_known() -> None:
    config = actor_config()
    no_counts = dataclasses.replace(config, norm_count=np.zeros((0, 0)))
    s = shaper(normalization="per_clip")
    s.set_actor_config(no_counts)
    np.testing.assert_allclose(
        s(terms_at_clip_means(), np.array([0])).clip_rewards, [[1.0, 1.0]], rtol=1e-5
    )


@pytest.mark.parametrize("kind", ["max", "lse", "threshold"])
def test_reward_aggregates_the_normalised_clip_rewards(kind: str) -> None:
    rng = np.random.default_rng(1)
    terms = rng.uniform(size=(6, 2, 2)).astype(np.float32)
    s = shaper(normalization="per_clip")
    config = actor_config(kind, weights=(0.7, 0.3))
    s.set_actor_config(config)
    out = s(terms, np.zeros(6, dtype=np.int64))
    expected = aggregate(out.clip_rewards.astype(np.float64), kind, config.reward_weights, 0.3, 0.5)  # type: ignore[arg-type]
    # z-scored aggregates are squashed into (0, 1) so that the reward stays positive
    np.testing.assert_allclose(out.reward, squash(expected), rtol=1e-5)
    assert out.reward.shape == (6,) and out.reward.dtype == np.float32


def test_aggregation_override_beats_the_scheduler_choice() -> None:
    terms = np.random.default_rng(2).uniform(size=(4, 2, 2)).astype(np.float32)
    ids = np.zeros(4, dtype=np.int64)
    plain, overridden = shaper(), shaper(aggregation="lse", temperature=0.1)
    config = actor_config("max")
    plain.set_actor_config(config)
    overridden.set_actor_config(config)
    out = overridden(terms, ids)
    expected = aggregate(
        out.clip_rewards.astype(np.float64), "lse", config.reward_weights, 0.1, 0.5
    )
    np.testing.assert_allclose(out.reward, squash(expected), rtol=1e-5)
    np.testing.assert_allclose(plain(terms, ids).reward, squash(out.clip_rewards.max(1)), rtol=1e-5)


def test_active_clip_source_rewards_only_the_active_clip() -> None:
    terms = np.random.default_rng(3).uniform(size=(3, 2, 2)).astype(np.float32)
    s = shaper(source="active_clip")
    s.set_actor_config(actor_config())
    ids = np.array([1, 0, 1])
    out = s(terms, ids)
    np.testing.assert_allclose(out.reward, squash(out.clip_rewards[np.arange(3), ids]), rtol=1e-6)


def test_alive_bonus_is_added_to_every_step() -> None:
    terms = np.random.default_rng(4).uniform(size=(3, 2, 2)).astype(np.float32)
    ids = np.zeros(3, dtype=np.int64)
    base, bonus = shaper(alive_bonus=0.0), shaper(alive_bonus=1.5)
    base.set_actor_config(actor_config())
    bonus.set_actor_config(actor_config())
    np.testing.assert_allclose(bonus(terms, ids).reward, base(terms, ids).reward + 1.5, rtol=1e-6)


def test_shaper_rejects_normalisers_of_other_terms() -> None:
    s = RewardShaper(TERM_WEIGHTS, ShapingSettings(), term_names=("velocity", "pose"))
    with pytest.raises(ValueError, match="terms"):
        s.set_actor_config(actor_config())


def test_shaper_refuses_to_run_without_an_actor_config() -> None:
    with pytest.raises(RuntimeError):
        shaper()(terms_at_clip_means(), np.array([0]))


def test_squash_is_a_stable_sigmoid() -> None:
    x = np.array([-1e4, -3.0, 0.0, 3.0, 1e4], dtype=np.float32)
    y = squash(x)
    np.testing.assert_allclose(
        y, [0.0, 1.0 / (1.0 + np.exp(3.0)), 0.5, 1.0 / (1.0 + np.exp(-3.0)), 1.0], atol=1e-7
    )
    assert np.all(np.isfinite(y)) and np.all(np.diff(y) >= 0)


@pytest.mark.parametrize("normalization", ["per_clip", "global", "none"])
@pytest.mark.parametrize("kind", ["max", "lse", "threshold"])
def test_training_reward_is_never_negative(normalization: str, kind: str) -> None:
    terms = np.random.default_rng(5).uniform(size=(64, 2, 2)).astype(np.float32)
    s = shaper(normalization=normalization)
    s.set_actor_config(actor_config(kind, weights=(0.6, 0.4)))
    reward = s(terms, np.zeros(64, dtype=np.int64)).reward
    assert np.all(reward >= 0.0) and np.all(reward <= 1.0 + 1e-6)
