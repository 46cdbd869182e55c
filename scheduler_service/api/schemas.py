"""Pydantic models of the REST API (the wire format of ``docs/api.md``).

Every model forbids unknown fields and non-finite floats, so NaN, Infinity and 1e309 are
rejected at the boundary with a 422 naming the field. Request models convert themselves
into domain objects (``to_spec``, ``to_record``); response models are built from domain
objects (``from_state`` ...). No logic beyond that translation lives here.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictInt, StringConstraints

from scheduler_service.algorithms.aggregation import AggregationKind
from scheduler_service.algorithms.alarms import AlarmReport
from scheduler_service.domain import (
    MAX_CLIPS,
    PRESETS,
    AggregationParams,
    AuditRow,
    ClipSpec,
    CurriculumParams,
    HistoryRow,
    IngestResult,
    OutcomeRecord,
    RunSpec,
    RunState,
    RunSummary,
    StrategyKind,
    StrategyParams,
    TermMoments,
    UsageMeasure,
)

NAME_PATTERN = r"^[^\x00-\x1f\x7f]*$"
"""No control characters (NUL included): the same names on SQLite and PostgreSQL, which
refuses NUL in text."""
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NAME_PATTERN)]
"""A clip, group, learner, episode or term name: 1-200 characters, no control characters."""

RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
RunName = Annotated[str, StringConstraints(pattern=RUN_NAME_PATTERN)]
"""A run name: letters, digits, '.', '_' and '-', at most 128 characters."""

MAX_SHARE = 1e12
"""Largest relative share accepted (shares are normalised; larger ones overflow sums)."""
MAX_MAGNITUDE = 1e15
"""Largest |return| and |term mean| of one episode: sums over many stay finite."""
MAX_EPISODE_STEPS = 10**9
"""Largest steps (and term count) of one episode: counters stay within int64."""
MAX_INT64 = 2**63 - 1

MAX_RATE = 100.0
"""Largest controller step eta and weight step lambda: eta |u* - u| <= 100 in a logit."""
MAX_SCALE = 1e3
"""Largest UCB c, temperature, threshold delta and curriculum boost (1 / it the smallest
boost): every score and logit the updates form stays below ~1e7, far from overflow."""
MIN_TEMPERATURE = 1e-3
"""Smallest UCB and LogSumExp temperature (a score / temperature stays finite)."""
PriorCount = Annotated[float, Field(ge=1e-3, le=1e6)]
"""A Beta prior pseudo-count of Thompson sampling."""

Share = Annotated[float, Field(ge=0.0, le=MAX_SHARE)]
"""A non-negative finite number (a share or a relative weight)."""

Shares = Annotated[dict[Name, Share], Field(min_length=1)]
"""Shares by clip or group name; an empty map is a 422 (it would change nothing)."""

_STRATEGY_DEFAULTS = StrategyParams()
_AGGREGATION_DEFAULTS = AggregationParams()


def _time(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


class Model(BaseModel):
    """Base of every API model: no unknown fields, no NaN or infinities."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")


# --------------------------------------------------------------------------------------
# Run configuration (requests and responses)
# --------------------------------------------------------------------------------------


