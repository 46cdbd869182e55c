"""Guarantee 6 (numbers that are finite but huge): no 5xx, and no run poisoned for later reads.

``allow_inf_nan=False`` keeps NaN and Infinity out, but finite values near the float or
int64 limits still overflow once the service sums them: a return of 1.7e308 is finite,
two of them make ``return_sum`` infinite, and from then on every ``GET /runs/{run}`` of
that run fails. Each case posts such a value, then checks that the answer is not a 5xx
and that the run state still reads, with counters equal to the accepted outcomes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler_service.api.app import create_app
from scheduler_service.config import Settings
from tests.scheduler_service.helpers import run_spec

pytestmark = pytest.mark.anyio

RUN = "r"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a fresh SQLite file with run ``r``; app errors come back as 500s."""
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'finite.db'}"))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://scheduler") as http,
    ):
        created = await http.post("/runs", json=run_spec(RUN))
        assert created.status_code == 201, created.text
        yield http


def episode(episode_id: str, **fields: Any) -> dict[str, Any]:
    """One outcome of clip 0 in wire form, with ``fields`` over ordinary values."""
    return {
        "episode_id": episode_id,
        "clip": 0,
        "steps": 10,
        "return": 1.0,
        "success": 1.0,
        **fields,
    }


def terms(count: float, mean: float, m2: float) -> dict[str, Any]:
    """``reward_terms`` with one term."""
    return {"reward_terms": {"pose": {"count": count, "mean": mean, "m2": m2}}}


HUGE_BATCHES = {
    "returns whose sum overflows": [
        episode("a", **{"return": 1.7e308}),
        episode("b", **{"return": 1.7e308}),
    ],
    "term counts whose sum overflows": [
        episode("a", **terms(1e308, 1.0, 0.0)),
        episode("b", **terms(1e308, 1.0, 0.0)),
    ],
    "term means far apart": [
        episode("a", **terms(1e308, 1e308, 1e308)),
        episode("b", **terms(1e308, -1e308, 1e308)),
    ],
    "steps whose sum overflows int64": [
        episode("a", steps=2**62),
        episode("b", steps=2**62),
    ],
    "steps past int64": [episode("a", steps=2**63)],
}


@pytest.mark.parametrize(
    "batch",
    [pytest.param(batch, id=name) for name, batch in HUGE_BATCHES.items()],
)
async def test_huge_finite_numbers_never_poison_the_run_state(
    client: httpx.AsyncClient, batch: list[dict[str, Any]]
) -> None:
    posted = await client.post(f"/runs/{RUN}/outcomes", json={"learner_id": "l", "outcomes": batch})
    state = await client.get(f"/runs/{RUN}")
    assert posted.status_code < 500, posted.text
    assert state.status_code == 200, state.text
    totals = state.json()["totals"]
    if posted.status_code == 200:  # accepted: the counters hold the exact sums
        assert totals == {
            "episodes": len(batch),
            "steps": sum(o["steps"] for o in batch),
            "updates": 0,
        }
    else:  # rejected whole: nothing stored
        assert posted.status_code == 422
        assert totals == {"episodes": 0, "steps": 0, "updates": 0}


@pytest.mark.parametrize(
    ("path", "param"),
    [
        pytest.param(
            f"/runs/{RUN}/history",
            "since_update",
        ),
        pytest.param(
            f"/runs/{RUN}/audit",
            "since_id",
        ),
    ],
)
async def test_a_cursor_past_int64_is_a_422_naming_it(
    client: httpx.AsyncClient, path: str, param: str
) -> None:
    response = await client.get(path, params={param: 2**63})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", param]


async def test_the_largest_int64_cursor_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/runs/{RUN}/audit", params={"since_id": 2**63 - 1})
    assert response.status_code == 200
    assert response.json() == {"entries": []}
