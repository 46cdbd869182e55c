"""Engine factory: the same store code over SQLite (default) or PostgreSQL.

SQLite gets WAL (readers never wait for the writer), ``synchronous=FULL`` (an
acknowledged outcome survives kill -9 and power loss), a busy timeout, foreign keys,
and SQLAlchemy's documented pysqlite recipe for explicit transactions: pysqlite's own
implicit BEGIN is switched off and the ``begin`` event emits ``BEGIN`` for readers and
``BEGIN IMMEDIATE`` for writers (``WRITE_OPTIONS``), so a write transaction holds the
write lock from its first statement and two read-then-write transactions can never
deadlock or lose an update. PostgreSQL gets a sized, pre-pinged pool; writers lock the
run row with ``SELECT ... FOR UPDATE`` (see ``repository``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url

SQLITE_BUSY_TIMEOUT_MS = 5_000
"""How long a SQLite connection waits for another process's lock before raising."""

WRITE_OPTIONS: dict[str, Any] = {"clipsched_write": True}
"""Execution options of a write transaction (``BEGIN IMMEDIATE`` on SQLite)."""


def database_url(value: str) -> URL:
    """A SQLAlchemy URL from a URL string or a plain SQLite file path."""
    if "://" not in value:
        return make_url(f"sqlite:///{Path(value).expanduser().resolve()}")
    return make_url(value)


def is_sqlite(engine: Engine) -> bool:
    """Whether the engine talks to SQLite."""
    return engine.dialect.name == "sqlite"


def read_options(engine: Engine) -> dict[str, Any]:
    """Execution options of a read transaction that sees one snapshot across statements.

    SQLite's deferred ``BEGIN`` already does; PostgreSQL needs REPEATABLE READ (READ
    COMMITTED takes a new snapshot per statement, so related counters could disagree).
    """
    return {} if is_sqlite(engine) else {"isolation_level": "REPEATABLE READ"}


def create_store_engine(value: str, *, pool_size: int = 8) -> Engine:
    """An engine for ``value`` (URL or SQLite path) configured for this service."""
    url = database_url(value)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, pool_size)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def _sqlite_engine(url: URL, pool_size: int) -> Engine:
    if url.database in (None, "", ":memory:"):
        raise ValueError("the scheduler needs a SQLite file, not an in-memory database")
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # Take BEGIN away from pysqlite; the "begin" listener below emits it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("clipsched_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
