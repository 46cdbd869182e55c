"""The wire format is strict and the same on both databases: control characters in names
are a 422 naming the field, ids and counts are JSON integers, an empty override is a 422,
and a non-finite number is refused with the field and item that held it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.scheduler_service.helpers import NOTE_CLIPS, create_run, outcome

pytestmark = pytest.mark.anyio


def locations(answer: httpx.Response) -> list[list[Any]]:
    return [error["loc"] for error in answer.json()["detail"]]


async def post(client: httpx.AsyncClient, run: str, outcomes: list[Any], learner: str = "l0"):  # type: ignore[no-untyped-def]
    return await client.post(
        f"/runs/{run}/outcomes", json={"learner_id": learner, "outcomes": outcomes}
    )


@pytest.mark.parametrize("bad", ["\u0000", "a\u0000b", "tab\there", "\u007f"])
async def test_control_characters_in_names_are_a_422_naming_the_field(
    client: httpx.AsyncClient, bad: str
) -> None:
    clips = [{"name": c} for c in NOTE_CLIPS]
    answer = await client.post("/runs", json={"name": "r", "clips": [*clips, {"name": bad}]})
    assert answer.status_code == 422
    assert ["body", "clips", len(NOTE_CLIPS), "name"] in locations(answer)
    answer = await client.post("/runs", json={"name": "r", "clips": [{"name": "a", "group": bad}]})
    assert answer.status_code == 422 and ["body", "clips", 0, "group"] in locations(answer)

    await create_run(client, "ok")
    answer = await post(client, "ok", [outcome(0)], learner=bad)
    assert answer.status_code == 422 and ["body", "learner_id"] in locations(answer)
    answer = await post(client, "ok", [outcome(0, episode_id=f"e{bad}")])
    assert answer.status_code == 422
    assert ["body", "outcomes", 0, "episode_id"] in locations(answer)
    assert (await client.get("/runs/ok")).json()["totals"]["episodes"] == 0


@pytest.mark.parametrize("path", ["bad%00run", "%00", "x%01y", "a%7Fb"])
async def test_a_run_path_no_run_can_have_is_a_404_not_a_500_or_503(
    client: httpx.AsyncClient, path: str
) -> None:
    for method, url in (
        ("GET", f"/runs/{path}"),
        ("GET", f"/runs/{path}/next-clips?n=1"),
        ("GET", f"/runs/{path}/history"),
        ("POST", f"/runs/{path}/pause"),
    ):
        answer = await client.request(method, url)
        assert answer.status_code == 404, (method, url, answer.status_code, answer.text)


@pytest.mark.parametrize(
    ("clip", "steps"),
    [(True, 10), (False, 10), (0, True), (0, "10"), (0, 10.0), (10**200, 10), ("1" * 201, 10)],
)
async def test_ids_and_counts_are_json_integers(
    client: httpx.AsyncClient, clip: Any, steps: Any
) -> None:
    await create_run(client, "strict")
    body = {"episode_id": "e1", "clip": clip, "steps": steps, "return": 1.0, "success": 1.0}
    answer = await post(client, "strict", [body])
    assert answer.status_code == 422, answer.text
    assert any(loc[:3] == ["body", "outcomes", 0] for loc in locations(answer))
    assert (await client.get("/runs/strict")).json()["totals"]["episodes"] == 0


async def test_a_clip_name_made_of_digits_is_a_name() -> None:
    # "3" is the clip named "3", never clip id 3 (checked in the service's resolution)
    from scheduler_service.api.schemas import OutcomeIn

    parsed = OutcomeIn.model_validate(
        {"episode_id": "e", "clip": "3", "steps": 1, "return": 0.0, "success": 0.0}
    )
    assert parsed.clip == "3"


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("targets", {"target_usage": {}}),
        ("targets", {"target_usage_by_group": {}}),
        ("clip-probs", {"clip_probs": {}}),
        ("reward-weights", {"reward_weights": {}}),
    ],
)
async def test_an_empty_override_is_a_422_and_changes_nothing(
    client: httpx.AsyncClient, route: str, body: dict[str, Any]
) -> None:
    state = await create_run(client, "o")
    answer = await client.put(f"/runs/o/{route}", json=body)
    assert answer.status_code == 422, answer.text
    assert ["body", next(iter(body))] in locations(answer)
    after = (await client.get("/runs/o")).json()
    assert after["state_version"] == state["state_version"]
    audit = (await client.get("/runs/o/audit")).json()["entries"]
    assert [entry["action"] for entry in audit] == ["create_run"]  # no override row


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e309"])
async def test_a_non_finite_number_is_refused_with_its_field_and_item(
    client: httpx.AsyncClient, token: str
) -> None:
    await create_run(client, "nan")
    items = [
        f'{{"episode_id": "e{i}", "clip": 0, "steps": 5, '
        f'"return": {token if i == 3 else "1.0"}, "success": 1.0}}'
        for i in range(5)
    ]
    raw = '{"learner_id": "l0", "outcomes": [' + ", ".join(items) + "]}"
    answer = await client.post(
        "/runs/nan/outcomes", content=raw, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert locations(answer) == [["body", "outcomes", 3, "return"]]
    assert (await client.get("/runs/nan")).json()["totals"]["episodes"] == 0
