"""Guarantee 7: the auth model holds on every route, before any body is parsed.

With a write and a read token configured: every route of the OpenAPI document but
``/health`` answers 401 without a token or with a wrong one, also when the body is
malformed JSON or schema-invalid (never 422: the token is checked before the body is
read); a read token on a write call is 403; tokens are compared with
``hmac.compare_digest`` and never reach the logs. Without tokens the server binds to
loopback by default and says so in its log.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from tests.guarantee_support import record_guarantee
from tests.scheduler_service.helpers import run_spec, running_app
from tests.service_processes import VENV_BIN, Process, base_env, free_port, wait_healthy

pytestmark = pytest.mark.anyio

WRITE = "write-token-5f0d7c1e9a"
READ = "read-token-2b8e4a6d3c"
WRONG = "wrong-token-0000000000"
BODIES = (b"{not json", b'{"unexpected": [1, 2, 3]}', b"")


@pytest.fixture
async def secured(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(sqlite_url, write_token=WRITE, read_token=READ) as client:
        response = await client.post(
            "/runs", json=run_spec("r"), headers={"Authorization": f"Bearer {WRITE}"}
        )
        assert response.status_code == 201
        yield client


async def operations(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """(method, path) of every route in the OpenAPI document, ``{run}`` filled in."""
    spec = (await client.get("/openapi.json")).json()
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", "r", path))
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete", "patch"}
    ]


async def test_every_route_is_401_without_a_valid_token_whatever_the_body(
    secured: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared = 0
    real: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        nonlocal compared
        compared += 1
        return real(a, b)

    monkeypatch.setattr("scheduler_service.api.deps.hmac.compare_digest", counting)
    caplog.set_level(logging.DEBUG)
    checked = 0
    wrong_status: list[tuple[str, str, str, int]] = []
    ops = await operations(secured)
    for method, path in ops:
        for auth in (None, f"Bearer {WRONG}", "Basic x", "Bearer "):
            headers = {"Authorization": auth} if auth else {}
            bodies = BODIES if method != "GET" else (b"",)
            for body in bodies:
                response = await secured.request(
                    method,
                    path,
                    content=body,
                    headers={**headers, "Content-Type": "application/json"},
                )
                checked += 1
                expected = 200 if path == "/health" else 401
                if response.status_code != expected:
                    wrong_status.append((method, path, repr(body), response.status_code))
    writes = [(m, p) for m, p in ops if m != "GET"]
    forbidden = []
    for method, path in writes:
        response = await secured.request(
            method, path, content=b"{}", headers={"Authorization": f"Bearer {READ}"}
        )
        forbidden.append(response.status_code)
    reads_ok = [
        (await secured.get(p, headers={"Authorization": f"Bearer {READ}"})).status_code
        for m, p in ops
        if m == "GET" and "next-clips" not in p
    ]
    logged = caplog.text
    leaked = sum(logged.count(t) for t in (WRITE, READ, WRONG))
    record_guarantee(
        7,
        f"{len(ops)} operations, {checked} unauthenticated requests (no/wrong/malformed token "
        f"x malformed/invalid/empty body): wrong status {len(wrong_status)}; read token on "
        f"{len(writes)} writes -> 403: {forbidden.count(403)}; compare_digest calls "
        f"{compared}; token strings in logs {leaked}",
        operations=len(ops),
        unauthenticated_requests=checked,
        wrong_status=len(wrong_status),
        read_token_on_writes_403=forbidden.count(403),
        writes=len(writes),
        compare_digest_calls=compared,
        tokens_in_logs=leaked,
    )
    assert not wrong_status, wrong_status
    assert forbidden == [403] * len(writes)
    assert all(code == 200 for code in reads_ok), reads_ok
    assert compared > 0
    assert leaked == 0


async def test_an_unauthenticated_malformed_body_is_401_not_422(
    secured: httpx.AsyncClient,
) -> None:
    response = await secured.post(
        "/runs/r/outcomes", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_without_tokens_the_server_binds_to_loopback_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    env = base_env(
        tmp_path,
        {
            "CLIPSCHED_DATABASE_URL": str(tmp_path / "open.db"),
            "CLIPSCHED_PORT": str(port),
            "CLIPSCHED_LOG_LEVEL": "INFO",
        },
    )  # no CLIPSCHED_HOST and no token: the defaults
    process = Process("open-server", [str(VENV_BIN / "clipsched"), "serve"], env, tmp_path)
    try:
        wait_healthy(process, f"http://127.0.0.1:{port}")
    finally:
        process.stop()
    log = process.log_tail(20_000)
    assert "loopback" in log
    assert f"127.0.0.1:{port}" in log


async def test_a_read_token_on_a_write_is_403_whatever_the_body(
    secured: httpx.AsyncClient,
) -> None:
    writes = [(m, p) for m, p in await operations(secured) if m != "GET"]
    bodies = (*BODIES, b'{"learner_id": "l", "outcomes": [{"return": NaN}]}', b"[]")
    statuses = {
        (method, path, body): (
            await secured.request(
                method,
                path,
                content=body,
                headers={"Authorization": f"Bearer {READ}", "Content-Type": "application/json"},
            )
        ).status_code
        for method, path in writes
        for body in bodies
    }
    assert set(statuses.values()) == {403}, {k: v for k, v in statuses.items() if v != 403}
