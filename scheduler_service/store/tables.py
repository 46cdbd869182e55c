"""The database schema: SQLAlchemy Core tables and the schema version.

One ``runs`` row per run (config as JSON, counters, the state version that guards
overrides and updates). What actors see is one ``policies`` row per run: the per-clip
vectors (targets, probabilities, weights, smoothed usage, where the usage window
starts, the normaliser snapshot) as little-endian float64/int64 arrays, written whole by
a controller update or an override, since each is one distribution and changes as one
(and a 10,000-clip vector then reads and writes in microseconds). ``clips`` names the
clips. The per-clip counters, bandit statistics and reward-term moments are one packed
``clip_state`` row per run (the *base*), plus one ``clip_deltas`` row per accepted
outcome batch since the base was last folded (``algorithms.clip_stats``: deltas
compose, so a batch writes one row whatever the number of clips it touches); the
current statistics are the base with the deltas applied in ``id`` order, and a
controller update (or ``MAX_PENDING_DELTAS`` batches) folds them into the base.
``learner_clip_counts`` is the same base for each learner's per-clip counts (a delta
names its learner). ``outcomes`` keeps one row per accepted episode for idempotency.
``SCHEMA_VERSION`` is stored in ``schema_meta``; bump it (and add a migration in
``migrations``) with every change here.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_VERSION = 3
"""Version of the schema below; stored in ``schema_meta`` under ``schema_version``."""

BigId = BigInteger().with_variant(Integer, "sqlite")
"""A 64-bit id: BIGINT on PostgreSQL; INTEGER on SQLite, whose INTEGER PRIMARY KEY is
already 64-bit and the rowid (a BIGINT column there would not auto-increment)."""

NAME_LENGTH = 200
"""Longest run, clip, learner, episode or term name."""

metadata = MetaData()

schema_meta = Table(
    "schema_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(200), nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(NAME_LENGTH), nullable=False, unique=True),
    Column("config", Text, nullable=False),  # JSON: strategy, aggregation, preset
    Column("created_at", Double, nullable=False),  # epoch seconds
    Column("state_version", BigInteger, nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("clip_probs_frozen", Boolean, nullable=False),
    Column("reward_weights_frozen", Boolean, nullable=False),
    Column("total_episodes", BigInteger, nullable=False),
    Column("total_steps", BigInteger, nullable=False),
    Column("interval_index", BigInteger, nullable=False),  # total_steps // every, last handled
    Column("updates", BigInteger, nullable=False),
    # clip_deltas rows of this run not yet folded into its clip_state (schema v2)
    Column("pending_deltas", BigInteger, nullable=False, server_default="0"),
)

clips = Table(
    "clips",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("clip_id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(NAME_LENGTH), nullable=False),
    Column("group_name", String(NAME_LENGTH), nullable=True),
    Column("metadata", Text, nullable=False),  # JSON object
    UniqueConstraint("run_id", "name", name="uq_clips_run_name"),
)

policies = Table(
    "policies",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    # arrays over clips, in clip id order ('<f8', or '<i8' for counts)
    Column("target_usage", LargeBinary, nullable=False),
    Column("clip_probs", LargeBinary, nullable=False),
    Column("base_weights", LargeBinary, nullable=False),  # adaptive w before the boost
    Column("reward_weights", LargeBinary, nullable=False),  # what actors use
    Column("usage_ema", LargeBinary, nullable=True),  # smoothed usage; NULL before 1st update
    Column("window_start_episodes", LargeBinary, nullable=False),  # cumulative counts at the
    Column("window_start_steps", LargeBinary, nullable=False),  # last update: window start
    # normaliser snapshot at the last update: term names (JSON list), then (K, T) arrays
    Column("normalizer_terms", Text, nullable=False),
    Column("normalizer_count", LargeBinary, nullable=False),
    Column("normalizer_mean", LargeBinary, nullable=False),
    Column("normalizer_m2", LargeBinary, nullable=False),
)

clip_state = Table(
    "clip_state",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("data", LargeBinary, nullable=False),  # packing.pack_stats: the folded base
)

clip_deltas = Table(
    "clip_deltas",
    metadata,
    # the fold order: assigned under the run lock, so it is the order batches committed
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("learner_id", String(NAME_LENGTH), nullable=False),
    Column("data", LargeBinary, nullable=False),  # packing.pack_delta: one outcome batch
    Index("ix_clip_deltas_run", "run_id", "id"),
)

learners = Table(
    "learners",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("learner_id", String(NAME_LENGTH), primary_key=True),
    Column("episodes", BigInteger, nullable=False),
    Column("steps", BigInteger, nullable=False),
    Column("first_seen", Double, nullable=False),
    Column("last_seen", Double, nullable=False),
)

learner_clip_counts = Table(
    "learner_clip_counts",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("learner_id", String(NAME_LENGTH), primary_key=True),
    Column("data", LargeBinary, nullable=False),  # packing.pack_counts: folded base
    ForeignKeyConstraint(
        ["run_id", "learner_id"], ["learners.run_id", "learners.learner_id"], ondelete="CASCADE"
    ),
)

outcomes = Table(
    "outcomes",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("episode_id", String(NAME_LENGTH), primary_key=True),
    Column("clip_id", Integer, nullable=False),
    Column("learner_id", String(NAME_LENGTH), nullable=False),
    Column("steps", BigInteger, nullable=False),
    Column("episode_return", Double, nullable=False),
    Column("success", Double, nullable=False),
    Column("payload_hash", String(32), nullable=False),
    Column("received_at", Double, nullable=False),
)

history = Table(
    "history",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("update_index", BigInteger, primary_key=True, autoincrement=False),
    Column("total_steps", BigInteger, nullable=False),
    Column("time", Double, nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("data", Text, nullable=False),  # JSON: per-clip arrays
)

audit = Table(
    "audit",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),  # the audit cursor (since_id)
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("time", Double, nullable=False),
    Column("actor", String(NAME_LENGTH), nullable=False),
    Column("action", String(64), nullable=False),
    Column("old", Text, nullable=False),  # JSON
    Column("new", Text, nullable=False),  # JSON
    Column("state_version", BigInteger, nullable=False),
    Index("ix_audit_run", "run_id", "id"),
)
