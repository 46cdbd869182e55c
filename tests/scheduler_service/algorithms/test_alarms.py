"""Tests of the collapse alarms (scheduler_service.algorithms.alarms)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scheduler_service.algorithms.alarms import (
    AlarmThresholds,
    effective_clips,
    evaluate_alarms,
    max_target_gap,
    stalled_clips,
    starved_clips,
    top1_share,
)


def test_effective_clips_of_uniform_usage_is_the_clip_count() -> None:
    assert effective_clips(np.full(7, 1 / 7)) == pytest.approx(7.0)


def test_effective_clips_of_one_hot_usage_is_one() -> None:
    assert effective_clips([0.0, 1.0, 0.0]) == pytest.approx(1.0)


def test_effective_clips_matches_exp_entropy() -> None:
    u = np.array([0.5, 0.25, 0.25])
    assert effective_clips(u) == pytest.approx(np.exp(-np.sum(u * np.log(u))))


def test_top1_share_is_largest_normalised_share() -> None:
    assert top1_share([2.0, 6.0, 2.0]) == pytest.approx(0.6)


def test_max_target_gap_reports_value_and_clip() -> None:
    gap, clip = max_target_gap([0.1, 0.6, 0.3], [0.3, 0.3, 0.4])
    assert clip == 1
    assert gap == pytest.approx(0.3)


def test_starved_clips_need_a_full_window() -> None:
    assert starved_clips([0, 50, 50], 200) == ()
    assert starved_clips([0, 150, 50, 0], 200) == (0, 3)


def test_stalled_clips_are_those_whose_success_did_not_move() -> None:
    rng = np.random.default_rng(0)
    history = rng.random((6, 3))
    history[:, 1] = 0.4
    assert stalled_clips(history, 5) == (1,)
    assert stalled_clips(history[:3], 5) == ()


def test_bad_input_raises_value_error() -> None:
    with pytest.raises(ValueError):
        effective_clips([np.nan, 1.0])
    with pytest.raises(ValueError):
        stalled_clips(np.zeros(4), 5)
    with pytest.raises(ValueError):
        max_target_gap([0.5, 0.5], [1.0])


def test_balanced_run_fires_no_alarm() -> None:
    k = 10
    report = evaluate_alarms(np.full(k, 1 / k), np.full(k, 1 / k), np.full(k, 30))
    assert report.firing == ()
    assert {a.name for a in report.alarms} == {
        "effective_clips",
        "top1_share",
        "max_target_gap",
        "starved_clips",
        "stalled_clips",
    }


def test_collapsed_run_fires_every_alarm() -> None:
    k = 10
    usage = np.zeros(k)
    usage[0] = 1.0
    window = np.zeros(k)
    window[0] = 500
    history = np.tile(np.linspace(0, 1, k), (6, 1))
    report = evaluate_alarms(usage, np.full(k, 1 / k), window, history)
    assert set(report.firing) == {a.name for a in report.alarms}
    starved = next(a for a in report.alarms if a.name == "starved_clips")
    assert starved.clips == tuple(range(1, k))


def test_thresholds_are_configurable_and_frozen() -> None:
    usage = [0.55, 0.45]
    assert "top1_share" in evaluate_alarms(usage, usage, [1, 1]).firing
    loose = AlarmThresholds(max_top1_share=0.6)
    assert "top1_share" not in evaluate_alarms(usage, usage, [1, 1], thresholds=loose).firing
    with pytest.raises(dataclasses.FrozenInstanceError):
        loose.max_top1_share = 0.1  # type: ignore[misc]
