"""The store below the service: engine settings and the schema version guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text, update

from scheduler_service.errors import SchemaVersionError
from scheduler_service.store import tables
from scheduler_service.store.engine import WRITE_OPTIONS, create_store_engine, database_url
from scheduler_service.store.repository import ensure_schema


def test_sqlite_connections_use_wal_full_sync_and_foreign_keys(tmp_path: Path) -> None:
    engine = create_store_engine(str(tmp_path / "db.sqlite"))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() > 0
    finally:
        engine.dispose()


def test_a_plain_path_is_a_sqlite_file_url(tmp_path: Path) -> None:
    url = database_url(str(tmp_path / "x.db"))
    assert url.get_backend_name() == "sqlite" and url.database == str(tmp_path / "x.db")


def test_an_in_memory_database_is_refused() -> None:
    with pytest.raises(ValueError, match="file"):
        create_store_engine("sqlite://")


def test_write_transactions_take_the_sqlite_write_lock_at_begin(tmp_path: Path) -> None:
    engine = create_store_engine(str(tmp_path / "db.sqlite"))
    other = create_store_engine(str(tmp_path / "db.sqlite"))
    try:
        ensure_schema(engine)
        with (
            engine.connect().execution_options(**WRITE_OPTIONS) as conn,
            conn.begin(),
            other.raw_connection() as raw,
        ):
            # no statement has written yet, but another writer is already locked out
            raw.execute("PRAGMA busy_timeout=0")
            with pytest.raises(Exception, match="locked"):
                raw.execute("BEGIN IMMEDIATE")
    finally:
        engine.dispose()
        other.dispose()


def test_a_database_from_a_newer_scheduler_is_refused(database_url: str) -> None:
    engine = create_store_engine(database_url)
    try:
        ensure_schema(engine)
        with engine.begin() as conn:
            conn.execute(
                update(tables.schema_meta)
                .where(tables.schema_meta.c.key == "schema_version")
                .values(value=str(tables.SCHEMA_VERSION + 1))
            )
        with pytest.raises(SchemaVersionError, match="newer"):
            ensure_schema(engine)
    finally:
        engine.dispose()


def test_the_schema_is_created_once_and_reopened(database_url: str) -> None:
    engine = create_store_engine(database_url)
    try:
        ensure_schema(engine)
        ensure_schema(engine)
        with engine.connect() as conn:
            version = conn.execute(
                text("SELECT value FROM schema_meta WHERE key = 'schema_version'")
            ).scalar_one()
        assert int(version) == tables.SCHEMA_VERSION
    finally:
        engine.dispose()


def test_packed_statistics_and_deltas_round_trip_exactly() -> None:
    from scheduler_service.algorithms.clip_stats import ClipStats, apply_delta, batch_delta
    from scheduler_service.algorithms.normalizers import Moments
    from scheduler_service.store.packing import pack_delta, pack_stats, unpack_delta, unpack_stats

    delta = batch_delta(
        [3, 1, 3],
        [10, 20, 30],
        [1.5, -2.0, 0.1],
        [1.0, 0.0, 1.0],
        ema_alpha=0.1,
        thompson_gamma=0.99,
        term_clip_ids=[3, 1],
        term_names=["root", "pose"],
        term_moments=Moments(np.array([10.0, 20.0]), np.array([0.5, 0.25]), np.array([1.0, 2.0])),
    )
    stats = apply_delta(ClipStats.zeros(5), delta)
    again = unpack_stats(pack_stats(stats))
    assert again.terms == stats.terms == ("pose", "root")
    for name in ("episodes", "steps", "ema_success", "ema_return", "ts_successes"):
        assert np.array_equal(getattr(again, name), getattr(stats, name))
    assert np.array_equal(again.moments.m2, stats.moments.m2)
    same = unpack_delta(pack_delta(delta))
    assert np.array_equal(same.clip_ids, delta.clip_ids)
    assert np.array_equal(same.ema_return.first, delta.ema_return.first)
    assert np.array_equal(apply_delta(stats, same).ema_return, apply_delta(stats, delta).ema_return)
