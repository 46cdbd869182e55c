"""The scheduler's use cases: each one a single transaction in one place.

``SchedulerService`` creates runs, hands out clip ids, ingests outcome batches (and runs
the controller update they trigger), applies operator overrides and reads state,
history and audit. It owns the threads the database work runs on:

- **one writer thread** (``writer.Writer``): every write transaction runs there, so
  SQLite never sees two writers from this process and the event loop never blocks on a
  write; outcome batches that queue up are group-committed; locks held by another
  process are retried, and past the budget the caller gets ``Unavailable`` (HTTP 503).
- **a small reader pool** for heavier reads (run state, history, audit).
- the **event loop** itself for the one cheap indexed read of the hot path, on a
  connection of its own (``VersionReader``).

Per run it caches the immutable ``RunConfig`` and an ``ActorView``: a ``ClipSampler``
and the pre-serialised ``actor_config`` JSON, keyed by ``state_version``. Each
``next_clips`` call reads the current version (one indexed SELECT) and rebuilds the
view when it moved, so several processes can share one database.

Per-clip statistics are never updated row by row: an outcome batch appends one
``ClipDelta`` (``algorithms.clip_stats``: counters, moving averages, pseudo-counts and
reward moments of the clips it touched, independent of the state it will be applied
to) under the run lock, and every read (run state, alarms, the controller update) folds
the run's packed base with its pending deltas in id order, in memory. Every
``MAX_PENDING_DELTAS`` batches the ingesting transaction writes the folded statistics
as the new base and deletes those deltas (rewriting a 10,000-clip base costs ~15 ms, so
it is not done at every controller update). A 256-outcome batch at 10,000 clips thus
writes ~260 rows (its outcomes, for idempotency, plus one delta) instead of ~1,800.

``state_version`` counts changes of what actors see: it is bumped by controller
updates, overrides and pause/resume, not by outcomes. The normaliser statistics in
``actor_config`` are therefore a snapshot taken at the last controller update (the live
moments move with every outcome and are shown in the run state).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeVar

import numpy as np
import orjson
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from scheduler_service.algorithms.alarms import AlarmReport, AlarmThresholds, evaluate_alarms
from scheduler_service.algorithms.clip_stats import ClipStats, batch_delta, fold
from scheduler_service.algorithms.normalizers import Moments
from scheduler_service.algorithms.probabilities import apply_floor, usage_shares
from scheduler_service.algorithms.sampler import ClipSampler
from scheduler_service.domain import (
    MAX_CLIPS,
    MAX_NEXT_CLIPS,
    AuditRow,
    ClipInfo,
    ClipState,
    HistoryRow,
    IngestResult,
    LearnerStats,
    OutcomeRecord,
    RunConfig,
    RunSpec,
    RunState,
    RunSummary,
    StrategyParams,
    TermStats,
    Totals,
)
from scheduler_service.errors import (
    Conflict,
    FieldError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    Unavailable,
)
from scheduler_service.policy import (
    PolicyInputs,
    PolicyStep,
    apply_partial_shares,
    effective_weights,
    guarded_policy_step,
    smoothed_usage,
)
from scheduler_service.store.engine import read_options
from scheduler_service.store.repository import (
    LearnerRow,
    Repository,
    RunPolicy,
    RunRow,
    VersionReader,
    config_json,
    ensure_schema,
)
from scheduler_service.writer import Writer

logger = logging.getLogger(__name__)

T = TypeVar("T")

PolicyField = Literal["target_usage", "clip_probs", "reward_weights"]

_WITH_VALUES: Mapping[PolicyField, Callable[[RunPolicy, np.ndarray], RunPolicy]] = {
    "target_usage": lambda policy, values: replace(policy, target_usage=values),
    "clip_probs": lambda policy, values: replace(policy, clip_probs=values),
    # set weights are also where the adaptation continues from
    "reward_weights": lambda policy, v: replace(policy, base_weights=v, reward_weights=v),
}
"""An override of one policy vector."""

_FROZEN_COLUMN: Mapping[PolicyField, str] = {
    "clip_probs": "clip_probs_frozen",
    "reward_weights": "reward_weights_frozen",
}
"""The run flag that freezes a vector against the controller (targets never move)."""

MAX_PENDING_DELTAS = 32
"""Outcome batches (``clip_deltas`` rows) a run keeps before folding them into its base.

Bounds what a read folds (32 deltas of 256 outcomes: ~5 ms at 10,000 clips); a fold
rewrites the run's packed base (~1.6 MB at 10,000 clips with four reward terms).
"""

LearnerCounts = dict[str, tuple[np.ndarray, np.ndarray]]
"""Learner id -> its per-clip (episodes, steps) over the run's clips."""


@dataclass(frozen=True)
class FoldedStats:
    """A run's current per-clip statistics: its base with the pending deltas applied."""

    stats: ClipStats
    learner_counts: LearnerCounts
    changed_learners: frozenset[str]
    """Learners whose per-clip counts the pending deltas changed."""
    last_delta_id: int
    """Id of the last delta applied; 0 when none was pending."""


@dataclass(frozen=True)
class ServiceOptions:
    """Limits of the service (from ``Settings``)."""

    max_outcomes_per_batch: int = 1024
    learner_stale_seconds: float = 60.0
    reader_threads: int = 4
    alarm_thresholds: AlarmThresholds = field(default_factory=AlarmThresholds)


@dataclass(frozen=True)
class ActorView:
    """What the hot path serves for one state version of a run."""

    state_version: int
    sampler: ClipSampler
    actor_config: bytes
    """The ``actor_config`` JSON object, serialised once."""
    rng: np.random.Generator


