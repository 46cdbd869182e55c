"""The one writer of a scheduler process: a thread that runs write transactions in turn.

Every write of the process goes through ``Writer.submit``, so SQLite never sees two
writers from this process and the event loop never waits on a write lock or an fsync.
Jobs that allow it (outcome batches) are group-committed: when several are queued, they
run in one transaction, each inside its own SAVEPOINT, so one ``fsync`` covers them all
and a job that fails with a ``ServiceError`` (a 409, say) rolls back only its own work.

A transaction that meets a lock held by another process or a serialization failure
(PostgreSQL) is retried with backoff; past the budget every job in it fails with
``Unavailable`` (HTTP 503 with Retry-After), never with the raw database error.

The queue is bounded (``MAX_QUEUE`` jobs): past it ``submit`` sheds the job at once with
``ServiceOverloaded`` (also a 503 with Retry-After), so an overloaded process answers
quickly instead of letting every caller time out behind a growing queue.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from scheduler_service.errors import ServiceError, ServiceOverloaded, Unavailable
from scheduler_service.store.engine import WRITE_OPTIONS

logger = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_ATTEMPTS = 8
"""Tries of one transaction that meets a lock or a serialization failure."""

RETRY_BASE_SECONDS = 0.01
"""First backoff of a retried transaction; doubles (with jitter) at each attempt."""

MAX_GROUP = 16
"""Most jobs committed together."""

MAX_QUEUE = 1024
"""Most jobs waiting for the writer; one more is shed with ``ServiceOverloaded``."""

_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
"""PostgreSQL: serialization failure, deadlock, lock not available."""

_TRANSIENT_SQLITE_MESSAGES = ("database is locked", "database is busy", "database table is locked")


def is_transient(exc: DBAPIError) -> bool:
    """Whether a failed transaction may succeed if simply run again."""
    if getattr(exc.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    message = str(exc.orig).lower()
    return any(m in message for m in _TRANSIENT_SQLITE_MESSAGES)


@dataclass
class _Job:
    work: Callable[[Connection], Any]
    groupable: bool
    future: Future[Any] = field(default_factory=Future)


class Writer:
    """A thread running write transactions one after another (see the module docstring)."""

    def __init__(
        self, engine: Engine, *, max_group: int = MAX_GROUP, max_queue: int = MAX_QUEUE
    ) -> None:
        self._engine = engine
        self._max_group = max_group
        self.max_queue = max_queue
        self._jobs: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="clipsched-writer", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[Connection], T], *, groupable: bool = False) -> Future[T]:
        """Queue ``work`` to run in a write transaction; its result (or error) comes back.

        Raises ``ServiceOverloaded`` when ``max_queue`` jobs are already waiting.
        """
        job = _Job(work, groupable)
        with self._ready:
            if self._closing:
                raise RuntimeError("the writer is closed")
            if len(self._jobs) >= self.max_queue:
                raise ServiceOverloaded(
                    f"{len(self._jobs)} writes are queued; retry shortly", retry_after=1.0
                )
            self._jobs.append(job)
            self._ready.notify()
        return job.future

    def close(self) -> None:
        """Finish the queued jobs, then stop the thread."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join()

    def _next_group(self) -> list[_Job] | None:
        with self._ready:
            while not self._jobs and not self._closing:
                self._ready.wait()
            if not self._jobs:
                return None
            group = [self._jobs.popleft()]
            while (
                group[0].groupable
                and self._jobs
                and self._jobs[0].groupable
                and len(group) < self._max_group
            ):
                group.append(self._jobs.popleft())
            return group

    def _loop(self) -> None:
        while (group := self._next_group()) is not None:
            try:
                results = self._run_with_retry(group)
            except BaseException as exc:  # the whole transaction failed: so did every job
                for job in group:
                    job.future.set_exception(exc)
                continue
            for job, (ok, value) in zip(group, results, strict=True):
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)

    def _run_with_retry(self, group: list[_Job]) -> list[tuple[bool, Any]]:
        delay = RETRY_BASE_SECONDS
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return self._run(group)
            except DBAPIError as exc:
                if not is_transient(exc):
                    raise
                if attempt == WRITE_ATTEMPTS:
                    logger.warning("write gave up after %d attempts: %s", attempt, exc.orig)
                    raise Unavailable("the database is busy; retry shortly") from exc
                logger.info("write attempt %d met %s; retrying", attempt, exc.orig)
                time.sleep(delay * (1.0 + random.random()))
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _run(self, group: list[_Job]) -> list[tuple[bool, Any]]:
        """One transaction: a lone job as is, a group with a SAVEPOINT per job."""
        with (
            self._engine.connect().execution_options(**WRITE_OPTIONS) as conn,
            conn.begin(),
        ):
            if len(group) == 1:  # any error rolls the transaction back and reaches the caller
                return [(True, group[0].work(conn))]
            results: list[tuple[bool, Any]] = []
            for job in group:
                savepoint = conn.begin_nested()
                try:
                    value = job.work(conn)
                except ServiceError as exc:  # this job's answer: undo only its own work
                    savepoint.rollback()
                    results.append((False, exc))
                else:
                    savepoint.commit()
                    results.append((True, value))
            return results
