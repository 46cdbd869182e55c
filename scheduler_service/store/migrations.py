"""Schema migrations: one step per version, run by ``repository.ensure_schema``.

``ensure_schema`` first creates the tables of the current schema that are missing, then
runs ``MIGRATIONS[n]`` for every stored version n below ``tables.SCHEMA_VERSION``, in
the same transaction (under the schema advisory lock on PostgreSQL).

v1 -> v2: the per-clip rows (``clip_stats``: one per clip, ``clip_term_moments``: one
per clip and reward term, ``learner_clips``: one per learner and clip) become one packed
``clip_state`` row per run and one ``learner_clip_counts`` row per learner (the folded
base of ``algorithms.clip_stats``), with no pending ``clip_deltas``; ``runs`` gains
``pending_deltas``. Every number is carried over as is. The v1 definitions of the
dropped tables are kept below (``V1_TABLES``) to read them, and for the migration test.

v2 -> v3: the audit id becomes 64-bit on PostgreSQL (``migrate_v2_to_v3``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    String,
    Table,
    func,
    select,
    text,
)

from scheduler_service.algorithms.clip_stats import ClipStats
from scheduler_service.algorithms.normalizers import Moments
from scheduler_service.store import tables as t
from scheduler_service.store.packing import pack_counts, pack_stats

V1_METADATA = MetaData()
"""The v1 tables that v2 replaced (each references v1 ``clips`` or ``learners``)."""

V1_CLIP_STATS = Table(
    "clip_stats",
    V1_METADATA,
    Column("run_id", Integer, primary_key=True),
    Column("clip_id", Integer, primary_key=True, autoincrement=False),
    Column("episodes", BigInteger, nullable=False),
    Column("steps", BigInteger, nullable=False),
    Column("return_sum", Double, nullable=False),
    Column("success_sum", Double, nullable=False),
    Column("ema_success", Double, nullable=False),
    Column("ema_return", Double, nullable=False),
    Column("ts_successes", Double, nullable=False),
    Column("ts_failures", Double, nullable=False),
    ForeignKeyConstraint(
        ["run_id", "clip_id"], ["clips.run_id", "clips.clip_id"], ondelete="CASCADE"
    ),
)

V1_CLIP_TERM_MOMENTS = Table(
    "clip_term_moments",
    V1_METADATA,
    Column("run_id", Integer, primary_key=True),
    Column("clip_id", Integer, primary_key=True, autoincrement=False),
    Column("term", String(t.NAME_LENGTH), primary_key=True),
    Column("count", Double, nullable=False),
    Column("mean", Double, nullable=False),
    Column("m2", Double, nullable=False),
    ForeignKeyConstraint(
        ["run_id", "clip_id"], ["clips.run_id", "clips.clip_id"], ondelete="CASCADE"
    ),
)

V1_LEARNER_CLIPS = Table(
    "learner_clips",
    V1_METADATA,
    Column("run_id", Integer, primary_key=True),
    Column("learner_id", String(t.NAME_LENGTH), primary_key=True),
    Column("clip_id", Integer, primary_key=True, autoincrement=False),
    Column("episodes", BigInteger, nullable=False),
    Column("steps", BigInteger, nullable=False),
    ForeignKeyConstraint(
        ["run_id", "learner_id"], ["learners.run_id", "learners.learner_id"], ondelete="CASCADE"
    ),
)

V1_TABLES = (V1_CLIP_STATS, V1_CLIP_TERM_MOMENTS, V1_LEARNER_CLIPS)


def v1_clip_stats(conn: Connection, run_id: int, num_clips: int) -> ClipStats:
    """A run's v1 per-clip rows as ``ClipStats`` (clips without rows stay zero)."""
    stats = ClipStats.zeros(num_clips)
    s = V1_CLIP_STATS.c
    for row in conn.execute(select(V1_CLIP_STATS).where(s.run_id == run_id)):
        i = int(row.clip_id)
        stats.episodes[i] = int(row.episodes)
        stats.steps[i] = int(row.steps)
        stats.return_sum[i] = float(row.return_sum)
        stats.success_sum[i] = float(row.success_sum)
        stats.ema_success[i] = float(row.ema_success)
        stats.ema_return[i] = float(row.ema_return)
        stats.ts_successes[i] = float(row.ts_successes)
        stats.ts_failures[i] = float(row.ts_failures)
    m = V1_CLIP_TERM_MOMENTS.c
    rows = conn.execute(
        select(m.clip_id, m.term, m["count"], m.mean, m.m2).where(m.run_id == run_id)
    ).all()
    terms = tuple(sorted({row.term for row in rows}))
    column = {term: j for j, term in enumerate(terms)}
    moments = Moments.zeros((num_clips, len(terms)))
    for clip_id, term, count, mean, m2 in rows:
        i, j = int(clip_id), column[term]
        moments.count[i, j], moments.mean[i, j], moments.m2[i, j] = count, mean, m2
    return dataclasses.replace(stats, terms=terms, moments=moments)


def v1_learner_clip_counts(
    conn: Connection, run_id: int, num_clips: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A run's v1 ``learner_clips`` rows as per-learner (episodes, steps) arrays."""
    counts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    c = V1_LEARNER_CLIPS.c
    for learner_id, clip_id, episodes, steps in conn.execute(
        select(c.learner_id, c.clip_id, c.episodes, c.steps).where(c.run_id == run_id)
    ):
        pair = counts.setdefault(
            learner_id, (np.zeros(num_clips, np.int64), np.zeros(num_clips, np.int64))
        )
        pair[0][int(clip_id)] = int(episodes)
        pair[1][int(clip_id)] = int(steps)
    return counts


def migrate_v1_to_v2(conn: Connection) -> None:
    """Fold v1's per-clip rows into v2's packed rows; drop the v1 tables (see module doc)."""
    # create_all made the v2 tables; runs predates pending_deltas
    conn.execute(text("ALTER TABLE runs ADD COLUMN pending_deltas BIGINT NOT NULL DEFAULT 0"))
    clip_count = (
        select(t.clips.c.run_id, func.count().label("k")).group_by(t.clips.c.run_id).subquery()
    )
    runs = conn.execute(
        select(t.runs.c.id, clip_count.c.k).join(clip_count, clip_count.c.run_id == t.runs.c.id)
    ).all()
    for run_id, num_clips in runs:
        k = int(num_clips)
        conn.execute(
            t.clip_state.insert().values(
                run_id=run_id, data=pack_stats(v1_clip_stats(conn, run_id, k))
            )
        )
        for learner_id, (episodes, steps) in v1_learner_clip_counts(conn, run_id, k).items():
            conn.execute(
                t.learner_clip_counts.insert().values(
                    run_id=run_id, learner_id=learner_id, data=pack_counts(episodes, steps)
                )
            )
    for table in reversed(V1_TABLES):
        conn.execute(text(f"DROP TABLE {table.name}"))


def migrate_v2_to_v3(conn: Connection) -> None:
    """The audit id (the client's ``since_id`` cursor, up to 2^63 - 1) becomes 64-bit.

    PostgreSQL: the column and its sequence become BIGINT (a cursor above 2^31 - 1 was a
    500). SQLite: nothing to do, an INTEGER PRIMARY KEY is already 64-bit.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE audit ALTER COLUMN id TYPE BIGINT"))
        conn.execute(text("ALTER SEQUENCE IF EXISTS audit_id_seq AS BIGINT"))


MIGRATIONS: Mapping[int, Callable[[Connection], None]] = {
    1: migrate_v1_to_v2,
    2: migrate_v2_to_v3,
}
"""Schema version n -> the step migrating a database from n to n + 1."""
