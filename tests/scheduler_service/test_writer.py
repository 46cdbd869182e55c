"""The writer thread: one transaction at a time, queued outcome batches committed together."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from scheduler_service import writer as writer_module
from scheduler_service.errors import Conflict, Unavailable
from scheduler_service.store.engine import create_store_engine
from scheduler_service.writer import Writer


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_store_engine(str(tmp_path / "writer.db"))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
    yield engine
    engine.dispose()


def insert(value: int) -> object:
    def work(conn: Connection) -> int:
        conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
        if value < 0:
            raise Conflict(f"{value} is refused")
        return value

    return work


def stored(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(text("SELECT v FROM t")).scalars())


def test_queued_batches_share_a_commit_and_a_refused_one_undoes_only_itself(
    engine: Engine,
) -> None:
    writer = Writer(engine)
    gate = threading.Event()

    def hold(conn: Connection) -> None:
        gate.wait(10)

    try:
        first = writer.submit(hold)  # keeps the writer busy while the others queue up
        futures = [writer.submit(insert(v), groupable=True) for v in (1, -2, 3)]
        gate.set()
        first.result(10)
        assert [f.result(10) if not f.exception(10) else None for f in futures] == [1, None, 3]
        assert isinstance(futures[1].exception(), Conflict)
        assert stored(engine) == [1, 3]
    finally:
        writer.close()


def test_a_lone_job_that_fails_rolls_back_its_transaction(engine: Engine) -> None:
    writer = Writer(engine)
    try:
        future = writer.submit(insert(-1), groupable=True)
        with pytest.raises(Conflict):
            future.result(10)
        assert stored(engine) == []
    finally:
        writer.close()


def test_an_unexpected_error_fails_every_job_of_its_group(engine: Engine) -> None:
    writer = Writer(engine)
    gate = threading.Event()

    def broken(conn: Connection) -> None:
        conn.execute(text("INSERT INTO missing_table VALUES (1)"))

    try:
        writer.submit(lambda conn: gate.wait(10))
        futures = [writer.submit(insert(5), groupable=True), writer.submit(broken, groupable=True)]
        gate.set()
        for future in futures:
            assert future.exception(10) is not None
        assert stored(engine) == []
    finally:
        writer.close()


def test_closing_finishes_the_queued_jobs(engine: Engine) -> None:
    writer = Writer(engine)
    futures = [writer.submit(insert(v), groupable=True) for v in range(20)]
    writer.close()
    assert [f.result(0) for f in futures] == list(range(20))
    assert stored(engine) == list(range(20))
    with pytest.raises(RuntimeError):
        writer.submit(insert(99))


def locked() -> OperationalError:
    return OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))


def test_a_locked_database_is_retried_until_the_lock_goes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "RETRY_BASE_SECONDS", 0.001)
    attempts: list[int] = []

    def flaky(conn: Connection) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise locked()
        return "done"

    writer = Writer(engine)
    try:
        assert writer.submit(flaky).result(10) == "done"
        assert len(attempts) == 3
    finally:
        writer.close()


def test_a_lock_that_never_goes_becomes_unavailable(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "RETRY_BASE_SECONDS", 0.001)

    def always_locked(conn: Connection) -> None:
        raise locked()

    writer = Writer(engine)
    try:
        with pytest.raises(Unavailable):
            writer.submit(always_locked).result(10)
    finally:
        writer.close()
