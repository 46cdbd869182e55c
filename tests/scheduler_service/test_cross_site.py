"""State-changing routes refuse what a browser could send from another site: a form post
from any page on the operator's machine cannot pause a run in loopback mode (no tokens)."""

from __future__ import annotations

import httpx
import pytest

from tests.scheduler_service.helpers import create_run

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_a_cross_site_write_is_403_and_changes_nothing(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    state = await create_run(client, "r")
    for method, path in (("POST", "/runs/r/pause"), ("PUT", "/runs/r/targets")):
        answer = await client.request(
            method, path, json={"target_usage": {"Walk": 0.5}}, headers=headers
        )
        assert answer.status_code == 403, answer.text
    after = (await client.get("/runs/r")).json()
    assert (after["paused"], after["state_version"]) == (False, state["state_version"])
    # reads stay open to any page that can reach the port (the data is not secret here)
    assert (await client.get("/runs/r", headers=headers)).status_code == 200


async def test_a_form_body_is_415(client: httpx.AsyncClient) -> None:
    await create_run(client, "r")
    answer = await client.put(
        "/runs/r/targets",
        content=b"target_usage=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 415


async def test_the_dashboard_and_scripts_still_write(client: httpx.AsyncClient) -> None:
    state = await create_run(client, "r")
    own = {"Origin": "http://scheduler", "Sec-Fetch-Site": "same-origin"}  # its base URL
    answer = await client.post("/runs/r/pause", headers=own)
    assert answer.status_code == 200, answer.text
    answer = await client.post("/runs/r/resume")  # a script: no Origin, no Sec-Fetch-Site
    assert answer.status_code == 200
    assert (await client.get("/runs/r")).json()["state_version"] > state["state_version"]
