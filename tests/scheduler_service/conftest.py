"""Fixtures of the scheduler service tests: one database per test, SQLite and PostgreSQL.

``database_url`` is parametrised over both backends: a SQLite file in ``tmp_path``, and a
fresh schema in the PostgreSQL named by ``CLIPSCHED_TEST_POSTGRES_URL`` (skipped when it
is unset), dropped after the test. Every test that takes it runs against both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.scheduler_service.helpers import running_app
from tests.service_processes import postgres_schema


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'clipsched.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[str]:
    """A fresh database: SQLite file, or a PostgreSQL schema when configured."""
    if request.param == "sqlite":
        yield sqlite_url
    else:
        with postgres_schema() as url:
            yield url


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real app on a fresh database, with an in-process client."""
    async with running_app(database_url) as app_client:
        yield app_client
