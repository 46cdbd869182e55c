"""Per-slot episode bookkeeping of the batched envs (``learner.envs.episodes``)."""

from __future__ import annotations

import numpy as np
import pytest

from learner.envs.episodes import EpisodeStats


def test_episode_stats_report_mean_variance_return_and_success_per_slot() -> None:
    rng = np.random.default_rng(0)
    stats = EpisodeStats(num_envs=3, num_terms=2)
    terms = rng.random((5, 3, 2))
    rewards = terms.mean(axis=2)
    for t in range(5):
        stats.add(terms[t], rewards[t])
        if t == 1:  # slot 2 starts over after two steps
            stats.reset_slot(2)
    ends = stats.end(np.array([0, 2]), np.array([4, 5, 6]), np.array([False, False, True]), 0.0)
    assert [(e.env_index, e.clip_id, e.steps) for e in ends] == [(0, 4, 5), (2, 6, 3)]
    np.testing.assert_allclose(ends[0].term_mean, terms[:, 0].mean(axis=0))
    np.testing.assert_allclose(ends[0].term_m2, terms[:, 0].var(axis=0) * 5)
    np.testing.assert_allclose(ends[1].term_mean, terms[2:, 2].mean(axis=0))
    np.testing.assert_allclose(ends[1].term_m2, terms[2:, 2].var(axis=0) * 3)
    assert ends[0].tracking_return == pytest.approx(rewards[:, 0].sum())
    assert ends[0].success == 1.0 and ends[1].success == 0.0  # slot 2 fell
    strict = stats.end(np.array([0]), np.zeros(3), np.zeros(3, bool), rewards[:, 0].mean() + 1e-9)
    assert strict[0].success == 0.0  # mean reward just under the threshold