class StrategyModel(Model):
    """How ``clip_probs`` adapt; fields left out come from the preset (or these defaults)."""

    kind: StrategyKind = _STRATEGY_DEFAULTS.kind
    eta: float = Field(
        _STRATEGY_DEFAULTS.eta, ge=0.0, le=MAX_RATE, description="controller step size"
    )
    update_every_steps: int = Field(
        _STRATEGY_DEFAULTS.update_every_steps,
        ge=1,
        le=MAX_INT64,
        description="env steps (summed over all learners) between two updates",
    )
    usage_measure: UsageMeasure = _STRATEGY_DEFAULTS.usage_measure
    usage_ema: float = Field(
        _STRATEGY_DEFAULTS.usage_ema,
        gt=0.0,
        le=1.0,
        description="weight of the newest window in the smoothed usage (1 = no smoothing)",
    )
    p_min: float | None = Field(
        _STRATEGY_DEFAULTS.p_min,
        ge=0.0,
        le=1.0,
        description="probability floor, p_min * clips <= 1; null: min(0.01, 0.1 / clips)",
    )
    ucb_c: float = Field(_STRATEGY_DEFAULTS.ucb_c, ge=0.0, le=MAX_SCALE)
    ucb_temperature: float = Field(
        _STRATEGY_DEFAULTS.ucb_temperature, ge=MIN_TEMPERATURE, le=MAX_SCALE
    )
    success_ema: float = Field(_STRATEGY_DEFAULTS.success_ema, gt=0.0, le=1.0)
    thompson_prior: tuple[PriorCount, PriorCount] = _STRATEGY_DEFAULTS.thompson_prior
    thompson_discount: float = Field(_STRATEGY_DEFAULTS.thompson_discount, gt=0.0, le=1.0)

    def over(self, base: StrategyParams) -> StrategyParams:
        """``base`` with the fields given in this request."""
        return dataclasses.replace(base, **self.model_dump(exclude_unset=True))

    @classmethod
    def from_params(cls, params: StrategyParams) -> StrategyModel:
        """The wire form of stored parameters."""
        return cls(**dataclasses.asdict(params))


class CurriculumModel(Model):
    """§8 early curriculum: boost these clips' reward weights, then release them."""

    clips: list[Name]
    boost: float = Field(1.5, ge=1.0 / MAX_SCALE, le=MAX_SCALE)
    hold_steps: int = Field(1_000_000, ge=0, le=MAX_INT64)
    release_steps: int = Field(1_000_000, ge=0, le=MAX_INT64)


class AggregationModel(Model):
    """How actors combine per-clip rewards; fields left out come from the preset."""

    kind: AggregationKind = _AGGREGATION_DEFAULTS.kind
    temperature: float = Field(_AGGREGATION_DEFAULTS.temperature, ge=MIN_TEMPERATURE, le=MAX_SCALE)
    threshold_delta: float = Field(_AGGREGATION_DEFAULTS.threshold_delta, ge=0.0, le=MAX_SCALE)
    adaptive_weights: bool = _AGGREGATION_DEFAULTS.adaptive_weights
    weight_lr: float = Field(_AGGREGATION_DEFAULTS.weight_lr, ge=0.0, le=MAX_RATE)
    curriculum: CurriculumModel | None = None

    def over(self, base: AggregationParams) -> AggregationParams:
        """``base`` with the fields given in this request (``curriculum: null`` removes it)."""
        given = self.model_dump(exclude_unset=True)
        if "curriculum" in given:
            given["curriculum"] = (
                None
                if self.curriculum is None
                else CurriculumParams(
                    clips=tuple(self.curriculum.clips),
                    boost=self.curriculum.boost,
                    hold_steps=self.curriculum.hold_steps,
                    release_steps=self.curriculum.release_steps,
                )
            )
        return dataclasses.replace(base, **given)

    @classmethod
    def from_params(cls, params: AggregationParams) -> AggregationModel:
        """The wire form of stored parameters."""
        curriculum = params.curriculum
        return cls(
            kind=params.kind,
            temperature=params.temperature,
            threshold_delta=params.threshold_delta,
            adaptive_weights=params.adaptive_weights,
            weight_lr=params.weight_lr,
            curriculum=None
            if curriculum is None
            else CurriculumModel(
                clips=list(curriculum.clips),
                boost=curriculum.boost,
                hold_steps=curriculum.hold_steps,
                release_steps=curriculum.release_steps,
            ),
        )


class ClipIn(Model):
    """A clip of a new run."""

    name: Name
    group: Name | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)


