"""The client against a real scheduler on loopback (uvicorn in a thread, SQLite in tmp)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clipsched.client import EpisodeIds, SchedulerClient, SchedulerClipSource, SchedulerError
from clipsched.clip_source import Outcome
from tests.service_processes import free_port

config_module = pytest.importorskip("scheduler_service.config")
server_module = pytest.importorskip("scheduler_service.server")

CLIPS = ["Idle", "Walk", "Back", "Run", "Sprint"]
TERMS = ("root", "pose")


class LoopbackScheduler:
    """The scheduler in a thread on a fixed loopback port; can be stopped and started again."""

    def __init__(self, db_path: Path) -> None:
        self.settings = config_module.Settings(database_url=f"sqlite:///{db_path}")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._running: contextlib.ExitStack | None = None

    def start(self) -> None:
        self._running = contextlib.ExitStack()
        self._running.enter_context(server_module.serve_in_thread(self.settings, port=self.port))

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[LoopbackScheduler]:
    server = LoopbackScheduler(tmp_path / "scheduler.db")
    server.start()
    yield server
    server.stop()


def make_outcomes(ids: EpisodeIds, n: int, *, terms: bool = False) -> list[Outcome]:
    return [
        Outcome(
            ids(), i % len(CLIPS), 10 + i, float(i), (i % 2) * 1.0,
            *((10 + i, (0.5, 2.0), (1.0, 3.0)) if terms else ()),
        )
        for i in range(n)
    ]  # fmt: skip


def test_create_sample_report_and_duplicates_keep_counters_exact(
    scheduler: LoopbackScheduler,
) -> None:
    with SchedulerClient(scheduler.url, "e2e", learner_id="seed0", timeout=5.0) as client:
        assert client.health()["status"] == "ok"
        spec = {"name": "e2e", "clips": [{"name": n} for n in CLIPS]}
        created = client.create_run(spec)
        assert [c["name"] for c in created["clips"]] == CLIPS
        with pytest.raises(SchedulerError) as info:
            client.create_run(spec)
        assert info.value.status_code == 409
        assert client.create_run(spec, exist_ok=True)["name"] == "e2e"

        first = client.next_clips(64)
        assert len(first.clip_ids) == 64
        assert all(0 <= c < len(CLIPS) for c in first.clip_ids)
        assert first.actor_config is not None
        assert first.actor_config.clip_names == tuple(CLIPS)
        again = client.next_clips(8, known_version=first.state_version)
        assert again.actor_config is None

        outcomes = make_outcomes(EpisodeIds("seed0"), 40)
        result = client.report(outcomes)
        assert (result.accepted, result.duplicates) == (40, ())
        replay = client.report(outcomes[:10])
        assert replay.accepted == 0
        assert sorted(replay.duplicates) == sorted(o.episode_id for o in outcomes[:10])

        with pytest.raises(SchedulerError) as bad:
            client.report([Outcome("seed0-bad", 99, 5, 1.0, 1.0)])
        assert bad.value.status_code == 422

        state = client.run_state()
    assert state["totals"]["episodes"] == 40
    assert state["totals"]["steps"] == sum(o.steps for o in outcomes)
    for clip_id, clip in enumerate(state["clips"]):
        assert clip["episodes"] == sum(1 for o in outcomes if o.clip_id == clip_id)


def test_clip_source_loses_nothing_across_a_scheduler_restart(
    scheduler: LoopbackScheduler, tmp_path: Path
) -> None:
    source = SchedulerClipSource.for_run(
        scheduler.url,
        "restart",
        learner_id="seed0",
        clip_names=CLIPS,
        term_names=TERMS,
        preset=None,
        # normalisers reach actors at state_version bumps: make the controller update often
        run_spec={"strategy": {"kind": "controller", "update_every_steps": 500}},
        num_envs=4,
        buffer_dir=tmp_path / "buffer",
        flush_every_s=0.02,
        retry_s=0.02,
        max_retry_s=0.1,
        batch_size=32,
    )
    ids = EpisodeIds("seed0")
    try:
        assert source.actor_config().clip_names == tuple(CLIPS)
        before = make_outcomes(ids, 50, terms=True)
        for outcome in before:
            source.report(outcome)
        assert source.flush(timeout=10.0)

        scheduler.stop()
        during = make_outcomes(ids, 70, terms=True)
        for outcome in during:
            source.report(outcome)
            source.next_clip()  # never blocks while the scheduler is down
        deadline = time.monotonic() + 10.0
        while source.stats().buffered < len(during) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert source.stats().buffered == len(during)

        scheduler.start()
        assert source.flush(timeout=15.0)
        deadline = time.monotonic() + 10.0  # the prefetcher picks up the next snapshot
        while source.actor_config().norm_count.sum() < 1 and time.monotonic() < deadline:
            source.next_clip()
            time.sleep(0.01)
        config = source.actor_config()
    finally:
        source.close()
    stats = source.stats()
    assert stats.sent == 120
    assert stats.duplicates == 0
    assert stats.dropped_outcomes == 0
    assert config.term_names == TERMS
    assert config.norm_count.shape == (len(CLIPS), len(TERMS))
    np.testing.assert_allclose(config.norm_mean[:, 0], 0.5)  # "root", in the learner's order
    np.testing.assert_allclose(config.norm_mean[:, 1], 2.0)
    with SchedulerClient(scheduler.url, "restart", learner_id="check") as client:
        state = client.run_state()
    assert state["totals"]["episodes"] == 120
    assert 0 < config.norm_count.sum() <= sum(o.term_count for o in before + during) * 2
