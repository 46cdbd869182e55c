"""SchedulerClipSource: never blocks, buffers outcomes on disk while down, flushes them later."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from clipsched.client import OutcomeBuffer, SchedulerClient, SchedulerClipSource
from clipsched.client.http import outcome_payload
from clipsched.clip_source import Outcome

CLIPS = ("Idle", "Walk", "Back", "Run", "Sprint")
TERMS = ("pose", "root")


class FakeScheduler:
    """A MockTransport handler with the scheduler's next-clips and idempotent outcomes."""

    def __init__(self, *, probs: tuple[float, ...] = (0.0, 0.0, 0.0, 1.0, 0.0)) -> None:
        self.up = True
        self.version = 1
        self.probs = probs
        self.stored: dict[str, dict[str, Any]] = {}
        self.known_versions: list[str | None] = []
        self.posts = 0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("connection refused")
        with self.lock:
            if request.url.path.endswith("/next-clips"):
                return self._next_clips(request)
            if request.url.path.endswith("/outcomes"):
                return self._outcomes(request)
        return httpx.Response(404, json={"detail": "not found"})

    def _next_clips(self, request: httpx.Request) -> httpx.Response:
        n = int(request.url.params["n"])
        known = request.url.params.get("known_version")
        self.known_versions.append(known)
        clip = int(np.argmax(self.probs))
        body: dict[str, Any] = {"clip_ids": [clip] * n, "state_version": self.version}
        if known != str(self.version):
            body["actor_config"] = {
                "clip_names": list(CLIPS),
                "clip_probs": list(self.probs),
                "reward_weights": [0.2] * 5,
                "aggregation": {"kind": "lse", "temperature": 0.3},
                "normalizers": {"terms": ["root"], "mean": [[1.0]] * 5, "std": [[2.0]] * 5},
            }
        return httpx.Response(200, content=orjson.dumps(body))

    def _outcomes(self, request: httpx.Request) -> httpx.Response:
        self.posts += 1
        outcomes = orjson.loads(request.content)["outcomes"]
        for i, item in enumerate(outcomes):  # a batch with one bad item is rejected whole
            if item["steps"] < 1:
                detail = [{"loc": ["body", "outcomes", i, "steps"], "msg": ">= 1", "type": "x"}]
                return httpx.Response(422, json={"detail": detail})
        duplicates = [o["episode_id"] for o in outcomes if o["episode_id"] in self.stored]
        for item in outcomes:
            self.stored.setdefault(item["episode_id"], item)
        self.version += 1
        body = {
            "accepted": len(outcomes) - len(duplicates),
            "duplicates": duplicates,
            "state_version": self.version,
        }
        return httpx.Response(200, content=orjson.dumps(body))


def make_source(fake: FakeScheduler, buffer_dir: Path, **kwargs: Any) -> SchedulerClipSource:
    client = SchedulerClient(
        "http://scheduler.test",
        "five-clip",
        learner_id="seed0",
        retries=0,
        transport=httpx.MockTransport(fake),
    )
    options: dict[str, Any] = {
        "num_envs": 8,
        "clip_names": CLIPS,
        "term_names": TERMS,
        "buffer_dir": buffer_dir,
        "flush_every_s": 0.01,
        "batch_size": 16,
        "refresh_s": 0.05,
        "retry_s": 0.01,
        "max_retry_s": 0.02,
        "close_timeout_s": 2.0,
        "rng": np.random.default_rng(0),
        "owns_client": True,
    }
    options.update(kwargs)
    return SchedulerClipSource(client, **options)


@pytest.fixture
def fake() -> FakeScheduler:
    return FakeScheduler()


@pytest.fixture
def source_factory(
    fake: FakeScheduler, tmp_path: Path
) -> Iterator[Callable[..., SchedulerClipSource]]:
    made: list[SchedulerClipSource] = []

    def factory(**kwargs: Any) -> SchedulerClipSource:
        source = make_source(fake, tmp_path / "buffer", **kwargs)
        made.append(source)
        return source

    yield factory
    for source in made:
        source.close()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def outcomes(n: int, start: int = 0) -> list[Outcome]:
    return [
        Outcome(f"seed0-s-{i:06d}", i % 5, 10 + i, float(i), 1.0, 10, (0.5, 0.1), (1.0, 0.2))
        for i in range(start, start + n)
    ]