class RunCreate(Model):
    """``POST /runs``."""

    name: RunName
    clips: list[ClipIn] = Field(min_length=1, max_length=MAX_CLIPS)
    preset: Literal["design-note"] | None = None
    strategy: StrategyModel | None = None
    aggregation: AggregationModel | None = None
    target_usage: Shares | None = None
    target_usage_by_group: Shares | None = None
    clip_probs: Shares | None = None
    reward_weights: Shares | None = None

    def to_spec(self) -> RunSpec:
        """The domain spec, with the preset's defaults under the fields given here."""
        preset = PRESETS[self.preset]([c.name for c in self.clips])
        return RunSpec(
            name=self.name,
            clips=tuple(ClipSpec(c.name, c.group, c.metadata) for c in self.clips),
            strategy=self.strategy.over(preset.strategy) if self.strategy else preset.strategy,
            aggregation=(
                self.aggregation.over(preset.aggregation)
                if self.aggregation
                else preset.aggregation
            ),
            target_usage=self.target_usage,
            target_usage_by_group=self.target_usage_by_group,
            clip_probs=self.clip_probs,
            reward_weights=self.reward_weights,
            preset=self.preset,
            default_target_usage=preset.target_usage,
        )


# --------------------------------------------------------------------------------------
# Run state
# --------------------------------------------------------------------------------------


class TotalsOut(Model):
    """Run-wide counters."""

    episodes: int
    steps: int
    updates: int


class TermStatsOut(Model):
    """Running moments of one reward term of one clip."""

    count: float
    mean: float
    std: float


class BanditOut(Model):
    """Per-clip statistics of the bandit strategies."""

    ema_success: float | None
    ema_return: float | None
    pulls: int
    thompson_successes: float
    thompson_failures: float


class ClipOut(Model):
    """One clip of the run state."""

    id: int
    name: str
    group: str | None
    metadata: dict[str, JsonValue]
    target_usage: float
    usage: float = Field(description="smoothed usage the controller steers (u)")
    usage_window: float = Field(description="share since the last controller update")
    usage_total: float = Field(description="cumulative share since the run started")
    clip_prob: float
    reward_weight: float
    success: float | None = Field(description="moving average of episode success (J^)")
    success_mean: float | None
    episodes: int
    steps: int
    return_mean: float | None
    bandit: BanditOut
    normalizers: dict[str, TermStatsOut]


class LearnerOut(Model):
    """A learner attached to the run."""

    learner_id: str
    first_seen: datetime
    last_seen: datetime
    episodes: int
    steps: int
    usage: list[float] = Field(description="this learner's own usage share per clip")
    stale: bool


class FrozenOut(Model):
    """Which vectors operators froze against the controller."""

    clip_probs: bool
    reward_weights: bool


class AlarmOut(Model):
    """One collapse alarm: measured value, threshold, whether it fires, clips involved."""

    name: str
    value: float
    threshold: float
    firing: bool
    clips: list[str]


class RunStateOut(Model):
    """``GET /runs/{run}``: everything about one run."""

    name: str
    state_version: int
    paused: bool
    frozen: FrozenOut
    preset: str | None
    created_at: datetime
    strategy: StrategyModel
    aggregation: AggregationModel
    totals: TotalsOut
    clips: list[ClipOut]
    learners: list[LearnerOut]
    alarms: list[AlarmOut] | None = None
    """Collapse alarms (only on ``GET /runs/{run}``; None in write responses)."""

    @classmethod
    def from_state(cls, state: RunState) -> RunStateOut:
        """The wire form of a run state."""
        config = state.config
        report = getattr(state, "alarms", None)
        alarms = (
            [
                AlarmOut(
                    name=a.name,
                    value=a.value,
                    threshold=a.threshold,
                    firing=a.firing,
                    clips=[config.clips[i].name for i in a.clips],
                )
                for a in report.alarms
            ]
            if isinstance(report, AlarmReport)
            else None
        )
        return cls(
            name=config.name,
            state_version=state.state_version,
            paused=state.paused,
            frozen=FrozenOut(
                clip_probs=state.clip_probs_frozen, reward_weights=state.reward_weights_frozen
            ),
            preset=config.preset,
            created_at=_time(config.created_at),
            strategy=StrategyModel.from_params(config.strategy),
            aggregation=AggregationModel.from_params(config.aggregation),
            totals=TotalsOut(**dataclasses.asdict(state.totals)),
            clips=[
                ClipOut(
                    id=c.id,
                    name=c.name,
                    group=c.group,
                    metadata=dict(c.metadata),
                    target_usage=c.target_usage,
                    usage=c.usage,
                    usage_window=c.usage_window,
                    usage_total=c.usage_total,
                    clip_prob=c.clip_prob,
                    reward_weight=c.reward_weight,
                    success=c.success,
                    success_mean=c.success_mean,
                    episodes=c.episodes,
                    steps=c.steps,
                    return_mean=c.return_mean,
                    bandit=BanditOut(
                        ema_success=c.success,
                        ema_return=c.ema_return,
                        pulls=c.episodes,
                        thompson_successes=c.thompson_successes,
                        thompson_failures=c.thompson_failures,
                    ),
                    normalizers={
                        term: TermStatsOut(count=s.count, mean=s.mean, std=s.std)
                        for term, s in c.normalizers.items()
                    },
                )
                for c in state.clips
            ],
            learners=[
                LearnerOut(
                    learner_id=learner.learner_id,
                    first_seen=_time(learner.first_seen),
                    last_seen=_time(learner.last_seen),
                    episodes=learner.episodes,
                    steps=learner.steps,
                    usage=list(learner.usage),
                    stale=learner.stale,
                )
                for learner in state.learners
            ],
            alarms=alarms,
        )


