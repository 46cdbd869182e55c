"""Collapse alarms: pure statistics that say when a run's clip usage is collapsing (issue 6).

Every function takes arrays over clips (length K) or over controller updates, never mutates
them and uses numpy only. ``evaluate_alarms`` bundles them into an immutable ``AlarmReport``
whose alarms each carry a name, the measured value, the threshold, whether it fires and the
indices of the clips involved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler_service.algorithms.probabilities import FloatArray, as_clip_vector, as_float_array


@dataclass(frozen=True)
class AlarmThresholds:
    """When each collapse alarm fires."""

    min_effective_fraction: float = 0.5
    """Fire when effective clips exp(H(u)) < this fraction of exp(H(u*)) (K for uniform u*)."""
    max_top1_share: float = 0.5
    """Fire when the most-used clip's share exceeds this."""
    max_target_gap: float = 0.1
    """Fire when some |usage_i - target_usage_i| exceeds this."""
    starved_episodes: int = 200
    """N: a clip is starved when it had no episode while the window saw >= N episodes."""
    stalled_updates: int = 5
    """M: a clip is stalled when its success moved less than ``stalled_tol`` in M updates."""
    stalled_tol: float = 1e-6
    """Largest success change over the last M updates that still counts as stalled."""
    stalled_ceiling: float = 0.95
    """A clip whose latest success is at least this is mastered, not stalled."""

    def __post_init__(self) -> None:
        valid = {
            "min_effective_fraction": 0.0 <= self.min_effective_fraction <= 1.0,
            "max_top1_share": 0.0 < self.max_top1_share <= 1.0,
            "max_target_gap": 0.0 < self.max_target_gap <= 1.0,
            "starved_episodes": self.starved_episodes >= 1,
            "stalled_updates": self.stalled_updates >= 2,
            "stalled_tol": self.stalled_tol >= 0.0,
            "stalled_ceiling": 0.0 < self.stalled_ceiling <= 1.0,
        }
        bad = [name for name, ok in valid.items() if not ok]
        if bad:
            raise ValueError(f"invalid alarm thresholds: {', '.join(bad)}")


@dataclass(frozen=True)
class Alarm:
    """One alarm: its measured value against its threshold, and the clips involved."""

    name: str
    value: float
    threshold: float
    firing: bool
    clips: tuple[int, ...]


@dataclass(frozen=True)
class AlarmReport:
    """All alarms of one run at one moment."""

    alarms: tuple[Alarm, ...]

    @property
    def firing(self) -> tuple[str, ...]:
        """Names of the alarms that fire."""
        return tuple(alarm.name for alarm in self.alarms if alarm.firing)


def _shares(usage: npt.ArrayLike) -> FloatArray:
    """``usage`` normalised to sum 1 (uniform when it sums to 0)."""
    u = as_clip_vector(usage, "usage")
    total = float(u.sum())
    return u / total if total > 0 else np.full(u.shape, 1.0 / u.size)


def effective_clips(usage: npt.ArrayLike) -> float:
    """Effective number of clips: exp(H(u)) with H(u) = -sum_i u_i log u_i (0 log 0 = 0)."""
    u = _shares(usage)
    nz = u[u > 0]
    return float(np.exp(-np.sum(nz * np.log(nz))))


def top1_share(usage: npt.ArrayLike) -> float:
    """Share of the most-used clip: max_i u_i."""
    return float(_shares(usage).max())


def max_target_gap(usage: npt.ArrayLike, target_usage: npt.ArrayLike) -> tuple[float, int]:
    """Largest |u_i - u*_i| and the clip where it occurs."""
    u = _shares(usage)
    target = as_clip_vector(target_usage, "target_usage", u.size)
    gap = np.abs(u - target)
    clip = int(np.argmax(gap))
    return float(gap[clip]), clip


def starved_clips(window_episodes: npt.ArrayLike, min_window_episodes: int) -> tuple[int, ...]:
    """Clips with no episode in a usage window that saw >= ``min_window_episodes`` episodes."""
    counts = as_clip_vector(window_episodes, "window_episodes")
    if min_window_episodes < 1:
        raise ValueError("min_window_episodes must be >= 1")
    if float(counts.sum()) < min_window_episodes:
        return ()
    return tuple(int(i) for i in np.flatnonzero(counts == 0))


def stalled_clips(
    success_history: npt.ArrayLike,
    m_updates: int,
    tol: float = 1e-6,
    ceiling: float | None = None,
) -> tuple[int, ...]:
    """Clips whose success moved by <= ``tol`` (max - min) over the last ``m_updates`` rows.

    ``success_history`` is (U, K), one row per controller update, oldest first; with fewer
    than ``m_updates`` rows nothing is reported stalled. With a ``ceiling``, clips whose
    latest success is >= ceiling are mastered and left out (a flat 1.0 is not a stall).
    """
    if m_updates < 2:
        raise ValueError("m_updates must be >= 2")
    history = as_float_array(success_history, "success_history")
    if history.ndim != 2:
        raise ValueError("success_history must be 2-D (updates, clips)")
    if history.shape[0] < m_updates:
        return ()
    recent = history[-m_updates:]
    spread = recent.max(axis=0) - recent.min(axis=0)  # range of success_i over M updates
    stalled = spread <= tol
    if ceiling is not None:
        stalled &= recent[-1] < ceiling
    return tuple(int(i) for i in np.flatnonzero(stalled))


def evaluate_alarms(
    usage: npt.ArrayLike,
    target_usage: npt.ArrayLike,
    window_episodes: npt.ArrayLike,
    success_history: npt.ArrayLike | None = None,
    thresholds: AlarmThresholds | None = None,
    update_rejected: bool = False,
) -> AlarmReport:
    """All collapse alarms of one run, and ``update_rejected``: the last controller update
    kept the previous policy because its result was not usable."""
    t = thresholds or AlarmThresholds()
    u = _shares(usage)
    k = u.size
    eff = effective_clips(u)
    # relative to what the targets themselves give: exp(H(u*)) = K for uniform targets,
    # fewer when the targets favour some clips (so skewed targets do not fire it forever)
    eff_threshold = t.min_effective_fraction * effective_clips(
        as_clip_vector(target_usage, "target_usage", k)
    )
    top = top1_share(u)
    top_clip = int(np.argmax(u))
    gap, gap_clip = max_target_gap(u, target_usage)
    starved = starved_clips(window_episodes, t.starved_episodes)
    if success_history is None:
        stalled: tuple[int, ...] = ()
    else:
        stalled = stalled_clips(
            success_history, t.stalled_updates, t.stalled_tol, ceiling=t.stalled_ceiling
        )
    alarms = (
        Alarm("effective_clips", eff, eff_threshold, eff < eff_threshold, ()),
        Alarm("top1_share", top, t.max_top1_share, top > t.max_top1_share, (top_clip,)),
        Alarm(
            "max_target_gap",
            gap,
            t.max_target_gap,
            gap > t.max_target_gap,
            (gap_clip,) if gap > t.max_target_gap else (),
        ),
        Alarm("starved_clips", float(len(starved)), 0.0, bool(starved), starved),
        Alarm("stalled_clips", float(len(stalled)), 0.0, bool(stalled), stalled),
        Alarm("update_rejected", float(update_rejected), 0.0, update_rejected, ()),
    )
    return AlarmReport(alarms)
