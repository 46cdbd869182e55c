"""Bearer tokens, the request body cap and the OpenAPI page."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from scheduler_service.api.app import create_app
from scheduler_service.config import Settings
from scheduler_service.errors import Unavailable
from tests.scheduler_service.helpers import outcome, run_spec, running_app

pytestmark = pytest.mark.anyio

WRITE = "write-secret-0123"
READ = "read-secret-4567"
ALICE = "alice-secret-89ab"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def secured(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(
        sqlite_url, write_token=WRITE, read_token=READ, operator_tokens={"alice": ALICE}
    ) as client:
        response = await client.post(
            "/runs", json=run_spec("r", clips=("a",)), headers=bearer(WRITE)
        )
        assert response.status_code == 201
        yield client


async def test_without_a_token_every_call_but_health_is_401(secured: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/runs"), ("GET", "/runs/r"), ("POST", "/runs/r/pause")):
        response = await secured.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await secured.get("/health")).status_code == 200


async def test_a_wrong_token_is_401(secured: httpx.AsyncClient) -> None:
    assert (await secured.get("/runs", headers=bearer("guess"))).status_code == 401


async def test_the_read_token_reads_but_cannot_write(secured: httpx.AsyncClient) -> None:
    assert (await secured.get("/runs/r", headers=bearer(READ))).status_code == 200
    response = await secured.get("/runs/r/next-clips", params={"n": 2}, headers=bearer(READ))
    assert response.status_code == 200
    response = await secured.post(
        "/runs/r/outcomes",
        json={"learner_id": "l", "outcomes": [outcome("a")]},
        headers=bearer(READ),
    )
    assert response.status_code == 403


async def test_the_write_token_also_reads(secured: httpx.AsyncClient) -> None:
    assert (await secured.get("/runs", headers=bearer(WRITE))).status_code == 200


async def test_an_unauthenticated_invalid_body_is_401_not_422(secured: httpx.AsyncClient) -> None:
    response = await secured.post("/runs", json={"name": 5, "clips": "nope"})
    assert response.status_code == 401
    assert "clips" not in response.text


async def test_a_named_operator_token_names_the_actor_in_the_audit_log(
    secured: httpx.AsyncClient,
) -> None:
    response = await secured.post(
        "/runs/r/pause", headers={**bearer(ALICE), "X-Operator": "someone-else"}
    )
    assert response.status_code == 200
    entries = (await secured.get("/runs/r/audit", headers=bearer(READ))).json()["entries"]
    assert entries[-1]["actor"] == "alice"
    response = await secured.post("/runs/r/resume", headers={**bearer(WRITE), "X-Operator": "bob"})
    entries = (await secured.get("/runs/r/audit", headers=bearer(READ))).json()["entries"]
    assert entries[-1]["actor"] == "bob"


async def test_tokens_never_reach_the_logs(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_app(sqlite_url, write_token=WRITE) as client:
        await client.post("/runs", json=run_spec("r", clips=("a",)), headers=bearer(WRITE))
        await client.get("/runs/r", headers=bearer("wrong"))
    assert WRITE not in caplog.text and "wrong" not in caplog.text


async def test_a_declared_body_over_the_cap_is_413(sqlite_url: str) -> None:
    async with running_app(sqlite_url, max_body_bytes=2048) as client:
        response = await client.post(
            "/runs", json=run_spec("big", clips=[f"clip-{i}" for i in range(200)])
        )
        assert response.status_code == 413
        assert (await client.get("/runs")).json()["runs"] == []


async def test_a_streamed_body_over_the_cap_is_413(sqlite_url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "streamed", "clips": ['
        for i in range(500):
            yield b'{"name": "clip-%d"},' % i
        yield b'{"name": "last"}]}'

    async with running_app(sqlite_url, max_body_bytes=2048) as client:
        response = await client.post(
            "/runs", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert (await client.get("/runs")).json()["runs"] == []


async def test_a_streamed_body_under_the_cap_is_served(sqlite_url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "small", '
        yield b'"clips": [{"name": "a"}]}'

    async with running_app(sqlite_url, max_body_bytes=2048) as client:
        response = await client.post(
            "/runs", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 201


async def test_a_busy_database_is_a_503_with_retry_after(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def busy(*args: object, **kwargs: object) -> None:
        raise Unavailable("the database is busy; retry shortly")

    app = create_app(Settings(database_url=sqlite_url))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://scheduler") as client,
    ):
        monkeypatch.setattr(app.state.service, "ingest_outcomes", busy)
        response = await client.post(
            "/runs/r/outcomes", json={"learner_id": "l", "outcomes": [outcome("a")]}
        )
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1


async def test_every_route_has_a_summary_on_the_openapi_page(sqlite_url: str) -> None:
    async with running_app(sqlite_url) as client:
        spec = (await client.get("/openapi.json")).json()
    operations = [op for path in spec["paths"].values() for op in path.values()]
    assert len(operations) >= 13
    assert all(op.get("description") for op in operations)


def test_an_empty_token_from_the_environment_means_no_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # docker compose passes ${CLIPSCHED_WRITE_TOKEN:-}: an unset token arrives as ""
    monkeypatch.setenv("CLIPSCHED_WRITE_TOKEN", "")
    monkeypatch.setenv("CLIPSCHED_READ_TOKEN", "")
    settings = Settings()
    assert settings.write_token is None and settings.read_token is None
    assert not settings.auth_enabled