@dataclass(frozen=True)
class _PreparedBatch:
    """An outcome batch validated and resolved against the run's clips."""

    learner_id: str
    episode_ids: list[str]
    hashes: list[str]
    clip_ids: np.ndarray
    steps: np.ndarray
    returns: np.ndarray
    success: np.ndarray
    in_batch_duplicates: list[str]
    term_item: np.ndarray
    """Index (into the arrays above) of each reward-term entry."""
    term_names: list[str]
    term_count: np.ndarray
    term_mean: np.ndarray
    term_m2: np.ndarray


@dataclass(frozen=True)
class RunStateWithAlarms(RunState):
    """A run state together with its collapse alarms (what ``GET /runs/{run}`` shows)."""

    alarms: AlarmReport | None = None


def _payload_hash(learner_id: str, clip_id: int, outcome: OutcomeRecord) -> str:
    """Digest of what an outcome says (a retry must repeat it exactly)."""
    terms = sorted((k, v.count, v.mean, v.m2) for k, v in outcome.reward_terms.items())
    payload = orjson.dumps(
        [learner_id, clip_id, outcome.steps, outcome.episode_return, outcome.success, terms]
    )
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def _success_or_none(success: np.ndarray, seen: np.ndarray) -> tuple[float | None, ...]:
    """Per clip its success estimate, None for clips without an episode yet."""
    values: list[float | None] = list(success.tolist())
    for i in np.flatnonzero(~seen).tolist():
        values[i] = None
    return tuple(values)


def _shares(values: np.ndarray) -> np.ndarray:
    """values / sum(values), zeros (not uniform) when nothing was counted yet."""
    total = float(values.sum())
    return values / total if total > 0 else np.zeros(values.shape[0])