def test_next_clip_never_blocks_and_falls_back_when_the_scheduler_is_down(
    fake: FakeScheduler, source_factory: Callable[..., SchedulerClipSource]
) -> None:
    fake.up = False
    source = source_factory()
    started = time.perf_counter()
    drawn = [source.next_clip() for _ in range(10_000)]
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5
    assert set(drawn) == set(range(len(CLIPS)))  # uniform before any contact
    stats = source.stats()
    assert stats.fallback_draws == 10_000
    assert stats.fetch_errors >= 1


def test_default_actor_config_before_contact_is_uniform_with_unusable_normalisers(
    fake: FakeScheduler, source_factory: Callable[..., SchedulerClipSource]
) -> None:
    fake.up = False
    config = source_factory().actor_config()
    assert config.clip_names == CLIPS
    np.testing.assert_allclose(config.clip_probs, np.full(5, 0.2))
    np.testing.assert_allclose(config.reward_weights, np.full(5, 0.2))
    assert config.aggregation == "max"
    assert config.norm_mean.shape == config.norm_std.shape == config.norm_count.shape == (5, 2)
    assert (config.norm_count == 0).all()
    assert (config.norm_std == 1).all()


def test_prefetched_clips_and_config_come_from_the_scheduler(
    fake: FakeScheduler, source_factory: Callable[..., SchedulerClipSource]
) -> None:
    source = source_factory()
    assert source.wait_ready(5.0)
    wait_for(lambda: source.stats().prefetched >= 8)
    assert [source.next_clip() for _ in range(8)] == [3] * 8
    config = source.actor_config()
    assert config.state_version == fake.version
    assert config.aggregation == "lse"
    assert config.term_names == TERMS  # reordered to the learner's terms
    np.testing.assert_allclose(config.norm_mean[:, 1], 1.0)
    np.testing.assert_allclose(config.norm_mean[:, 0], 0.0)
    wait_for(lambda: len(fake.known_versions) >= 2)
    assert fake.known_versions[0] is None
    assert fake.known_versions[1] == str(config.state_version)


def test_fallback_samples_the_last_known_clip_probs(
    fake: FakeScheduler, source_factory: Callable[..., SchedulerClipSource]
) -> None:
    source = source_factory(prefetch=1)
    assert source.wait_ready(5.0)
    fake.up = False
    drawn = [source.next_clip() for _ in range(2000)]
    assert set(drawn) == {3}  # clip_probs put all mass on clip 3
    assert source.stats().fallback_draws > 0


def test_outcomes_are_buffered_on_disk_while_down_and_flushed_with_original_ids(
    fake: FakeScheduler, source_factory: Callable[..., SchedulerClipSource], tmp_path: Path
) -> None:
    fake.up = False
    source = source_factory()
    sent = outcomes(50)
    for outcome in sent:
        source.report(outcome)
    wait_for(lambda: source.stats().buffered == 50)
    assert list((tmp_path / "buffer").glob("seg-*.jsonl"))
    assert source.stats().flush_errors >= 1
    fake.up = True
    wait_for(lambda: source.stats().buffered == 0 and len(fake.stored) == 50)
    assert set(fake.stored) == {o.episode_id for o in sent}
    assert fake.stored[sent[7].episode_id] == outcome_payload(sent[7], TERMS)
    stats = source.stats()
    assert stats.sent == 50
    assert stats.duplicates == 0
    assert stats.dropped_outcomes == 0
    assert not list((tmp_path / "buffer").glob("seg-*.jsonl"))


def test_buffer_beyond_its_cap_drops_the_oldest_outcomes_and_counts_them(
    fake: FakeScheduler, source_factory: Callable[..., SchedulerClipSource]
) -> None:
    fake.up = False
    source = source_factory(buffer_cap_outcomes=20)
    sent = outcomes(50)
    for outcome in sent:
        source.report(outcome)
    wait_for(lambda: source.stats().pending == 0 and source.stats().dropped_outcomes == 30)
    assert source.stats().buffered == 20
    fake.up = True
    wait_for(lambda: len(fake.stored) == 20)
    assert set(fake.stored) == {o.episode_id for o in sent[30:]}