class RunSummaryOut(Model):
    """One run in the run list."""

    name: str
    clip_count: int
    strategy: StrategyKind
    state_version: int
    paused: bool
    totals: TotalsOut
    created_at: datetime

    @classmethod
    def from_summary(cls, summary: RunSummary) -> RunSummaryOut:
        """The wire form of a run summary."""
        return cls(
            name=summary.name,
            clip_count=summary.clip_count,
            strategy=summary.strategy,
            state_version=summary.state_version,
            paused=summary.paused,
            totals=TotalsOut(**dataclasses.asdict(summary.totals)),
            created_at=_time(summary.created_at),
        )


class RunListOut(Model):
    """``GET /runs``."""

    runs: list[RunSummaryOut]


# --------------------------------------------------------------------------------------
# The hot path
# --------------------------------------------------------------------------------------


class AggregationConfigOut(Model):
    """The aggregation part of ``actor_config``."""

    kind: AggregationKind
    temperature: float
    threshold_delta: float


class NormalizersOut(Model):
    """Per-clip, per-term normaliser snapshot: ``mean[clip][term]``."""

    terms: list[str]
    mean: list[list[float]]
    std: list[list[float]]
    count: list[list[float]]


class ActorConfigOut(Model):
    """What an actor needs to compute rewards, as of ``state_version``."""

    clip_names: list[str]
    clip_probs: list[float]
    reward_weights: list[float]
    aggregation: AggregationConfigOut
    normalizers: NormalizersOut
    paused: bool


class NextClipsOut(Model):
    """``GET /runs/{run}/next-clips`` (documentation only: the answer is pre-serialised)."""

    clip_ids: list[int]
    state_version: int
    actor_config: ActorConfigOut | None = None


class TermMomentsIn(Model):
    """Moments of one reward term over one episode."""

    count: float = Field(ge=0.0, le=MAX_EPISODE_STEPS)
    mean: float = Field(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)
    m2: float = Field(
        ge=0.0,
        le=MAX_EPISODE_STEPS * (2 * MAX_MAGNITUDE) ** 2,
        description="sum of squared deviations from the mean",
    )
    sum: float | None = Field(None, description="optional; mean * count")


class OutcomeIn(Model):
    """One finished episode."""

    model_config = ConfigDict(populate_by_name=True)

    episode_id: Name
    clip: Annotated[StrictInt, Field(ge=0, le=MAX_CLIPS)] | Name = Field(
        description='clip name or integer id (a JSON integer: true or "3" is not an id)'
    )
    steps: StrictInt = Field(ge=1, le=MAX_EPISODE_STEPS)
    episode_return: float = Field(alias="return", ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)
    success: float = Field(ge=0.0, le=1.0)
    reward_terms: dict[Name, TermMomentsIn] = Field(default_factory=dict, max_length=64)

    def to_record(self) -> OutcomeRecord:
        """The domain outcome."""
        return OutcomeRecord(
            episode_id=self.episode_id,
            clip=self.clip,
            steps=self.steps,
            episode_return=self.episode_return,
            success=self.success,
            reward_terms={
                name: TermMoments(m.count, m.mean, m.m2) for name, m in self.reward_terms.items()
            },
        )


