"""Persistence operations of the scheduler, as SQLAlchemy Core statements built once.

Every method takes an open ``Connection`` (the service owns transactions: one use case,
one transaction) and returns plain values, numpy arrays or domain dataclasses, never
rows. Counters are single-statement upserts,
``INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n``, through the dialect's own
``insert`` (SQLite and PostgreSQL share the syntax), so an increment can never be lost.
Per-clip statistics are a packed base row plus one packed delta row per outcome batch
(``tables``, ``packing``); deltas are appended, and folded into the base, by the service
while it holds the run lock (``lock_run``), so their ``id`` order is the commit order.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    Integer,
    Table,
    bindparam,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement

from scheduler_service.algorithms.clip_stats import ClipDelta, ClipStats
from scheduler_service.algorithms.normalizers import Moments
from scheduler_service.domain import (
    AggregationParams,
    AuditRow,
    ClipInfo,
    CurriculumParams,
    HistoryRow,
    RunConfig,
    StrategyParams,
)
from scheduler_service.errors import SchemaVersionError
from scheduler_service.store import tables as t
from scheduler_service.store.engine import WRITE_OPTIONS, is_sqlite
from scheduler_service.store.migrations import MIGRATIONS
from scheduler_service.store.packing import (
    pack_counts,
    pack_delta,
    pack_stats,
    unpack_counts,
    unpack_delta,
    unpack_stats,
)

IN_CHUNK = 500
"""Most values bound into one ``IN (...)`` list (SQLite caps bound variables)."""

_INSERTS: Mapping[str, Callable[[Table], sqlite.Insert | postgresql.Insert]] = {
    "sqlite": sqlite.insert,
    "postgresql": postgresql.insert,
}
"""Dialect name -> its ``insert`` construct (the one with ``on_conflict_do_*``)."""

SCHEMA_LOCK_KEY = 0x636C6970  # "clip": the advisory lock that serialises schema creation


def ensure_schema(engine: Engine) -> None:
    """Create missing tables and check (or migrate) the stored schema version."""
    with engine.connect().execution_options(**WRITE_OPTIONS) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            # Replicas starting together would race in CREATE TABLE; a transaction-scoped
            # advisory lock makes the second wait and then find the tables made.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        t.metadata.create_all(conn)
        key = t.schema_meta.c.key
        stored = conn.execute(
            select(t.schema_meta.c.value).where(key == "schema_version")
        ).scalar_one_or_none()
        if stored is None:
            conn.execute(
                t.schema_meta.insert().values(key="schema_version", value=str(t.SCHEMA_VERSION))
            )
            return
        version = int(stored)
        if version > t.SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the database has schema version {version}, newer than this scheduler's "
                f"{t.SCHEMA_VERSION}: upgrade clip-scheduler (or point it at another database)"
            )
        for step in range(version, t.SCHEMA_VERSION):
            MIGRATIONS[step](conn)
        if version != t.SCHEMA_VERSION:
            conn.execute(
                update(t.schema_meta)
                .where(key == "schema_version")
                .values(value=str(t.SCHEMA_VERSION))
            )


# --------------------------------------------------------------------------------------
# Values handed out
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    """The mutable part of a run, as stored."""

    id: int
    name: str
    state_version: int
    paused: bool
    clip_probs_frozen: bool
    reward_weights_frozen: bool
    total_episodes: int
    total_steps: int
    interval_index: int
    updates: int
    pending_deltas: int
    """``clip_deltas`` rows not yet folded into the run's ``clip_state``."""


