"""SchedulerClient against ``httpx.MockTransport``: retries, errors, versions, auth, payloads."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable

import httpx
import numpy as np
import orjson
import pytest

from clipsched.client.http import (
    EpisodeIds,
    SchedulerClient,
    SchedulerError,
    SchedulerUnavailable,
    actor_config_from_json,
    outcome_payload,
    with_term_order,
)
from clipsched.clip_source import Outcome

Handler = Callable[[httpx.Request], httpx.Response]

ACTOR_CONFIG = {
    "clip_names": ["Idle", "Walk", "Run"],
    "clip_probs": [0.2, 0.5, 0.3],
    "reward_weights": [0.3, 0.4, 0.3],
    "aggregation": {"kind": "lse", "temperature": 0.25, "threshold_delta": 0.4},
    "normalizers": {
        "terms": ["pose", "root"],
        "mean": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]],
        "std": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
    },
}


class Recorder:
    """A MockTransport handler that replays scripted answers and records every request."""

    def __init__(self, answers: list[httpx.Response | Exception]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_client(
    handler: Handler, sleeps: list[float] | None = None, **kwargs: object
) -> SchedulerClient:
    record = sleeps if sleeps is not None else []
    options: dict[str, object] = {"retries": 3, "backoff": 0.01, "max_backoff": 1.0}
    options.update(kwargs)
    return SchedulerClient(
        "http://scheduler.test",
        "five-clip",
        learner_id="seed0",
        transport=httpx.MockTransport(handler),
        rng=np.random.default_rng(0),
        sleep=record.append,
        **options,  # type: ignore[arg-type]
    )


def ok(body: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body))


def test_503_is_retried_after_the_retry_after_the_server_asked_for() -> None:
    busy = httpx.Response(503, headers={"Retry-After": "7"}, json={"detail": "busy"})
    handler = Recorder([busy, busy, ok({"status": "ok", "database": "sqlite"})])
    sleeps: list[float] = []
    with make_client(handler, sleeps) as client:
        assert client.health()["status"] == "ok"
    assert len(handler.requests) == 3
    assert sleeps == [7.0, 7.0]


def test_connection_errors_are_retried_with_growing_jittered_backoff() -> None:
    down = httpx.ConnectError("connection refused")
    handler = Recorder([down, down, down, ok({"status": "ok"})])
    sleeps: list[float] = []
    with make_client(handler, sleeps, backoff=0.01) as client:
        client.health()
    assert len(handler.requests) == 4
    for attempt, delay in enumerate(sleeps):
        base = 0.01 * 2**attempt
        assert 0.5 * base <= delay <= base


def test_5xx_without_retry_after_backs_off_then_gives_up_as_unavailable() -> None:
    handler = Recorder([httpx.Response(500, json={"detail": "boom"})])
    sleeps: list[float] = []
    with make_client(handler, sleeps, retries=2) as client, pytest.raises(SchedulerUnavailable):
        client.health()
    assert len(handler.requests) == 3
    assert len(sleeps) == 2


def test_timeouts_exhaust_retries_and_raise_unavailable_with_real_tiny_sleeps() -> None:
    handler = Recorder([httpx.ReadTimeout("slow")])
    client = SchedulerClient(
        "http://scheduler.test",
        "five-clip",
        learner_id="seed0",
        retries=2,
        backoff=0.001,
        transport=httpx.MockTransport(handler),
    )
    with client, pytest.raises(SchedulerUnavailable, match="unreachable after 3 attempts"):
        client.next_clips(4)
    assert len(handler.requests) == 3


def test_4xx_is_not_retried_and_raises_with_the_server_detail() -> None:
    detail = [{"loc": ["body", "outcomes", 3, "steps"], "msg": "must be >= 1", "type": "x"}]
    handler = Recorder([httpx.Response(422, json={"detail": detail})])
    sleeps: list[float] = []
    outcome = Outcome("seed0-1", 0, 10, 1.0, 1.0)
    with make_client(handler, sleeps) as client, pytest.raises(SchedulerError) as info:
        client.report([outcome])
    assert len(handler.requests) == 1
    assert sleeps == []
    assert info.value.status_code == 422
    assert info.value.detail == detail
    assert "body.outcomes.3.steps: must be >= 1" in str(info.value)
    assert not isinstance(info.value, SchedulerUnavailable)


def test_a_string_detail_is_shown_as_is() -> None:
    handler = Recorder([httpx.Response(404, json={"detail": "run 'nope' not found"})])
    with make_client(handler) as client, pytest.raises(SchedulerError, match="404 run 'nope'"):
        client.run_state("nope")


def test_next_clips_sends_known_version_only_when_given() -> None:
    handler = Recorder(
        [
            ok({"clip_ids": [1, 2, 1], "state_version": 17, "actor_config": ACTOR_CONFIG}),
            ok({"clip_ids": [0], "state_version": 17}),
        ]
    )
    with make_client(handler) as client:
        first = client.next_clips(3)
        second = client.next_clips(1, known_version=17)
    params = [r.url.params for r in handler.requests]
    assert "known_version" not in params[0]
    assert params[0]["n"] == "3"
    assert params[0]["learner_id"] == "seed0"
    assert params[1]["known_version"] == "17"
    assert handler.requests[0].url.path == "/runs/five-clip/next-clips"
    assert first.clip_ids == (1, 2, 1)
    assert first.actor_config is not None
    assert first.actor_config.state_version == 17
    assert second.actor_config is None
    assert second.state_version == 17


def test_actor_config_is_parsed_into_arrays_of_clip_by_term() -> None:
    config = actor_config_from_json(ACTOR_CONFIG, 5)
    assert config.clip_names == ("Idle", "Walk", "Run")
    np.testing.assert_allclose(config.clip_probs, ACTOR_CONFIG["clip_probs"])
    assert config.aggregation == "lse"
    assert config.temperature == 0.25
    assert config.norm_mean.shape == (3, 2)
    assert config.norm_std[2, 1] == 6.0


def test_term_reordering_follows_the_learner_and_zero_fills_unknown_terms() -> None:
    config = with_term_order(actor_config_from_json(ACTOR_CONFIG, 5), ("root", "vel", "pose"))
    assert config.term_names == ("root", "vel", "pose")
    np.testing.assert_allclose(config.norm_mean[1], [0.4, 0.0, 0.3])
    np.testing.assert_allclose(config.norm_std[1], [4.0, 0.0, 3.0])


def test_bad_actor_config_probabilities_are_refused() -> None:
    bad = {**ACTOR_CONFIG, "clip_probs": [0.5, -0.1, 0.6]}
    with pytest.raises(SchedulerError, match="clip_probs"):
        actor_config_from_json(bad, 1)


def test_bearer_token_header_is_sent_only_when_given() -> None:
    handler = Recorder([ok({"status": "ok"})])
    with make_client(handler, token="s3cret") as client:
        client.health()
    with make_client(handler) as client:
        client.health()
    assert handler.requests[0].headers["Authorization"] == "Bearer s3cret"
    assert "Authorization" not in handler.requests[1].headers


def test_create_run_with_exist_ok_returns_the_existing_state_on_409() -> None:
    state = {"name": "five-clip", "state_version": 3, "clips": []}
    handler = Recorder([httpx.Response(409, json={"detail": "run exists"}), ok(state)])
    with make_client(handler) as client:
        assert client.create_run({"name": "five-clip", "clips": []}, exist_ok=True) == state
    assert [r.method for r in handler.requests] == ["POST", "GET"]
    assert handler.requests[1].url.path == "/runs/five-clip"

    handler = Recorder([httpx.Response(409, json={"detail": "run exists"})])
    with make_client(handler) as client, pytest.raises(SchedulerError) as info:
        client.create_run({"name": "five-clip", "clips": []})
    assert info.value.status_code == 409


def test_report_posts_the_wire_payload_and_parses_the_answer() -> None:
    handler = Recorder([ok({"accepted": 1, "duplicates": ["seed0-a-1"], "state_version": 9})])
    outcomes = [
        Outcome("seed0-a-0", 2, 120, 87.5, 1.0, 120, (0.5, 0.25), (1.9, 0.7)),
        Outcome("seed0-a-1", 0, 30, 4.0, 0.0),
    ]
    with make_client(handler) as client:
        result = client.report(outcomes, term_names=("pose", "root"))
    body = orjson.loads(handler.requests[0].content)
    assert handler.requests[0].headers["Content-Type"] == "application/json"
    assert body["learner_id"] == "seed0"
    first, second = body["outcomes"]
    assert first["episode_id"] == "seed0-a-0"
    assert first["clip"] == 2
    assert first["return"] == 87.5
    assert first["reward_terms"]["pose"] == {"sum": 60.0, "count": 120, "mean": 0.5, "m2": 1.9}
    assert "reward_terms" not in second
    assert result.accepted == 1
    assert result.duplicates == ("seed0-a-1",)
    assert result.state_version == 9


def test_outcome_payload_refuses_terms_without_matching_names() -> None:
    with pytest.raises(ValueError, match="2 reward terms"):
        outcome_payload(Outcome("x", 0, 1, 0.0, 0.0, 5, (1.0, 2.0), (0.0, 0.0)), ("pose",))


def test_run_names_are_url_quoted() -> None:
    handler = Recorder([ok({"name": "a/b c"})])
    with make_client(handler) as client:
        client.run_state("a/b c")
    assert handler.requests[0].url.raw_path == b"/runs/a%2Fb%20c"


def test_set_targets_sends_if_match_and_the_group_key() -> None:
    handler = Recorder([ok({"target_usage": {"Walk": 0.5}})])
    with make_client(handler) as client:
        client.set_targets({"gait": 2.0}, by_group=True, if_match=12)
    request = handler.requests[0]
    assert request.method == "PUT"
    assert request.headers["If-Match"] == "12"
    assert orjson.loads(request.content) == {"target_usage_by_group": {"gait": 2.0}}


def test_episode_ids_are_unique_across_threads_and_sessions() -> None:
    first, second = EpisodeIds("seed0"), EpisodeIds("seed0")
    ids: list[str] = []
    lock = threading.Lock()

    def draw(source: EpisodeIds) -> None:
        drawn = [source() for _ in range(2000)]
        with lock:
            ids.extend(drawn)

    threads = [threading.Thread(target=draw, args=(s,)) for s in (first, first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 6000
    assert len(set(ids)) == 6000
    assert all(i.startswith("seed0-") for i in ids)


def test_client_module_does_not_import_torch() -> None:
    code = "import sys, clipsched.client.http; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