class OutcomeBatchIn(Model):
    """``POST /runs/{run}/outcomes``; one bad item rejects the whole batch."""

    learner_id: Name
    outcomes: list[OutcomeIn] = Field(min_length=1)


class IngestOut(Model):
    """What a posted batch did."""

    accepted: int
    duplicates: list[str]
    state_version: int
    updated: bool = Field(description="whether this batch triggered a controller update")

    @classmethod
    def from_result(cls, result: IngestResult) -> IngestOut:
        """The wire form of an ingest result."""
        return cls(
            accepted=result.accepted,
            duplicates=list(result.duplicates),
            state_version=result.state_version,
            updated=result.updated,
        )


# --------------------------------------------------------------------------------------
# Overrides, history, audit, health
# --------------------------------------------------------------------------------------


class TargetsIn(Model):
    """``PUT /runs/{run}/targets``: per clip or per group (exactly one)."""

    target_usage: Shares | None = None
    target_usage_by_group: Shares | None = None


class ClipProbsIn(Model):
    """``PUT /runs/{run}/clip-probs``: new probabilities and/or the freeze flag."""

    clip_probs: Shares | None = None
    freeze: bool | None = None


class RewardWeightsIn(Model):
    """``PUT /runs/{run}/reward-weights``: new weights and/or the freeze flag."""

    reward_weights: Shares | None = None
    freeze: bool | None = None


class HistoryRowOut(Model):
    """The per-clip picture at one controller update (arrays in clip id order)."""

    update: int
    total_steps: int
    time: datetime
    paused: bool
    target_usage: list[float]
    clip_probs: list[float]
    usage: list[float]
    usage_window: list[float]
    reward_weights: list[float]
    success: list[float | None]
    rejected: str | None = Field(
        None, description="why this update kept the previous policy, if it did"
    )

    @classmethod
    def from_row(cls, row: HistoryRow) -> HistoryRowOut:
        """The wire form of a history row."""
        return cls(
            update=row.update,
            total_steps=row.total_steps,
            time=_time(row.time),
            paused=row.paused,
            target_usage=list(row.target_usage),
            clip_probs=list(row.clip_probs),
            usage=list(row.usage),
            usage_window=list(row.usage_window),
            reward_weights=list(row.reward_weights),
            success=list(row.success),
            rejected=row.rejected,
        )


class HistoryOut(Model):
    """``GET /runs/{run}/history``."""

    clip_names: list[str]
    updates: list[HistoryRowOut]


class AuditRowOut(Model):
    """One operator action."""

    id: int
    time: datetime
    actor: str
    action: str
    old: JsonValue
    new: JsonValue
    state_version: int

    @classmethod
    def from_row(cls, row: AuditRow) -> AuditRowOut:
        """The wire form of an audit row."""
        return cls(
            id=row.id,
            time=_time(row.time),
            actor=row.actor,
            action=row.action,
            old=row.old,
            new=row.new,
            state_version=row.state_version,
        )


class AuditOut(Model):
    """``GET /runs/{run}/audit``."""

    entries: list[AuditRowOut]


class ErrorOut(BaseModel):
    """An error answer: ``detail`` is a message, or a list of field errors (422)."""

    detail: JsonValue
    state_version: int | None = Field(None, description="the current version (412 only)")


class HealthOut(Model):
    """``GET /health``."""

    status: Literal["ok"]
    database: str
    schema_version: int


def error_detail(loc: tuple[Any, ...], msg: str, type_: str) -> dict[str, Any]:
    """One entry of a 422 ``detail`` list (pydantic's shape)."""
    return {"loc": list(loc), "msg": msg, "type": type_}
