"""Fixtures of the scheduler service tests: one database per test, SQLite and PostgreSQL.

``database_url`` is parametrised over both backends: a SQLite file in ``tmp_path``, and a
fresh schema in the PostgreSQL named by ``CLIPSCHED_TEST_POSTGRES_URL`` (skipped when it
is unset), dropped after the test. Every test that takes it runs against both.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.scheduler_service.helpers import running_app

POSTGRES_ENV = "CLIPSCHED_TEST_POSTGRES_URL"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'clipsched.db'}"


def _postgres_schema_url() -> Iterator[str]:
    """A URL whose connections use a fresh schema (dropped afterwards)."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    schema = f"clipsched_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[str]:
    """A fresh database: SQLite file, or a PostgreSQL schema when configured."""
    if request.param == "sqlite":
        yield sqlite_url
    else:
        yield from _postgres_schema_url()


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real app on a fresh database, with an in-process client."""
    async with running_app(database_url) as app_client:
        yield app_client