def test_outcome_buffer_drops_exactly_the_oldest_outcomes(tmp_path: Path) -> None:
    buffer = OutcomeBuffer(tmp_path, cap_outcomes=10)
    for start in range(0, 24, 4):
        buffer.append([{"episode_id": f"e{i}"} for i in range(start, start + 4)])
    assert len(buffer) == 10
    assert buffer.dropped == 14
    kept = []
    while (item := buffer.oldest()) is not None:
        kept += [p["episode_id"] for p in item[1]]
        buffer.remove(item[0])
    assert kept == [f"e{i}" for i in range(14, 24)]
    buffer.close()


def test_outcome_buffer_refuses_a_directory_another_client_holds(tmp_path: Path) -> None:
    first = OutcomeBuffer(tmp_path, cap_outcomes=10)
    with pytest.raises(RuntimeError, match="in use"):
        OutcomeBuffer(tmp_path, cap_outcomes=10)
    first.close()
    OutcomeBuffer(tmp_path, cap_outcomes=10).close()


def test_a_buffer_left_by_a_crash_is_flushed_on_start(
    fake: FakeScheduler, source_factory: Callable[..., SchedulerClipSource], tmp_path: Path
) -> None:
    left = outcomes(40)
    crashed = OutcomeBuffer(tmp_path / "buffer", cap_outcomes=1000)
    crashed.append([outcome_payload(o, TERMS) for o in left[:25]])
    crashed.append([outcome_payload(o, TERMS) for o in left[25:]])
    (tmp_path / "buffer" / "seg-000000000009.jsonl.tmp").write_bytes(b'{"half": ')
    crashed.close()  # the process died here; the lock goes with it
    source = source_factory()
    wait_for(lambda: len(fake.stored) == 40 and source.stats().buffered == 0)
    assert set(fake.stored) == {o.episode_id for o in left}
    assert source.stats().duplicates == 0
    assert not list((tmp_path / "buffer").glob("seg-*"))


def test_close_posts_pending_outcomes_when_the_scheduler_is_up(
    fake: FakeScheduler, source_factory: Callable[..., SchedulerClipSource]
) -> None:
    source = source_factory(flush_every_s=60.0)
    for outcome in outcomes(10):
        source.report(outcome)
    source.close()
    assert len(fake.stored) == 10
    with pytest.raises(RuntimeError, match="closed"):
        source.report(outcomes(1)[0])


def test_close_while_down_persists_outcomes_for_the_next_start(
    fake: FakeScheduler, source_factory: Callable[..., SchedulerClipSource]
) -> None:
    fake.up = False
    source = source_factory(flush_every_s=60.0)
    for outcome in outcomes(10):
        source.report(outcome)
    started = time.perf_counter()
    source.close()
    assert time.perf_counter() - started < 2.0
    assert fake.stored == {}
    fake.up = True
    restarted = source_factory()
    wait_for(lambda: len(fake.stored) == 10 and restarted.stats().buffered == 0)


def test_a_rejected_outcome_is_isolated_and_the_rest_of_its_batch_is_stored(
    fake: FakeScheduler, source_factory: Callable[..., SchedulerClipSource]
) -> None:
    source = source_factory()
    batch = outcomes(12)
    batch[5] = Outcome("seed0-bad", 0, 0, 0.0, 0.0)  # steps < 1: the server refuses it
    for outcome in batch:
        source.report(outcome)
    wait_for(lambda: source.stats().rejected_outcomes == 1 and len(fake.stored) == 11)
    assert "seed0-bad" not in fake.stored
    assert source.stats().buffered == 0


def test_report_refuses_outcomes_whose_terms_do_not_match_the_term_names(
    fake: FakeScheduler, source_factory: Callable[..., SchedulerClipSource]
) -> None:
    source = source_factory()
    with pytest.raises(ValueError, match="3 reward terms"):
        source.report(Outcome("x", 0, 5, 1.0, 1.0, 5, (1.0, 2.0, 3.0), (0.0, 0.0, 0.0)))