class SchedulerService:
    """The scheduler's use cases over one database (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        options: ServiceOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.options = options or ServiceOptions()
        self.repo = Repository(engine.dialect)
        self._clock = clock
        self._writer = Writer(engine)
        self._readers = ThreadPoolExecutor(
            max_workers=self.options.reader_threads, thread_name_prefix="clipsched-reader"
        )
        self._read_options = read_options(engine)
        self._versions = VersionReader(engine)
        self._configs: dict[str, RunConfig] = {}
        self._views: dict[str, ActorView] = {}
        self._view_locks: dict[str, asyncio.Lock] = {}

    @property
    def database_kind(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def start(self) -> None:
        """Create or check the schema (call once before serving)."""
        ensure_schema(self.engine)

    def close(self) -> None:
        """Finish pending work and release threads and connections."""
        self._writer.close()
        self._readers.shutdown(wait=True)
        self._versions.close()
        self.engine.dispose()

    # ----- transactions ------------------------------------------------------------------

    @contextmanager
    def _read_tx(self) -> Iterator[Connection]:
        with (
            self.engine.connect().execution_options(**self._read_options) as conn,
            conn.begin(),
        ):
            yield conn

    async def _write(self, work: Callable[[Connection], T], *, groupable: bool = False) -> T:
        """Run ``work`` in a write transaction on the writer thread (see ``writer``)."""
        return await asyncio.wrap_future(self._writer.submit(work, groupable=groupable))

    async def _read(self, work: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self._read_tx() as conn:
                return work(conn)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, run)

    async def get_config(self, name: str) -> RunConfig:
        """The run's immutable config (cached; runs are never deleted)."""
        config = self._configs.get(name)
        if config is None:
            config = await self._read(lambda conn: self.repo.run_config(conn, name))
            if config is None:
                raise NotFound(f"run {name!r} does not exist")
            self._configs[name] = config
        return config

    def _locked_run(self, conn: Connection, name: str, if_match: int | None = None) -> RunRow:
        """The run row under the run lock, checked against ``If-Match``."""
        row = self.repo.run(conn, name, lock=True)
        if row is None:
            raise NotFound(f"run {name!r} does not exist")
        if if_match is not None and if_match != row.state_version:
            raise PreconditionFailed(row.state_version)
        return row

    def _bump(self, conn: Connection, row: RunRow, **fields: Any) -> int:
        """state_version += 1 (and set ``fields`` of the run row)."""
        version = row.state_version + 1
        self.repo.set_run_fields(conn, row.id, state_version=version, **fields)
        return version

    # ----- health ------------------------------------------------------------------------

    async def check_database(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        await self._read(lambda conn: conn.execute(text("SELECT 1")).scalar_one())

    # ----- runs --------------------------------------------------------------------------

    async def create_run(self, spec: RunSpec, *, actor: str = "anonymous") -> RunState:
        """Create a run from a resolved spec; Conflict if the name is taken."""
        strategy, clips, policy = _resolve_new_run(spec)
        now = self._clock()

        def work(conn: Connection) -> RunState:
            if self.repo.run_exists(conn, spec.name):
                raise Conflict(f"run {spec.name!r} already exists")
            run_id = self.repo.create_run(
                conn,
                name=spec.name,
                config=config_json(strategy, spec.aggregation, spec.preset),
                created_at=now,
                clips=clips,
                policy=policy,
            )
            self.repo.insert_audit(
                conn,
                run_id,
                time=now,
                actor=actor,
                action="create_run",
                old=None,
                new={"preset": spec.preset, "clips": len(clips)},
                state_version=1,
            )
            config = self.repo.run_config(conn, spec.name)
            assert config is not None
            return self._state_tx(conn, config, now)

        try:
            return await self._write(work)
        except IntegrityError as exc:  # another replica created it between check and insert
            raise Conflict(f"run {spec.name!r} already exists") from exc

    async def list_runs(self) -> list[RunSummary]:
        """Every run, by name."""
        rows = await self._read(self.repo.list_runs)
        summaries = []
        for row, config, clip_count, created_at in rows:
            strategy_kind = orjson.loads(config)["strategy"]["kind"]
            summaries.append(
                RunSummary(
                    name=row.name,
                    clip_count=clip_count,
                    strategy=strategy_kind,
                    state_version=row.state_version,
                    paused=row.paused,
                    totals=Totals(row.total_episodes, row.total_steps, row.updates),
                    created_at=created_at,
                )
            )
        return summaries

    async def get_run_state(self, name: str) -> RunState:
        """The run's clips, targets, usage, learners and totals, read in one transaction."""
        config = await self.get_config(name)
        now = self._clock()
        return await self._read(lambda conn: self._state_tx(conn, config, now))

    def _state_tx(self, conn: Connection, config: RunConfig, now: float) -> RunState:
        row = self.repo.run(conn, config.name)
        if row is None:
            raise NotFound(f"run {config.name!r} does not exist")
        policy = self.repo.policy(conn, row.id)
        folded = self._folded(conn, row.id)
        counters = folded.stats
        state = _build_run_state(
            config,
            row,
            policy,
            counters,
            self.repo.learners(conn, row.id),
            folded.learner_counts,
            now=now,
            stale_seconds=self.options.learner_stale_seconds,
        )
        thresholds = self.options.alarm_thresholds
        m = thresholds.stalled_updates
        recent = self.repo.history(conn, row.id, max(0, row.updates - m), m)
        # stalled success needs M updates in which every clip has a success estimate
        success_rows = [r.success for r in recent]
        history = (
            np.asarray(success_rows, dtype=np.float64)
            if len(success_rows) == m and all(v is not None for r in success_rows for v in r)
            else None
        )
        report = evaluate_alarms(
            np.array([c.usage for c in state.clips]),
            np.array([c.target_usage for c in state.clips]),
            (counters.episodes - policy.window_start_episodes).astype(np.float64),
            history,
            thresholds,
            update_rejected=bool(recent and recent[-1].rejected),
        )
        return RunStateWithAlarms(
            **{f.name: getattr(state, f.name) for f in fields(state)}, alarms=report
        )

    # ----- the hot path ------------------------------------------------------------------

    async def next_clips(self, name: str, n: int, known_version: int | None = None) -> bytes:
        """``n`` sampled clip ids as a JSON object; ``actor_config`` unless already known."""
        if not 1 <= n <= MAX_NEXT_CLIPS:
            raise InvalidInput.one(("n",), f"must be between 1 and {MAX_NEXT_CLIPS}")
        try:
            head = self._versions.read(name)
        except Exception as exc:  # the driver's own error type, after one reconnect
            logger.warning("version read failed: %s", exc)
            raise Unavailable("the database cannot be read; retry shortly") from exc
        if head is None:
            raise NotFound(f"run {name!r} does not exist")
        view = self._views.get(name)
        if view is None or view.state_version < head[1]:
            view = await self._refresh_view(name, head[1])
        clip_ids = view.sampler.sample(n, view.rng)
        parts = [
            b'{"clip_ids":',
            orjson.dumps(clip_ids, option=orjson.OPT_SERIALIZE_NUMPY),
            b',"state_version":',
            str(view.state_version).encode(),
        ]
        if known_version != view.state_version:
            parts += [b',"actor_config":', view.actor_config]
        parts.append(b"}")
        return b"".join(parts)

    async def _refresh_view(self, name: str, at_least: int) -> ActorView:
        lock = self._view_locks.setdefault(name, asyncio.Lock())
        async with lock:
            view = self._views.get(name)
            if view is not None and view.state_version >= at_least:
                return view  # another request rebuilt it meanwhile
            config = await self.get_config(name)
            fresh = await self._read(lambda conn: self._build_view(conn, config))
            current = self._views.get(name)
            if current is None or fresh.state_version > current.state_version:
                self._views[name] = fresh
                logger.debug("run %s: actor view at version %d", name, fresh.state_version)
            return self._views[name]

    def _build_view(self, conn: Connection, config: RunConfig) -> ActorView:
        row = self.repo.run(conn, config.name)
        if row is None:
            raise NotFound(f"run {config.name!r} does not exist")
        policy = self.repo.policy(conn, row.id)
        moments = policy.normalizers
        aggregation = config.aggregation
        actor_config = {
            "clip_names": config.clip_names,
            "clip_probs": policy.clip_probs,
            "reward_weights": policy.reward_weights,
            "aggregation": {
                "kind": aggregation.kind,
                "temperature": aggregation.temperature,
                "threshold_delta": aggregation.threshold_delta,
            },
            "normalizers": {
                "terms": policy.normalizer_terms,
                "mean": moments.mean,
                "std": moments.std,
                "count": moments.count,
            },
            "paused": row.paused,
        }
        return ActorView(
            state_version=row.state_version,
            sampler=ClipSampler(policy.clip_probs),
            actor_config=orjson.dumps(actor_config, option=orjson.OPT_SERIALIZE_NUMPY),
            rng=np.random.default_rng(),
        )

    # ----- outcomes ----------------------------------------------------------------------

    async def ingest_outcomes(
        self, name: str, learner_id: str, outcomes: Sequence[OutcomeRecord]
    ) -> IngestResult:
        """Store a batch of outcomes exactly once and run the controller if it is due."""
        if len(outcomes) > self.options.max_outcomes_per_batch:
            raise PayloadTooLarge(
                f"{len(outcomes)} outcomes in one batch; at most "
                f"{self.options.max_outcomes_per_batch}"
            )
        if not outcomes:
            raise InvalidInput.one(("outcomes",), "at least one outcome is required")
        config = await self.get_config(name)
        batch = _prepare_batch(config, learner_id, outcomes)
        now = self._clock()
        return await self._write(
            lambda conn: self._ingest_tx(conn, config, batch, now), groupable=True
        )

    def _ingest_tx(
        self, conn: Connection, config: RunConfig, batch: _PreparedBatch, now: float
    ) -> IngestResult:
        """Store the new outcomes, count them, and run the controller update if it is due."""
        row = self._locked_run(conn, config.name)
        fresh, duplicates = self._store_outcomes(conn, row.id, batch, now)
        accepted = int(fresh.sum())
        if not accepted:
            return IngestResult(0, duplicates, row.state_version, updated=False)
        new_steps = self._count_outcomes(conn, config, row.id, batch, fresh, now)
        total_steps = row.total_steps + new_steps
        interval = total_steps // config.strategy.update_every_steps
        if row.pending_deltas + 1 >= MAX_PENDING_DELTAS:
            self._fold(conn, row.id)
        if interval <= row.interval_index:
            return IngestResult(accepted, duplicates, row.state_version, updated=False)
        version = self._controller_update(conn, config, row, total_steps, interval, now)
        return IngestResult(accepted, duplicates, version, updated=True)

    def _store_outcomes(
        self, conn: Connection, run_id: int, batch: _PreparedBatch, now: float
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """Insert the outcome rows; returns which were new, and the duplicate ids.

        Ids already stored are duplicates when their payload hash matches, else the whole
        batch is a Conflict (the caller's transaction rolls back). The check reads only
        this batch's ids (one indexed ``IN`` query), under the run lock, so no other
        transaction can store one of them between the read and the insert.
        """
        stored = self.repo.outcome_hashes(conn, run_id, batch.episode_ids)
        duplicates = list(batch.in_batch_duplicates)
        if stored:
            hashes = dict(zip(batch.episode_ids, batch.hashes, strict=True))
            known = [e for e in batch.episode_ids if e in stored]
            clashes = [e for e in known if stored[e] != hashes[e]]
            if clashes:
                raise Conflict(
                    f"episode_id {clashes[0]!r} is already stored with a different payload"
                    + (f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else "")
                )
            duplicates += known
        fresh = np.fromiter((e not in stored for e in batch.episode_ids), bool, len(batch.hashes))
        self.repo.insert_outcomes(
            conn,
            [
                {
                    "run_id": run_id,
                    "episode_id": episode_id,
                    "clip_id": clip_id,
                    "learner_id": batch.learner_id,
                    "steps": steps,
                    "episode_return": episode_return,
                    "success": success,
                    "payload_hash": payload_hash,
                    "received_at": now,
                }
                for episode_id, payload_hash, clip_id, steps, episode_return, success, new in zip(
                    batch.episode_ids,
                    batch.hashes,
                    batch.clip_ids.tolist(),
                    batch.steps.tolist(),
                    batch.returns.tolist(),
                    batch.success.tolist(),
                    fresh.tolist(),
                    strict=True,
                )
                if new
            ],
        )
        return fresh, tuple(duplicates)

    def _count_outcomes(
        self,
        conn: Connection,
        config: RunConfig,
        run_id: int,
        batch: _PreparedBatch,
        fresh: np.ndarray,
        now: float,
    ) -> int:
        """Append the new outcomes' delta and add them to the totals; returns their env steps.

        The delta is computed from the batch alone (in outcome order), so this writes one
        ``clip_deltas`` row, one learner row and the run row, whatever the clips touched.
        """
        strategy = config.strategy
        clip_ids = batch.clip_ids[fresh]
        steps = batch.steps[fresh]
        keep = fresh[batch.term_item]
        delta = batch_delta(
            clip_ids,
            steps,
            batch.returns[fresh],
            batch.success[fresh],
            ema_alpha=strategy.success_ema,
            thompson_gamma=strategy.thompson_discount,
            term_clip_ids=batch.clip_ids[batch.term_item[keep]],
            term_names=[n for n, k in zip(batch.term_names, keep.tolist(), strict=True) if k],
            term_moments=Moments(
                count=batch.term_count[keep], mean=batch.term_mean[keep], m2=batch.term_m2[keep]
            ),
        )
        self.repo.insert_clip_delta(conn, run_id, batch.learner_id, delta)
        new_steps = int(steps.sum())
        episodes = int(clip_ids.shape[0])
        self.repo.add_learner(
            conn, run_id, batch.learner_id, episodes=episodes, steps=new_steps, now=now
        )
        self.repo.add_totals(conn, run_id, episodes, new_steps)
        return new_steps

    def _folded(self, conn: Connection, run_id: int) -> FoldedStats:
        """The run's base statistics with its pending deltas applied in id order."""
        repo = self.repo
        base = repo.clip_state(conn, run_id)
        learner_counts = repo.learner_clip_counts(conn, run_id)
        deltas = repo.clip_deltas(conn, run_id)
        if not deltas:
            return FoldedStats(base, learner_counts, frozenset(), 0)
        # the base is copied once, then each delta is applied in place, in id order
        stats = fold(base, (delta for _, _, delta in deltas))
        changed: set[str] = set()
        k = base.num_clips
        for _, learner_id, delta in deltas:
            if learner_id not in changed:
                episodes, steps = learner_counts.get(
                    learner_id, (np.zeros(k, np.int64), np.zeros(k, np.int64))
                )
                learner_counts[learner_id] = (episodes.copy(), steps.copy())
                changed.add(learner_id)
            episodes, steps = learner_counts[learner_id]
            episodes[delta.clip_ids] += delta.episodes
            steps[delta.clip_ids] += delta.steps
        return FoldedStats(stats, learner_counts, frozenset(changed), deltas[-1][0])

    def _fold(self, conn: Connection, run_id: int) -> ClipStats:
        """Fold the pending deltas into the run's base (call under the run lock)."""
        repo = self.repo
        folded = self._folded(conn, run_id)
        if folded.last_delta_id:
            repo.write_clip_state(conn, run_id, folded.stats)
            for learner_id in sorted(folded.changed_learners):
                episodes, steps = folded.learner_counts[learner_id]
                repo.write_learner_clip_counts(conn, run_id, learner_id, episodes, steps)
            repo.delete_clip_deltas(conn, run_id, folded.last_delta_id)
            repo.set_run_fields(conn, run_id, pending_deltas=0)
        return folded.stats

    def _controller_update(
        self,
        conn: Connection,
        config: RunConfig,
        row: RunRow,
        total_steps: int,
        interval: int,
        now: float,
    ) -> int:
        """One controller update (guarded by the run lock and ``interval_index``)."""
        repo = self.repo
        strategy = config.strategy
        k = len(config.clips)
        policy = repo.policy(conn, row.id)
        # the current statistics; the base is only rewritten every MAX_PENDING_DELTAS batches
        counters = self._folded(conn, row.id).stats
        window_episodes = counters.episodes - policy.window_start_episodes
        window_steps = counters.steps - policy.window_start_steps
        counted = window_episodes if strategy.usage_measure == "episodes" else window_steps
        previous = policy.usage_ema
        if counted.sum() > 0:
            window = usage_shares(window_episodes, window_steps, strategy.usage_measure)
            usage = smoothed_usage(previous, window, strategy.usage_ema)
        else:  # nothing finished in this window: keep what we knew
            window = np.zeros(k)
            usage = previous if previous is not None else np.zeros(k)
        seen = counters.episodes > 0
        inputs = PolicyInputs(
            target_usage=policy.target_usage,
            clip_probs=policy.clip_probs,
            base_weights=policy.base_weights,
            reward_weights=policy.reward_weights,
            usage=usage,
            success=np.where(seen, counters.ema_success, 0.0),
            episodes=counters.episodes,
            thompson_successes=counters.ts_successes,
            thompson_failures=counters.ts_failures,
            total_steps=total_steps,
        )
        update_index = row.updates + 1
        rejected = None
        if row.paused or usage.sum() == 0:
            step = PolicyStep(policy.clip_probs, policy.base_weights, policy.reward_weights)
        else:
            step, rejected = guarded_policy_step(
                strategy,
                config.aggregation,
                config.clip_names,
                inputs,
                # reproducible: the same run and update index give the same draws
                np.random.default_rng([row.id, update_index]),
                clip_probs_frozen=row.clip_probs_frozen,
                reward_weights_frozen=row.reward_weights_frozen,
            )
        # only clips with outcomes in this window can have new moments: patch those in
        touched = np.flatnonzero(window_episodes > 0)
        terms, normalizers = _patched_snapshot(
            policy.normalizer_terms, policy.normalizers, counters, touched
        )
        repo.write_policy(
            conn,
            row.id,
            replace(
                policy,
                clip_probs=step.clip_probs,
                base_weights=step.base_weights,
                reward_weights=step.reward_weights,
                usage_ema=usage if usage.sum() > 0 else previous,
                window_start_episodes=counters.episodes,
                window_start_steps=counters.steps,
                normalizer_terms=terms,
                normalizers=normalizers,
            ),
        )
        repo.insert_history(
            conn,
            row.id,
            HistoryRow(
                update=update_index,
                total_steps=total_steps,
                time=now,
                paused=row.paused,
                target_usage=tuple(policy.target_usage.tolist()),
                clip_probs=tuple(step.clip_probs.tolist()),
                usage=tuple(usage.tolist()),
                usage_window=tuple(window.tolist()),
                reward_weights=tuple(step.reward_weights.tolist()),
                success=_success_or_none(counters.ema_success, seen),
                rejected=rejected,
            ),
        )
        if rejected is not None:  # the outcomes are stored; the policy stays as it was
            logger.warning("run %s: update %d kept the last policy: %s", config.name,
                           update_index, rejected)  # fmt: skip
        version = self._bump(conn, row, interval_index=interval, updates=update_index)
        logger.info(
            "run %s: update %d at %d steps -> version %d",
            config.name,
            update_index,
            total_steps,
            version,
        )
        return version

    # ----- overrides ---------------------------------------------------------------------

    async def set_targets(
        self,
        name: str,
        *,
        target_usage: Mapping[str, float] | None = None,
        target_usage_by_group: Mapping[str, float] | None = None,
        if_match: int | None = None,
        actor: str = "anonymous",
    ) -> RunState:
        """Override target usage per clip or per group (partial-override rule)."""
        config = await self.get_config(name)
        named, loc = _named_clip_values(config, target_usage, target_usage_by_group)
        return await self._override_policy(
            config, "target_usage", named, loc, freeze=None, if_match=if_match, actor=actor
        )

    async def set_clip_probs(
        self,
        name: str,
        clip_probs: Mapping[str, float] | None,
        *,
        freeze: bool | None = None,
        if_match: int | None = None,
        actor: str = "anonymous",
    ) -> RunState:
        """Set ``clip_probs`` (partial-override rule) and/or freeze them against updates."""
        config = await self.get_config(name)
        named = None if clip_probs is None else _clip_ids(config, clip_probs, "clip_probs")
        return await self._override_policy(
            config, "clip_probs", named, ("clip_probs",), freeze, if_match, actor
        )

    async def set_reward_weights(
        self,
        name: str,
        reward_weights: Mapping[str, float] | None,
        *,
        freeze: bool | None = None,
        if_match: int | None = None,
        actor: str = "anonymous",
    ) -> RunState:
        """Set ``reward_weights`` (partial-override rule) and/or freeze them against updates."""
        config = await self.get_config(name)
        named = (
            None if reward_weights is None else _clip_ids(config, reward_weights, "reward_weights")
        )
        return await self._override_policy(
            config, "reward_weights", named, ("reward_weights",), freeze, if_match, actor
        )

    async def _override_policy(
        self,
        config: RunConfig,
        field: PolicyField,
        named: Mapping[int, float] | None,
        loc: tuple[str | int, ...],
        freeze: bool | None,
        if_match: int | None,
        actor: str,
    ) -> RunState:
        if named is None and freeze is None:
            raise InvalidInput.one((field,), f"give {field} and/or freeze")
        now = self._clock()

        def work(conn: Connection) -> RunState:
            row = self._locked_run(conn, config.name, if_match)
            policy = self.repo.policy(conn, row.id)
            current = {
                "target_usage": policy.target_usage,
                "clip_probs": policy.clip_probs,
                "reward_weights": policy.reward_weights,
            }[field]
            old: dict[str, Any] = {field: _by_name(config, current)}
            new: dict[str, Any] = {}
            flags: dict[str, bool] = {}
            if named is not None:
                try:
                    values = apply_partial_shares(current, named)
                except ValueError as exc:
                    raise InvalidInput.one(loc, str(exc)) from exc
                self.repo.write_policy(conn, row.id, _WITH_VALUES[field](policy, values))
                new[field] = _by_name(config, values)
            if freeze is not None:
                column = _FROZEN_COLUMN[field]
                old["frozen"] = getattr(row, column)
                new["frozen"] = freeze
                flags[column] = freeze
            version = self._bump(conn, row, **flags)
            self.repo.insert_audit(
                conn,
                row.id,
                time=now,
                actor=actor,
                action=f"set_{field}",
                old=old,
                new=new,
                state_version=version,
            )
            return self._state_tx(conn, config, now)

        return await self._write(work)

    async def set_paused(
        self, name: str, paused: bool, *, if_match: int | None = None, actor: str = "anonymous"
    ) -> RunState:
        """Pause (or resume) adaptation: controller updates keep measuring but change nothing."""
        config = await self.get_config(name)
        now = self._clock()

        def work(conn: Connection) -> RunState:
            row = self._locked_run(conn, config.name, if_match)
            if row.paused != paused:
                version = self._bump(conn, row, paused=paused)
                self.repo.insert_audit(
                    conn,
                    row.id,
                    time=now,
                    actor=actor,
                    action="pause" if paused else "resume",
                    old={"paused": row.paused},
                    new={"paused": paused},
                    state_version=version,
                )
            return self._state_tx(conn, config, now)

        return await self._write(work)

    # ----- history and audit -------------------------------------------------------------

    async def history(
        self, name: str, since_update: int = 0, limit: int = 1000
    ) -> list[HistoryRow]:
        """Controller updates after ``since_update``, oldest first."""
        config = await self.get_config(name)
        return await self._read(
            lambda conn: self.repo.history(conn, config.run_id, since_update, limit)
        )

    async def audit(self, name: str, since_id: int = 0, limit: int = 1000) -> list[AuditRow]:
        """Operator actions on the run after audit id ``since_id``, oldest first."""
        config = await self.get_config(name)
        return await self._read(lambda conn: self.repo.audit(conn, config.run_id, since_id, limit))


# --------------------------------------------------------------------------------------
# Validation and resolution (pure)
# --------------------------------------------------------------------------------------


def _clip_ids(config: RunConfig, values: Mapping[str, float], field: str) -> dict[int, float]:
    """Clip name -> value mapped to clip id -> value; unknown names are 422s."""
    index = {clip.name: clip.id for clip in config.clips}
    errors = [
        FieldError((field, name), f"unknown clip {name!r}") for name in values if name not in index
    ]
    if errors:
        raise InvalidInput(errors)
    return {index[name]: float(v) for name, v in values.items()}


def _named_clip_values(
    config: RunConfig,
    target_usage: Mapping[str, float] | None,
    target_usage_by_group: Mapping[str, float] | None,
) -> tuple[dict[int, float], tuple[str, ...]]:
    """Per-clip or per-group targets as clip id -> value (a group's share split equally)."""
    if (target_usage is None) == (target_usage_by_group is None):
        raise InvalidInput.one(
            ("target_usage",), "give exactly one of target_usage and target_usage_by_group"
        )
    if target_usage is not None:
        return _clip_ids(config, target_usage, "target_usage"), ("target_usage",)
    assert target_usage_by_group is not None
    members: dict[str, list[int]] = {}
    for clip in config.clips:
        if clip.group is not None:
            members.setdefault(clip.group, []).append(clip.id)
    errors = [
        FieldError(("target_usage_by_group", g), f"no clip is in group {g!r}")
        for g in target_usage_by_group
        if g not in members
    ]
    if errors:
        raise InvalidInput(errors)
    named: dict[int, float] = {}
    for group, share in target_usage_by_group.items():
        for clip_id in members[group]:
            named[clip_id] = float(share) / len(members[group])
    return named, ("target_usage_by_group",)


def _by_name(config: RunConfig, values: np.ndarray) -> dict[str, float]:
    return dict(zip(config.clip_names, values.tolist(), strict=True))


def _resolve_new_run(
    spec: RunSpec,
) -> tuple[StrategyParams, tuple[ClipInfo, ...], RunPolicy]:
    """Validate a run spec; returns the strategy (floor resolved), clips and first policy."""
    k = len(spec.clips)
    if not 1 <= k <= MAX_CLIPS:
        raise InvalidInput.one(("clips",), f"a run has 1 to {MAX_CLIPS} clips, got {k}")
    first_seen: dict[str, int] = {}
    errors = []
    for i, clip in enumerate(spec.clips):
        if clip.name in first_seen:
            errors.append(
                FieldError(
                    ("clips", i, "name"),
                    f"duplicate clip name {clip.name!r} (also clips[{first_seen[clip.name]}])",
                )
            )
        first_seen.setdefault(clip.name, i)
    if errors:
        raise InvalidInput(errors)

    strategy = spec.strategy
    p_min = min(0.01, 0.1 / k) if strategy.p_min is None else strategy.p_min
    if p_min * k > 1.0 + 1e-12:
        raise InvalidInput.one(
            ("strategy", "p_min"), f"p_min * clips must be <= 1 (p_min={p_min}, clips={k})"
        )
    strategy = replace(strategy, p_min=p_min)

    names = tuple(c.name for c in spec.clips)
    config = RunConfig(
        run_id=0,
        name=spec.name,
        clips=tuple(
            ClipInfo(id=i, name=c.name, group=c.group, metadata=c.metadata)
            for i, c in enumerate(spec.clips)
        ),
        strategy=strategy,
        aggregation=spec.aggregation,
        preset=spec.preset,
        created_at=0.0,
    )
    curriculum = spec.aggregation.curriculum
    if curriculum is not None:
        unknown = [
            FieldError(("aggregation", "curriculum", "clips", i), f"unknown clip {c!r}")
            for i, c in enumerate(curriculum.clips)
            if c not in first_seen
        ]
        if unknown:
            raise InvalidInput(unknown)

    # targets: the preset's (or uniform), then the request's by the partial-override rule
    base = np.full(k, 1.0 / k)
    if spec.default_target_usage is not None:
        defaults = _clip_ids(config, spec.default_target_usage, "target_usage")
        base = apply_partial_shares(base, defaults)
    targets = base
    if spec.target_usage is not None or spec.target_usage_by_group is not None:
        named, loc = _named_clip_values(config, spec.target_usage, spec.target_usage_by_group)
        targets = _partial(base, named, loc)
    clip_probs = apply_floor(targets, p_min)
    if spec.clip_probs is not None:
        clip_probs = _partial(
            clip_probs, _clip_ids(config, spec.clip_probs, "clip_probs"), ("clip_probs",)
        )
    base_weights = targets
    if spec.reward_weights is not None:
        base_weights = _partial(
            targets, _clip_ids(config, spec.reward_weights, "reward_weights"), ("reward_weights",)
        )
    reward_weights = effective_weights(spec.aggregation, names, base_weights, 0)
    policy = RunPolicy.initial(targets, clip_probs, base_weights, reward_weights)
    return strategy, config.clips, policy


def _partial(
    current: np.ndarray, named: Mapping[int, float], loc: tuple[str | int, ...]
) -> np.ndarray:
    try:
        return apply_partial_shares(current, named)
    except ValueError as exc:
        raise InvalidInput.one(loc, str(exc)) from exc


def _prepare_batch(
    config: RunConfig, learner_id: str, outcomes: Sequence[OutcomeRecord]
) -> _PreparedBatch:
    """Resolve clips and ids of a whole batch; any bad item rejects it (nothing stored)."""
    index = config.clip_index
    k = len(config.clips)
    errors: list[FieldError] = []
    clip_ids: list[int] = []
    for i, outcome in enumerate(outcomes):
        clip = outcome.clip
        if isinstance(clip, int):
            if not 0 <= clip < k:
                errors.append(
                    FieldError(("outcomes", i, "clip"), f"no clip id {clip} (0..{k - 1})")
                )
            clip_ids.append(clip)
        elif clip in index:
            clip_ids.append(index[clip])
        else:
            errors.append(FieldError(("outcomes", i, "clip"), f"unknown clip {clip!r}"))
            clip_ids.append(-1)
    if errors:
        raise InvalidInput(errors)

    first: dict[str, tuple[int, str]] = {}
    keep: list[int] = []
    hashes: list[str] = []
    in_batch_duplicates: list[str] = []
    for i, outcome in enumerate(outcomes):
        payload_hash = _payload_hash(learner_id, clip_ids[i], outcome)
        seen = first.get(outcome.episode_id)
        if seen is None:
            first[outcome.episode_id] = (i, payload_hash)
            keep.append(i)
            hashes.append(payload_hash)
        elif seen[1] == payload_hash:
            in_batch_duplicates.append(outcome.episode_id)
        else:
            raise Conflict(
                f"episode_id {outcome.episode_id!r} appears twice in the batch with different "
                f"payloads (outcomes[{seen[0]}] and outcomes[{i}])"
            )

    kept = [outcomes[i] for i in keep]
    term_item: list[int] = []
    term_names: list[str] = []
    term_values: list[tuple[float, float, float]] = []
    for j, outcome in enumerate(kept):
        for term, moments in outcome.reward_terms.items():
            if moments.count > 0:
                term_item.append(j)
                term_names.append(term)
                term_values.append((moments.count, moments.mean, moments.m2))
    values = np.array(term_values, dtype=np.float64).reshape(len(term_values), 3)
    return _PreparedBatch(
        learner_id=learner_id,
        episode_ids=[o.episode_id for o in kept],
        hashes=hashes,
        clip_ids=np.array([clip_ids[i] for i in keep], dtype=np.int64),
        steps=np.array([o.steps for o in kept], dtype=np.int64),
        returns=np.array([o.episode_return for o in kept], dtype=np.float64),
        success=np.array([o.success for o in kept], dtype=np.float64),
        in_batch_duplicates=in_batch_duplicates,
        term_item=np.array(term_item, dtype=np.int64),
        term_names=term_names,
        term_count=values[:, 0].copy(),
        term_mean=values[:, 1].copy(),
        term_m2=values[:, 2].copy(),
    )


# --------------------------------------------------------------------------------------
# Run state assembly (pure)
# --------------------------------------------------------------------------------------


def _patched_snapshot(
    terms: tuple[str, ...], snapshot: Moments, stats: ClipStats, clip_ids: np.ndarray
) -> tuple[tuple[str, ...], Moments]:
    """The (K, T) normaliser snapshot with the current moments of ``clip_ids`` written over it.

    New terms add columns (empty for clips without them); terms stay sorted.
    """
    new_terms = tuple(sorted(set(terms) | set(stats.terms)))
    column = {term: j for j, term in enumerate(new_terms)}
    k = snapshot.count.shape[0]
    old_columns = [column[term] for term in terms]
    count, mean, m2 = (np.zeros((k, len(new_terms))) for _ in range(3))
    count[:, old_columns] = snapshot.count
    mean[:, old_columns] = snapshot.mean
    m2[:, old_columns] = snapshot.m2
    rows = np.asarray(clip_ids, dtype=np.int64)[:, None]
    cols = np.fromiter((column[term] for term in stats.terms), np.int64, len(stats.terms))
    count[rows, cols] = stats.moments.count[rows, np.arange(len(stats.terms))]
    mean[rows, cols] = stats.moments.mean[rows, np.arange(len(stats.terms))]
    m2[rows, cols] = stats.moments.m2[rows, np.arange(len(stats.terms))]
    return new_terms, Moments(count=count, mean=mean, m2=m2)


def _build_run_state(
    config: RunConfig,
    row: RunRow,
    policy: RunPolicy,
    counters: ClipStats,
    learners: Sequence[LearnerRow],
    learner_counts: LearnerCounts,
    *,
    now: float,
    stale_seconds: float,
) -> RunState:
    measure = config.strategy.usage_measure
    by_measure = {
        "episodes": (counters.episodes, policy.window_start_episodes),
        "steps": (counters.steps, policy.window_start_steps),
    }
    total_counts, window_start = by_measure[measure]
    usage_window = _shares((total_counts - window_start).astype(np.float64))
    usage_total = _shares(total_counts.astype(np.float64))
    usage = usage_window if policy.usage_ema is None else policy.usage_ema
    k = len(config.clips)
    per_clip: list[dict[str, TermStats]] = [{} for _ in range(k)]
    moments = counters.moments
    if counters.terms:
        # a (clip, term) entry exists once the clip had the term (count > 0)
        clip_idx, term_idx = np.nonzero(moments.count > 0.0)
        std = moments.std
        for i, j in zip(clip_idx.tolist(), term_idx.tolist(), strict=True):
            per_clip[i][counters.terms[j]] = TermStats(
                count=float(moments.count[i, j]),
                mean=float(moments.mean[i, j]),
                std=float(std[i, j]),
            )
    clips = []
    for clip in config.clips:
        i = clip.id
        n = int(counters.episodes[i])
        clips.append(
            ClipState(
                id=i,
                name=clip.name,
                group=clip.group,
                metadata=clip.metadata,
                target_usage=float(policy.target_usage[i]),
                usage=float(usage[i]),
                usage_window=float(usage_window[i]),
                usage_total=float(usage_total[i]),
                clip_prob=float(policy.clip_probs[i]),
                reward_weight=float(policy.reward_weights[i]),
                success=float(counters.ema_success[i]) if n else None,
                success_mean=float(counters.success_sum[i]) / n if n else None,
                episodes=n,
                steps=int(counters.steps[i]),
                return_mean=float(counters.return_sum[i]) / n if n else None,
                ema_return=float(counters.ema_return[i]) if n else None,
                thompson_successes=float(counters.ts_successes[i]),
                thompson_failures=float(counters.ts_failures[i]),
                normalizers=per_clip[i],
            )
        )
    learner_stats = []
    for learner in learners:
        pair = learner_counts.get(learner.learner_id)
        counts = np.zeros(k) if pair is None else pair[0 if measure == "episodes" else 1]
        counts = counts.astype(np.float64)
        learner_stats.append(
            LearnerStats(
                learner_id=learner.learner_id,
                first_seen=learner.first_seen,
                last_seen=learner.last_seen,
                episodes=learner.episodes,
                steps=learner.steps,
                usage=tuple(_shares(counts).tolist()),
                stale=now - learner.last_seen > stale_seconds,
            )
        )
    return RunState(
        config=config,
        state_version=row.state_version,
        paused=row.paused,
        clip_probs_frozen=row.clip_probs_frozen,
        reward_weights_frozen=row.reward_weights_frozen,
        totals=Totals(row.total_episodes, row.total_steps, row.updates),
        clips=tuple(clips),
        learners=tuple(learner_stats),
    )
