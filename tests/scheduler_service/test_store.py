"""The store below the service: engine settings and the schema version guard."""

from __future__ import annotations

from pathlib import Path

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
