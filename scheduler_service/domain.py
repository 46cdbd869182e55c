"""Domain objects of the scheduler: run configuration, run state, outcomes, history, audit.

Frozen dataclasses only; the store builds them from rows and the API shapes them into
JSON, so no ORM row or pydantic model crosses a layer. Also the presets (§8 of the
design note) that fill a run request in one line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from scheduler_service.algorithms.aggregation import AggregationKind

StrategyKind = Literal["static", "controller", "difficulty", "ucb", "thompson"]
UsageMeasure = Literal["episodes", "steps"]

MAX_CLIPS = 10_000
"""Most clips one run may have."""

MAX_NEXT_CLIPS = 4_096
"""Most clip ids one ``next-clips`` call may ask for."""


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyParams:
    """How ``clip_probs`` adapt (§1, §2, §6) and when the controller runs."""

    kind: StrategyKind = "static"
    eta: float = 1.0
    """Step size of the controller / difficulty update (§2)."""
    update_every_steps: int = 50_000
    """Env steps, summed over every learner of the run, between two updates."""
    usage_measure: UsageMeasure = "episodes"
    """Usage ``u_i`` counted in finished episodes (the note's default) or env steps."""
    usage_ema: float = 0.5
    """Weight of the newest window in the smoothed usage: u <- a u_window + (1 - a) u."""
    p_min: float | None = None
    """Probability floor; None resolves to min(0.01, 0.1 / K) when the run is created."""
    ucb_c: float = 1.0
    """Exploration bonus of UCB: c sqrt(2 ln N / n_i)."""
    ucb_temperature: float = 0.2
    """Softmax temperature turning UCB scores into probabilities."""
    success_ema: float = 0.1
    """Moving-average factor of the per-clip success and return estimates ``J^_i``."""
    thompson_prior: tuple[float, float] = (1.0, 1.0)
    """Beta prior (a, b) of the probability that the policy fails a clip."""
    thompson_discount: float = 0.99
    """Discount of a clip's success/failure pseudo-counts at each of its outcomes."""


@dataclass(frozen=True)
class CurriculumParams:
    """§8 early curriculum: boost some clips' reward weights, then release them."""

    clips: tuple[str, ...]
    boost: float = 1.5
    hold_steps: int = 1_000_000
    release_steps: int = 1_000_000


@dataclass(frozen=True)
class AggregationParams:
    """How actors combine per-clip rewards (§3) and how the reward weights adapt (§8)."""

    kind: AggregationKind = "max"
    temperature: float = 0.3
    threshold_delta: float = 0.5
    adaptive_weights: bool = False
    """Update w <- softmax(log w + weight_lr (u* - u)) at every controller update."""
    weight_lr: float = 0.5
    curriculum: CurriculumParams | None = None


@dataclass(frozen=True)
class ClipSpec:
    """A clip as given when a run is created."""

    name: str
    group: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to create a run (presets already applied)."""

    name: str
    clips: tuple[ClipSpec, ...]
    strategy: StrategyParams
    aggregation: AggregationParams
    target_usage: Mapping[str, float] | None = None
    target_usage_by_group: Mapping[str, float] | None = None
    clip_probs: Mapping[str, float] | None = None
    reward_weights: Mapping[str, float] | None = None
    preset: str | None = None
    default_target_usage: Mapping[str, float] | None = None
    """The preset's targets (uniform when None); ``target_usage`` overrides them partially."""


@dataclass(frozen=True)
class ClipInfo:
    """A clip of a stored run: dense id (its index in every per-clip array), name, group."""

    id: int
    name: str
    group: str | None
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class RunConfig:
    """The immutable part of a run: its clips and parameters."""

    run_id: int
    name: str
    clips: tuple[ClipInfo, ...]
    strategy: StrategyParams
    aggregation: AggregationParams
    preset: str | None
    created_at: float

    @functools.cached_property
    def clip_names(self) -> tuple[str, ...]:
        """Clip names in id order (computed once per config)."""
        return tuple(c.name for c in self.clips)

    @functools.cached_property
    def clip_index(self) -> Mapping[str, int]:
        """Clip id by name (computed once per config; read by every outcome batch)."""
        return {c.name: c.id for c in self.clips}


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    """Run-wide counters."""

    episodes: int
    steps: int
    updates: int


@dataclass(frozen=True)
class TermStats:
    """Running moments of one reward term of one clip."""

    count: float
    mean: float
    std: float


@dataclass(frozen=True)
class ClipState:
    """One clip's row in the run state."""

    id: int
    name: str
    group: str | None
    metadata: Mapping[str, Any]
    target_usage: float
    usage: float
    """Smoothed usage ``u_i`` the controller steers (window share before the first update)."""
    usage_window: float
    """Share since the last controller update."""
    usage_total: float
    """Cumulative share since the run started."""
    clip_prob: float
    reward_weight: float
    success: float | None
    """Moving average of episode success ``J^_i`` (None before the first outcome)."""
    success_mean: float | None
    episodes: int
    steps: int
    return_mean: float | None
    ema_return: float | None
    thompson_successes: float
    thompson_failures: float
    normalizers: Mapping[str, TermStats]


@dataclass(frozen=True)
class LearnerStats:
    """One learner attached to a run, from the outcomes it posted."""

    learner_id: str
    first_seen: float
    last_seen: float
    episodes: int
    steps: int
    usage: tuple[float, ...]
    """This learner's own usage share per clip (clip id order)."""
    stale: bool


@dataclass(frozen=True)
class RunState:
    """Everything an operator sees about a run."""

    config: RunConfig
    state_version: int
    paused: bool
    clip_probs_frozen: bool
    reward_weights_frozen: bool
    totals: Totals
    clips: tuple[ClipState, ...]
    learners: tuple[LearnerStats, ...]


@dataclass(frozen=True)
class RunSummary:
    """One line of the run list."""

    name: str
    clip_count: int
    strategy: StrategyKind
    state_version: int
    paused: bool
    totals: Totals
    created_at: float


@dataclass(frozen=True)
class HistoryRow:
    """The per-clip picture at one controller update (for plots)."""

    update: int
    total_steps: int
    time: float
    paused: bool
    target_usage: tuple[float, ...]
    clip_probs: tuple[float, ...]
    usage: tuple[float, ...]
    usage_window: tuple[float, ...]
    reward_weights: tuple[float, ...]
    success: tuple[float | None, ...]
    rejected: str | None = None
    """Why this update kept the previous policy (its result was not finite or not a
    distribution), or None."""


@dataclass(frozen=True)
class AuditRow:
    """One operator action: what changed, from what to what, when and by whom."""

    id: int
    time: float
    actor: str
    action: str
    old: Any
    new: Any
    state_version: int


# --------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TermMoments:
    """Moments of one reward term over one episode: count, mean, m2 (sum of squared deviations)."""

    count: float
    mean: float
    m2: float


@dataclass(frozen=True)
class OutcomeRecord:
    """One finished episode as posted (clip given by name or id, resolved by the service)."""

    episode_id: str
    clip: str | int
    steps: int
    episode_return: float
    success: float
    reward_terms: Mapping[str, TermMoments] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestResult:
    """What one posted batch did."""

    accepted: int
    duplicates: tuple[str, ...]
    state_version: int
    updated: bool
    """Whether this batch triggered a controller update."""


# --------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------

DESIGN_NOTE_TARGETS: Mapping[str, float] = {
    "Idle": 0.2,
    "Walk": 0.25,
    "Back": 0.2,
    "Run": 0.2,
    "Sprint": 0.15,
}
"""§8 target usage of the note's five clips."""

DESIGN_NOTE_CURRICULUM_CLIPS = ("Idle", "Walk", "Back")


@dataclass(frozen=True)
class Preset:
    """Defaults a preset gives every field a run request leaves out."""

    strategy: StrategyParams
    aggregation: AggregationParams
    target_usage: Mapping[str, float] | None


def no_preset(clip_names: Sequence[str]) -> Preset:
    """The defaults without a preset: static strategy, uniform targets, ``max`` aggregation."""
    return Preset(strategy=StrategyParams(), aggregation=AggregationParams(), target_usage=None)


def design_note_preset(clip_names: Sequence[str]) -> Preset:
    """§8 of the design note: controller eta 1 every 50k steps, LSE tau 0.3, adaptive weights."""
    boosted = tuple(c for c in DESIGN_NOTE_CURRICULUM_CLIPS if c in clip_names)
    curriculum = CurriculumParams(clips=boosted) if boosted else None
    is_note_clip_set = sorted(clip_names) == sorted(DESIGN_NOTE_TARGETS)
    return Preset(
        strategy=StrategyParams(
            kind="controller", eta=1.0, update_every_steps=50_000, usage_measure="episodes"
        ),
        aggregation=AggregationParams(
            kind="lse",
            temperature=0.3,
            adaptive_weights=True,
            weight_lr=0.5,
            curriculum=curriculum,
        ),
        target_usage=dict(DESIGN_NOTE_TARGETS) if is_note_clip_set else None,
    )


PRESETS: Mapping[str | None, Callable[[Sequence[str]], Preset]] = {
    None: no_preset,
    "design-note": design_note_preset,
}
"""Preset name -> defaults for a clip set."""