@dataclass(frozen=True)
class RunPolicy:
    """What actors see, as vectors over clips (clip id order); written whole."""

    target_usage: np.ndarray
    clip_probs: np.ndarray
    base_weights: np.ndarray
    """Adaptive reward weights before the early-curriculum boost."""
    reward_weights: np.ndarray
    usage_ema: np.ndarray | None
    """Smoothed usage; None before the first controller update."""
    window_start_episodes: np.ndarray
    """Cumulative episodes per clip at the last update: the usage window starts there."""
    window_start_steps: np.ndarray
    normalizer_terms: tuple[str, ...]
    normalizers: Moments
    """Per-clip, per-term moments (K, T) as of the last controller update."""

    @classmethod
    def initial(
        cls,
        target_usage: np.ndarray,
        clip_probs: np.ndarray,
        base_weights: np.ndarray,
        reward_weights: np.ndarray,
    ) -> RunPolicy:
        """The policy of a new run: no usage measured, empty windows and normalisers."""
        k = target_usage.shape[0]
        return cls(
            target_usage=target_usage,
            clip_probs=clip_probs,
            base_weights=base_weights,
            reward_weights=reward_weights,
            usage_ema=None,
            window_start_episodes=np.zeros(k, dtype=np.int64),
            window_start_steps=np.zeros(k, dtype=np.int64),
            normalizer_terms=(),
            normalizers=Moments.zeros((k, 0)),
        )


@dataclass(frozen=True)
class LearnerRow:
    """A learner's counters (its per-clip counts: ``Repository.learner_clip_counts``)."""

    learner_id: str
    episodes: int
    steps: int
    first_seen: float
    last_seen: float


_POLICY_COLUMNS = (
    "target_usage",
    "clip_probs",
    "base_weights",
    "reward_weights",
    "usage_ema",
    "window_start_episodes",
    "window_start_steps",
    "normalizer_terms",
    "normalizer_count",
    "normalizer_mean",
    "normalizer_m2",
)
_RUN_COLUMNS = (
    t.runs.c.id,
    t.runs.c.name,
    t.runs.c.state_version,
    t.runs.c.paused,
    t.runs.c.clip_probs_frozen,
    t.runs.c.reward_weights_frozen,
    t.runs.c.total_episodes,
    t.runs.c.total_steps,
    t.runs.c.interval_index,
    t.runs.c.updates,
    t.runs.c.pending_deltas,
)
"""The run columns, in ``RunRow`` field order."""


# --------------------------------------------------------------------------------------
# Config (de)serialisation
# --------------------------------------------------------------------------------------


