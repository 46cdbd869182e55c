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


def test_mastered_clips_are_not_stalled_below_the_ceiling_they_are() -> None:
    history = np.tile([1.0, 0.4, 0.0], (6, 1))  # mastered, stuck, never succeeds
    assert stalled_clips(history, 5) == (0, 1, 2)
    assert stalled_clips(history, 5, ceiling=0.95) == (1, 2)


def test_evaluate_alarms_leaves_mastered_clips_out_of_stalled() -> None:
    k = 3
    history = np.tile([1.0, 0.4, 0.7], (6, 1))
    history[:, 2] = np.linspace(0.5, 0.9, 6)  # still learning
    report = evaluate_alarms(np.full(k, 1 / k), np.full(k, 1 / k), np.full(k, 100), history)
    stalled = next(a for a in report.alarms if a.name == "stalled_clips")
    assert stalled.clips == (1,)


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
        "update_rejected",
    }


def test_collapsed_run_fires_every_collapse_alarm() -> None:
    k = 10
    usage = np.zeros(k)
    usage[0] = 1.0
    window = np.zeros(k)
    window[0] = 500
    history = np.tile(np.linspace(0, 1, k), (6, 1))
    report = evaluate_alarms(usage, np.full(k, 1 / k), window, history)
    collapse = {a.name for a in report.alarms} - {"update_rejected"}
    assert set(report.firing) == collapse
    starved = next(a for a in report.alarms if a.name == "starved_clips")
    assert starved.clips == tuple(range(1, k))


def test_thresholds_are_configurable_and_frozen() -> None:
    usage = [0.55, 0.45]
    assert "top1_share" in evaluate_alarms(usage, usage, [1, 1]).firing
    loose = AlarmThresholds(max_top1_share=0.6)
    assert "top1_share" not in evaluate_alarms(usage, usage, [1, 1], thresholds=loose).firing
    with pytest.raises(dataclasses.FrozenInstanceError):
        loose.max_top1_share = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    "field, value",
    [("max_top1_share", 0.0), ("max_target_gap", 1.5), ("stalled_updates", 1), ("stalled_tol", -1)],
)
def test_out_of_range_thresholds_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        AlarmThresholds(**{field: value})


def test_effective_clips_threshold_follows_the_targets_not_the_clip_count() -> None:
    k = 100
    target = np.full(k, 0.02 / (k - 2))
    target[:2] = 0.49  # operators put nearly everything on two clips
    report = evaluate_alarms(target, target, np.full(k, 50))
    effective = next(a for a in report.alarms if a.name == "effective_clips")
    assert not effective.firing  # usage on target is not a collapse
    assert effective.threshold == pytest.approx(0.5 * effective_clips(target))
    collapsed = np.zeros(k)
    collapsed[0] = 1.0
    assert "effective_clips" in evaluate_alarms(collapsed, target, np.full(k, 50)).firing


def test_a_rejected_update_fires_its_alarm_alone() -> None:
    k = 4
    report = evaluate_alarms(
        np.full(k, 1 / k), np.full(k, 1 / k), np.full(k, 30), update_rejected=True
    )
    assert report.firing == ("update_rejected",)