def dump_json(value: Any) -> str:
    """Compact JSON text (orjson; numpy arrays allowed)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def config_json(
    strategy: StrategyParams, aggregation: AggregationParams, preset: str | None
) -> str:
    """The ``runs.config`` column."""
    return dump_json(
        {
            "strategy": dataclasses.asdict(strategy),
            "aggregation": dataclasses.asdict(aggregation),
            "preset": preset,
        }
    )


def _parse_config(text: str) -> tuple[StrategyParams, AggregationParams, str | None]:
    raw = orjson.loads(text)
    strategy = dict(raw["strategy"])
    strategy["thompson_prior"] = tuple(strategy["thompson_prior"])
    aggregation = dict(raw["aggregation"])
    curriculum = aggregation.pop("curriculum")
    return (
        StrategyParams(**strategy),
        AggregationParams(
            **aggregation,
            curriculum=None
            if curriculum is None
            else CurriculumParams(**{**curriculum, "clips": tuple(curriculum["clips"])}),
        ),
        raw["preset"],
    )


def _to_bytes(values: np.ndarray, dtype: str = "<f8") -> bytes:
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


def _from_bytes(data: bytes, dtype: str = "<f8") -> np.ndarray:
    return np.frombuffer(data, dtype=dtype).astype(dtype[1:], copy=True)


def _policy_values(policy: RunPolicy) -> dict[str, Any]:
    """The ``policies`` columns of a policy."""
    moments = policy.normalizers
    return {
        "target_usage": _to_bytes(policy.target_usage),
        "clip_probs": _to_bytes(policy.clip_probs),
        "base_weights": _to_bytes(policy.base_weights),
        "reward_weights": _to_bytes(policy.reward_weights),
        "usage_ema": None if policy.usage_ema is None else _to_bytes(policy.usage_ema),
        "window_start_episodes": _to_bytes(policy.window_start_episodes, "<i8"),
        "window_start_steps": _to_bytes(policy.window_start_steps, "<i8"),
        "normalizer_terms": dump_json(policy.normalizer_terms),
        "normalizer_count": _to_bytes(moments.count),
        "normalizer_mean": _to_bytes(moments.mean),
        "normalizer_m2": _to_bytes(moments.m2),
    }


class _BulkStatement:
    """An INSERT/UPSERT compiled once to driver SQL and run with ``cursor.executemany``.

    SQLAlchemy builds parameters row by row (~7 µs a row); a batch touching 10,000 clips
    writes over a thousand rows, so the hot ingestion statements go to the driver
    directly, with named parameters, after being compiled once for the dialect.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        if isinstance(dialect, DefaultDialect) and dialect.positional:
            dialect = type(dialect)(paramstyle="named")  # pysqlite's qmark -> :name
        self.sql = str(statement.compile(dialect=dialect))

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute for every row (dicts keyed by column name)."""
        if rows:
            conn.exec_driver_sql(self.sql, list(rows))


class VersionReader:
    """Reads (run id, state_version) by run name: the one read on the actors' hot path.

    It keeps one DBAPI connection of its own, in autocommit mode (each SELECT sees the
    latest commit), and runs one statement compiled once: ~10 µs on SQLite against
    ~100 µs for a pooled SQLAlchemy round trip. Not thread-safe: use it from the event
    loop only. A connection that failed is dropped and the read retried once on a
    fresh one; a second failure propagates (as the driver's error).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        runs = t.runs
        statement = select(runs.c.id, runs.c.state_version).where(runs.c.name == bindparam("name"))
        self._sql = _BulkStatement(statement, engine.dialect).sql
        self._connection: Any = None

    def read(self, name: str) -> tuple[int, int] | None:
        """(run id, state_version), or None if there is no such run."""
        error_type = self._engine.dialect.loaded_dbapi.Error
        for attempt in (1, 2):
            connection = self._connection or self._connect()
            try:
                cursor = connection.cursor()
                try:
                    cursor.execute(self._sql, {"name": name})
                    row = cursor.fetchone()
                finally:
                    cursor.close()
            except error_type:
                self.close()
                if attempt == 2:
                    raise
                continue
            return None if row is None else (int(row[0]), int(row[1]))
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> Any:
        proxied = self._engine.raw_connection()
        proxied.detach()  # ours until closed; the pool never sees it in autocommit mode
        connection = proxied.dbapi_connection
        assert connection is not None
        if not is_sqlite(self._engine):  # SQLite's is autocommit already (see engine.py)
            connection.autocommit = True
        self._connection = connection
        return connection

    def close(self) -> None:
        """Close the connection (a later read opens a new one)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


def _chunks(values: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --------------------------------------------------------------------------------------
# The repository
# --------------------------------------------------------------------------------------


class Repository:
    """All reads and writes of the scheduler's tables, for one SQL dialect."""

    def __init__(self, dialect: Dialect) -> None:
        try:
            insert = _INSERTS[dialect.name]
        except KeyError:
            raise ValueError(
                f"unsupported database {dialect.name!r}: use SQLite or PostgreSQL"
            ) from None
        self.dialect_name = dialect.name
        runs, outcomes = t.runs, t.outcomes
        run_id = bindparam("run_id", type_=Integer)
        # UPDATE statements may not reuse a column name as a bind name
        target_run = bindparam("b_run_id", type_=Integer)

        self._select_run = select(*_RUN_COLUMNS).where(runs.c.name == bindparam("name"))
        self._lock_run = self._select_run.with_for_update()
        self._select_version = select(runs.c.id, runs.c.state_version).where(
            runs.c.name == bindparam("name")
        )
        self._select_config = select(
            runs.c.id, runs.c.name, runs.c.config, runs.c.created_at
        ).where(runs.c.name == bindparam("name"))
        self._select_clips = (
            select(t.clips.c.clip_id, t.clips.c.name, t.clips.c.group_name, t.clips.c.metadata)
            .where(t.clips.c.run_id == run_id)
            .order_by(t.clips.c.clip_id)
        )
        self._select_policy = select(*(t.policies.c[name] for name in _POLICY_COLUMNS)).where(
            t.policies.c.run_id == run_id
        )
        self._update_policy = (
            update(t.policies)
            .where(t.policies.c.run_id == target_run)
            .values({name: bindparam(name) for name in _POLICY_COLUMNS})
        )

        self._select_clip_state = select(t.clip_state.c.data).where(t.clip_state.c.run_id == run_id)
        self._update_clip_state = (
            update(t.clip_state)
            .where(t.clip_state.c.run_id == target_run)
            .values(data=bindparam("data"))
        )
        deltas = t.clip_deltas
        self._insert_delta = deltas.insert()
        self._select_deltas = (
            select(deltas.c.id, deltas.c.learner_id, deltas.c.data)
            .where(deltas.c.run_id == run_id)
            .order_by(deltas.c.id)
        )
        counts = t.learner_clip_counts
        self._select_learner_counts = select(counts.c.learner_id, counts.c.data).where(
            counts.c.run_id == run_id
        )
        counts_upsert = insert(counts)
        self._upsert_learner_counts = counts_upsert.on_conflict_do_update(
            index_elements=[counts.c.run_id, counts.c.learner_id],
            set_={"data": counts_upsert.excluded.data},
        )

        # a plain INSERT: the caller has read which ids are stored, under the run lock
        self._insert_outcomes = _BulkStatement(outcomes.insert(), dialect)
        # PostgreSQL looks each id up by the full primary key (a LATERAL join over the
        # id array): with "run_id = :run AND episode_id IN (...)" the planner scanned every
        # outcome of the run whenever its statistics predated the run (~50-100 ms a batch)
        self._select_hashes: Executable = (
            text(
                "SELECT o.episode_id, o.payload_hash FROM unnest(CAST(:ids AS varchar[])) AS i(id) "
                "CROSS JOIN LATERAL (SELECT episode_id, payload_hash FROM outcomes "
                "WHERE run_id = :run_id AND episode_id = i.id) AS o"
            )
            if dialect.name == "postgresql"
            else select(outcomes.c.episode_id, outcomes.c.payload_hash).where(
                outcomes.c.run_id == run_id,
                outcomes.c.episode_id.in_(bindparam("ids", expanding=True)),
            )
        )

        learners = t.learners
        learner_upsert = insert(learners)
        self._upsert_learner = learner_upsert.on_conflict_do_update(
            index_elements=[learners.c.run_id, learners.c.learner_id],
            set_={
                "episodes": learners.c.episodes + learner_upsert.excluded.episodes,
                "steps": learners.c.steps + learner_upsert.excluded.steps,
                "last_seen": learner_upsert.excluded.last_seen,
            },
        )
        self._select_learners = (
            select(
                learners.c.learner_id,
                learners.c.episodes,
                learners.c.steps,
                learners.c.first_seen,
                learners.c.last_seen,
            )
            .where(learners.c.run_id == run_id)
            .order_by(learners.c.learner_id)
        )
        self._add_totals = (
            update(runs)
            .where(runs.c.id == target_run)
            .values(
                total_episodes=runs.c.total_episodes + bindparam("d_episodes"),
                total_steps=runs.c.total_steps + bindparam("d_steps"),
                pending_deltas=runs.c.pending_deltas + 1,
            )
        )

    # ----- runs --------------------------------------------------------------------------

    def create_run(
        self,
        conn: Connection,
        *,
        name: str,
        config: str,
        created_at: float,
        clips: Sequence[ClipInfo],
        policy: RunPolicy,
    ) -> int:
        """Insert a run with its clips, its policy and zeroed counters; returns the run id."""
        run_id = conn.execute(
            t.runs.insert()
            .values(
                name=name,
                config=config,
                created_at=created_at,
                state_version=1,
                paused=False,
                clip_probs_frozen=False,
                reward_weights_frozen=False,
                total_episodes=0,
                total_steps=0,
                interval_index=0,
                updates=0,
                pending_deltas=0,
            )
            .returning(t.runs.c.id)
        ).scalar_one()
        conn.execute(
            t.clips.insert(),
            [
                {
                    "run_id": run_id,
                    "clip_id": clip.id,
                    "name": clip.name,
                    "group_name": clip.group,
                    "metadata": dump_json(clip.metadata),
                }
                for clip in clips
            ],
        )
        conn.execute(
            t.clip_state.insert().values(
                run_id=run_id, data=pack_stats(ClipStats.zeros(len(clips)))
            )
        )
        conn.execute(t.policies.insert().values(run_id=run_id, **_policy_values(policy)))
        return int(run_id)

    def run_exists(self, conn: Connection, name: str) -> bool:
        """Whether a run of that name exists."""
        return conn.execute(self._select_version, {"name": name}).first() is not None

    def run(self, conn: Connection, name: str, *, lock: bool = False) -> RunRow | None:
        """The run's mutable row; ``lock`` takes the run lock (FOR UPDATE on PostgreSQL)."""
        row = conn.execute(self._lock_run if lock else self._select_run, {"name": name}).first()
        return None if row is None else _run_row(row)

    def run_config(self, conn: Connection, name: str) -> RunConfig | None:
        """The run's immutable configuration and clips."""
        row = conn.execute(self._select_config, {"name": name}).first()
        if row is None:
            return None
        run_id, run_name, config, created_at = row
        strategy, aggregation, preset = _parse_config(config)
        clip_rows = conn.execute(self._select_clips, {"run_id": run_id}).all()
        return RunConfig(
            run_id=int(run_id),
            name=run_name,
            clips=tuple(
                ClipInfo(id=int(cid), name=cname, group=group, metadata=orjson.loads(meta))
                for cid, cname, group, meta in clip_rows
            ),
            strategy=strategy,
            aggregation=aggregation,
            preset=preset,
            created_at=float(created_at),
        )

    def list_runs(self, conn: Connection) -> list[tuple[RunRow, str, int, float]]:
        """Every run: (row, config JSON, clip count, created_at), by name."""
        runs = t.runs
        clip_count = (
            select(func.count())
            .where(t.clips.c.run_id == runs.c.id)
            .correlate(runs)
            .scalar_subquery()
        )
        query = select(*_RUN_COLUMNS, runs.c.config, clip_count, runs.c.created_at).order_by(
            runs.c.name
        )
        return [
            (_run_row(row), row[11], int(row[12]), float(row[13])) for row in conn.execute(query)
        ]

    def set_run_fields(self, conn: Connection, run_id: int, **values: Any) -> None:
        """Set columns of the run row (flags, version, update bookkeeping)."""
        conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(**values))

    def add_totals(self, conn: Connection, run_id: int, episodes: int, steps: int) -> None:
        """total_episodes += episodes; total_steps += steps; pending_deltas += 1."""
        conn.execute(
            self._add_totals, {"b_run_id": run_id, "d_episodes": episodes, "d_steps": steps}
        )

    # ----- the policy --------------------------------------------------------------------

    def policy(self, conn: Connection, run_id: int) -> RunPolicy:
        """The run's vectors: targets, probabilities, weights, usage, normaliser snapshot."""
        row = conn.execute(self._select_policy, {"run_id": run_id}).one()
        values = dict(zip(_POLICY_COLUMNS, row, strict=True))
        clip_probs = _from_bytes(values["clip_probs"])
        terms = tuple(orjson.loads(values["normalizer_terms"]))
        shape = (clip_probs.shape[0], len(terms))
        usage_ema = values["usage_ema"]
        return RunPolicy(
            target_usage=_from_bytes(values["target_usage"]),
            clip_probs=clip_probs,
            base_weights=_from_bytes(values["base_weights"]),
            reward_weights=_from_bytes(values["reward_weights"]),
            usage_ema=None if usage_ema is None else _from_bytes(usage_ema),
            window_start_episodes=_from_bytes(values["window_start_episodes"], "<i8"),
            window_start_steps=_from_bytes(values["window_start_steps"], "<i8"),
            normalizer_terms=terms,
            normalizers=Moments(
                count=_from_bytes(values["normalizer_count"]).reshape(shape),
                mean=_from_bytes(values["normalizer_mean"]).reshape(shape),
                m2=_from_bytes(values["normalizer_m2"]).reshape(shape),
            ),
        )

    def write_policy(self, conn: Connection, run_id: int, policy: RunPolicy) -> None:
        """Overwrite the run's vectors (one row)."""
        conn.execute(self._update_policy, {"b_run_id": run_id, **_policy_values(policy)})

    # ----- per-clip statistics: packed base + deltas ------------------------------------

    def clip_state(self, conn: Connection, run_id: int) -> ClipStats:
        """The run's folded base statistics (without the pending deltas)."""
        data = conn.execute(self._select_clip_state, {"run_id": run_id}).scalar_one()
        return unpack_stats(bytes(data))

    def write_clip_state(self, conn: Connection, run_id: int, stats: ClipStats) -> None:
        """Overwrite the run's base statistics (one row)."""
        conn.execute(self._update_clip_state, {"b_run_id": run_id, "data": pack_stats(stats)})

    def insert_clip_delta(
        self, conn: Connection, run_id: int, learner_id: str, delta: ClipDelta
    ) -> None:
        """Append one batch's delta (call under the run lock: its id fixes the fold order)."""
        conn.execute(
            self._insert_delta,
            {"run_id": run_id, "learner_id": learner_id, "data": pack_delta(delta)},
        )

    def clip_deltas(self, conn: Connection, run_id: int) -> list[tuple[int, str, ClipDelta]]:
        """The run's pending deltas as (id, learner id, delta), in fold (id) order."""
        return [
            (int(delta_id), learner_id, unpack_delta(bytes(data)))
            for delta_id, learner_id, data in conn.execute(self._select_deltas, {"run_id": run_id})
        ]

    def delete_clip_deltas(self, conn: Connection, run_id: int, through_id: int) -> None:
        """Drop the deltas folded into the base (ids <= ``through_id``)."""
        d = t.clip_deltas
        conn.execute(d.delete().where(d.c.run_id == run_id, d.c.id <= through_id))

    def learner_clip_counts(
        self, conn: Connection, run_id: int
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each learner's folded per-clip (episodes, steps) (without the pending deltas)."""
        return {
            learner_id: unpack_counts(bytes(data))
            for learner_id, data in conn.execute(self._select_learner_counts, {"run_id": run_id})
        }

    def write_learner_clip_counts(
        self,
        conn: Connection,
        run_id: int,
        learner_id: str,
        episodes: np.ndarray,
        steps: np.ndarray,
    ) -> None:
        """Overwrite (or create) a learner's folded per-clip counts."""
        conn.execute(
            self._upsert_learner_counts,
            {"run_id": run_id, "learner_id": learner_id, "data": pack_counts(episodes, steps)},
        )

    # ----- outcomes ----------------------------------------------------------------------

    def insert_outcomes(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert new outcome rows (one driver ``executemany``).

        Call under the run lock with ids that ``outcome_hashes`` did not find: a stored
        id is then an IntegrityError, never a silently skipped (and miscounted) row.
        """
        self._insert_outcomes.run(conn, rows)

    def outcome_hashes(
        self, conn: Connection, run_id: int, episode_ids: Sequence[str]
    ) -> dict[str, str]:
        """Stored payload hash per episode id (only the ids given; chunked IN lists)."""
        found: dict[str, str] = {}
        for chunk in _chunks(episode_ids):
            rows = conn.execute(self._select_hashes, {"run_id": run_id, "ids": list(chunk)})
            found.update((episode_id, payload_hash) for episode_id, payload_hash in rows)
        return found

    # ----- learners ----------------------------------------------------------------------

    def add_learner(
        self,
        conn: Connection,
        run_id: int,
        learner_id: str,
        *,
        episodes: int,
        steps: int,
        now: float,
    ) -> None:
        """Add to a learner's counters (creating it on first contact)."""
        conn.execute(
            self._upsert_learner,
            {
                "run_id": run_id,
                "learner_id": learner_id,
                "episodes": episodes,
                "steps": steps,
                "first_seen": now,
                "last_seen": now,
            },
        )

    def learners(self, conn: Connection, run_id: int) -> list[LearnerRow]:
        """Every learner of the run, by learner id."""
        return [
            LearnerRow(
                learner_id=learner_id,
                episodes=int(episodes),
                steps=int(steps),
                first_seen=float(first_seen),
                last_seen=float(last_seen),
            )
            for learner_id, episodes, steps, first_seen, last_seen in conn.execute(
                self._select_learners, {"run_id": run_id}
            )
        ]

    # ----- history and audit -------------------------------------------------------------

    def insert_history(self, conn: Connection, run_id: int, row: HistoryRow) -> None:
        """Store one controller update's per-clip picture."""
        conn.execute(
            t.history.insert().values(
                run_id=run_id,
                update_index=row.update,
                total_steps=row.total_steps,
                time=row.time,
                paused=row.paused,
                data=dump_json(
                    {
                        "target_usage": row.target_usage,
                        "clip_probs": row.clip_probs,
                        "usage": row.usage,
                        "usage_window": row.usage_window,
                        "reward_weights": row.reward_weights,
                        "success": row.success,
                        **({"rejected": row.rejected} if row.rejected else {}),
                    }
                ),
            )
        )

    def history(
        self, conn: Connection, run_id: int, since_update: int, limit: int
    ) -> list[HistoryRow]:
        """Updates with index > since_update, oldest first, at most ``limit``."""
        h = t.history
        rows = conn.execute(
            select(h.c.update_index, h.c.total_steps, h.c.time, h.c.paused, h.c.data)
            .where(h.c.run_id == run_id, h.c.update_index > since_update)
            .order_by(h.c.update_index)
            .limit(limit)
        )
        out = []
        for update_index, total_steps, time, paused, data in rows:
            arrays = orjson.loads(data)
            out.append(
                HistoryRow(
                    update=int(update_index),
                    total_steps=int(total_steps),
                    time=float(time),
                    paused=bool(paused),
                    target_usage=tuple(arrays["target_usage"]),
                    clip_probs=tuple(arrays["clip_probs"]),
                    usage=tuple(arrays["usage"]),
                    usage_window=tuple(arrays["usage_window"]),
                    reward_weights=tuple(arrays["reward_weights"]),
                    success=tuple(arrays["success"]),
                    rejected=arrays.get("rejected"),
                )
            )
        return out

    def insert_audit(
        self,
        conn: Connection,
        run_id: int,
        *,
        time: float,
        actor: str,
        action: str,
        old: Any,
        new: Any,
        state_version: int,
    ) -> None:
        """Record one operator action."""
        conn.execute(
            t.audit.insert().values(
                run_id=run_id,
                time=time,
                actor=actor,
                action=action,
                old=dump_json(old),
                new=dump_json(new),
                state_version=state_version,
            )
        )

    def audit(self, conn: Connection, run_id: int, since_id: int, limit: int) -> list[AuditRow]:
        """Audit rows with id > since_id, oldest first, at most ``limit``."""
        a = t.audit
        rows = conn.execute(
            select(a.c.id, a.c.time, a.c.actor, a.c.action, a.c.old, a.c.new, a.c.state_version)
            .where(a.c.run_id == run_id, a.c.id > since_id)
            .order_by(a.c.id)
            .limit(limit)
        )
        return [
            AuditRow(
                id=int(row_id),
                time=float(time),
                actor=actor,
                action=action,
                old=orjson.loads(old),
                new=orjson.loads(new),
                state_version=int(version),
            )
            for row_id, time, actor, action, old, new, version in rows
        ]


def _run_row(row: Sequence[Any]) -> RunRow:
    """A ``RunRow`` from the first 11 columns of a run query (in ``RunRow`` field order)."""
    return RunRow(
        id=int(row[0]),
        name=row[1],
        state_version=int(row[2]),
        paused=bool(row[3]),
        clip_probs_frozen=bool(row[4]),
        reward_weights_frozen=bool(row[5]),
        total_episodes=int(row[6]),
        total_steps=int(row[7]),
        interval_index=int(row[8]),
        updates=int(row[9]),
        pending_deltas=int(row[10]),
    )
