"""Guarantee 1: an acknowledged outcome survives kill -9 and is counted exactly once.

Eight client threads post batches of outcomes with unique episode ids to a real scheduler
process on loopback, re-posting a batch (same ids, same payload) until it is answered 200.
Meanwhile the test SIGKILLs the scheduler at random moments and restarts it on the same
port and SQLite file. At the end every acknowledged outcome must be stored (lost = 0),
none twice (duplicated = 0), every counter must equal the sum over the stored outcomes,
and ``PRAGMA integrity_check`` must say ``ok``. It also checks that the store really runs
with the durability setting ``docs/guarantees.md`` documents (WAL, ``synchronous=FULL``).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from scheduler_service.algorithms.clip_stats import fold
from scheduler_service.store.engine import create_store_engine
from scheduler_service.store.repository import Repository
from tests.guarantee_support import record_guarantee
from tests.service_processes import Process, base_env, free_port, wait_healthy

CLIPS = ("Idle", "Walk", "Back", "Run", "Sprint")
RUN = "durable"
CLIENTS = 8
UPDATE_EVERY_STEPS = 3_000


@dataclass(frozen=True)
class Profile:
    """How hard one variant of the test pushes."""

    name: str
    kills: int
    up_seconds: tuple[float, float]
    """The scheduler is killed after a uniform draw from this range once it is healthy."""
    deadline_seconds: float


FAST = Profile("fast", kills=10, up_seconds=(0.1, 0.6), deadline_seconds=150.0)
SLOW = Profile("slow", kills=40, up_seconds=(0.1, 2.0), deadline_seconds=900.0)


class RestartableScheduler:
    """``python -m scheduler_service serve`` on one loopback port and SQLite file, killed
    (SIGKILL, by its PID) and restarted as often as the test likes; one log per start."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", "scheduler_service", "serve", "--host", "127.0.0.1"]
        self.argv += ["--port", str(self.port), "--database-url", database_url]
        self.env = base_env(workdir, {"CLIPSCHED_LOG_LEVEL": "WARNING"})
        self.workdir = workdir
        self.process: Process | None = None
        self.starts = 0
        self.start_seconds: list[float] = []

    def start(self) -> None:
        """Start the next generation and wait until ``/health`` answers."""
        began = time.monotonic()
        self.starts += 1
        self.process = Process(f"scheduler-{self.starts:03d}", self.argv, self.env, self.workdir)
        wait_healthy(self.process, self.url, timeout=60.0)
        self.start_seconds.append(time.monotonic() - began)

    def kill(self) -> None:
        """SIGKILL the running generation and reap it."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.popen.wait(timeout=30.0)

    def stop(self) -> None:
        """SIGTERM the running generation (SIGKILL after a grace period)."""
        if self.process is not None:
            self.process.stop()


@dataclass
class ClientLog:
    """What one posting client sent and what the scheduler acknowledged."""

    acknowledged: dict[str, tuple[int, int]] = field(default_factory=dict)
    """episode id -> (clip id, steps) of every outcome in a batch answered 200."""
    batches: int = 0
    retries: int = 0
    recovered: int = 0
    """Batches whose first answer was lost but whose commit survived (duplicates on retry)."""
    errors: list[str] = field(default_factory=list)


def post_until_acknowledged(
    client: httpx.Client, body: dict[str, Any], log: ClientLog, deadline: float
) -> bool:
    """Post ``body`` again and again (same ids, same payload) until it is answered 200."""
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        try:
            response = client.post(f"/runs/{RUN}/outcomes", json=body)
        except httpx.TransportError:
            log.retries += 1
            time.sleep(0.02)
            continue
        if response.status_code == 503:
            log.retries += 1
            time.sleep(min(1.0, float(response.headers.get("Retry-After", "1"))))
            continue
        if response.status_code != 200:
            log.errors.append(f"{response.status_code}: {response.text[:300]}")
            return False
        answer = response.json()
        size = len(body["outcomes"])
        if answer["accepted"] + len(answer["duplicates"]) != size:
            log.errors.append(f"accepted + duplicates != {size}: {answer}")
        if attempt > 1 and answer["duplicates"]:
            log.recovered += 1
        for item in body["outcomes"]:
            log.acknowledged[item["episode_id"]] = (item["clip"], item["steps"])
        return True
    log.errors.append("a batch was never acknowledged before the deadline")
    return False


def posting_client(
    index: int, url: str, stop: threading.Event, deadline: float, log: ClientLog
) -> None:
    """Post batches of 1 to 16 fresh outcomes until ``stop`` (finishing the batch in hand)."""
    rng = random.Random(1000 + index)
    learner = f"learner-{index}"
    with httpx.Client(base_url=url, timeout=10.0) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            batch = [
                {
                    "episode_id": f"{learner}-b{log.batches:06d}-e{i:02d}",
                    "clip": rng.randrange(len(CLIPS)),
                    "steps": rng.randint(1, 200),
                    "return": round(rng.uniform(-5.0, 50.0), 6),
                    "success": rng.choice((0.0, 1.0)),
                }
                for i in range(rng.randint(1, 16))
            ]
            log.batches += 1
            if not post_until_acknowledged(
                client, {"learner_id": learner, "outcomes": batch}, log, deadline
            ):
                return


def stored_state(db_path: Path) -> dict[str, Any]:
    """What the SQLite file holds, read directly (the scheduler is stopped)."""
    with sqlite3.connect(db_path) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        run_id, total_episodes, total_steps = db.execute(
            "SELECT id, total_episodes, total_steps FROM runs WHERE name = ?", (RUN,)
        ).fetchone()
        rows = db.execute(
            "SELECT episode_id, clip_id, steps FROM outcomes WHERE run_id = ?", (run_id,)
        ).fetchall()
        learner_episodes, learner_steps = db.execute(
            "SELECT COALESCE(SUM(episodes), 0), COALESCE(SUM(steps), 0) FROM learners "
            "WHERE run_id = ?",
            (run_id,),
        ).fetchone()
    # per-clip counters: the packed base with the pending deltas folded in, as stored
    engine = create_store_engine(f"sqlite:///{db_path}")
    try:
        repo = Repository(engine.dialect)
        with engine.connect() as conn:
            stats = fold(
                repo.clip_state(conn, run_id),
                [delta for _, _, delta in repo.clip_deltas(conn, run_id)],
            )
    finally:
        engine.dispose()
    clip_stats = {
        clip: (int(episodes), int(steps))
        for clip, (episodes, steps) in enumerate(zip(stats.episodes, stats.steps, strict=True))
    }
    return {
        "integrity": integrity,
        "total_episodes": total_episodes,
        "total_steps": total_steps,
        "outcomes": {episode: (clip, steps) for episode, clip, steps in rows},
        "outcome_rows": len(rows),
        "clip_stats": clip_stats,
        "learner_episodes": learner_episodes,
        "learner_steps": learner_steps,
    }


def test_the_store_runs_with_wal_and_synchronous_full(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'settings.db'}")
    try:
        with engine.connect() as conn:
            journal = conn.execute(text("PRAGMA journal_mode")).scalar_one()
            synchronous = conn.execute(text("PRAGMA synchronous")).scalar_one()
    finally:
        engine.dispose()
    assert (journal, synchronous) == ("wal", 2)  # 2 = FULL: fsync of the WAL at every commit


@pytest.mark.parametrize(
    "profile", [FAST, pytest.param(SLOW, marks=pytest.mark.slow)], ids=lambda p: p.name
)
def test_acknowledged_outcomes_survive_kill_9_and_are_counted_exactly_once(
    tmp_path: Path, profile: Profile
) -> None:
    db_path = tmp_path / "durable.db"
    scheduler = RestartableScheduler(f"sqlite:///{db_path}", tmp_path)
    rng = random.Random(7)
    deadline = time.monotonic() + profile.deadline_seconds
    stop = threading.Event()
    logs = [ClientLog() for _ in range(CLIENTS)]
    threads = [
        threading.Thread(
            target=posting_client,
            args=(i, scheduler.url, stop, deadline, logs[i]),
            name=f"poster-{i}",
        )
        for i in range(CLIENTS)
    ]
    began = time.monotonic()
    try:
        scheduler.start()
        spec = {
            "name": RUN,
            "clips": [{"name": c} for c in CLIPS],
            "strategy": {"kind": "controller", "update_every_steps": UPDATE_EVERY_STEPS},
        }
        assert httpx.post(f"{scheduler.url}/runs", json=spec).status_code == 201
        for thread in threads:
            thread.start()
        for _ in range(profile.kills):
            time.sleep(rng.uniform(*profile.up_seconds))
            scheduler.kill()
            scheduler.start()
        time.sleep(profile.up_seconds[1])  # a last stretch of posting on the final generation
        stop.set()
        for thread in threads:
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "a client did not finish"
        served = httpx.get(f"{scheduler.url}/runs/{RUN}").json()
    finally:
        stop.set()
        scheduler.stop()
    elapsed = time.monotonic() - began

    errors = [e for log in logs for e in log.errors]
    assert not errors, errors[:5]
    acknowledged: dict[str, tuple[int, int]] = {}
    for log in logs:
        acknowledged.update(log.acknowledged)
    stored = stored_state(db_path)
    stored_ids = set(stored["outcomes"])
    lost = len(set(acknowledged) - stored_ids)
    phantom = len(stored_ids - set(acknowledged))
    counter_episodes = sum(episodes for episodes, _ in stored["clip_stats"].values())
    duplicated = counter_episodes - len(stored_ids)
    expected_clips = Counter(clip for clip, _ in acknowledged.values())
    expected_steps: Counter[int] = Counter()
    for clip, steps in acknowledged.values():
        expected_steps[clip] += steps
    served_clips = {c["id"]: (c["episodes"], c["steps"]) for c in served["clips"]}

    line = (
        f"{profile.kills} kills, {len(acknowledged):,} outcomes acknowledged by {CLIENTS} "
        f"clients, lost {lost}, duplicated {duplicated}, integrity {stored['integrity']} "
        f"({sum(log.recovered for log in logs)} retried batches found already committed, "
        f"{elapsed:.0f} s)"
    )
    record_guarantee(
        1,
        line,
        variant=profile.name,
        kills=profile.kills,
        clients=CLIENTS,
        acknowledged=len(acknowledged),
        lost=lost,
        duplicated=duplicated,
        phantom=phantom,
        integrity=stored["integrity"],
        recovered_batches=sum(log.recovered for log in logs),
        retries=sum(log.retries for log in logs),
        start_seconds_median=round(statistics.median(scheduler.start_seconds), 2),
        seconds=round(elapsed, 1),
    )
    assert len(acknowledged) > 0
    assert lost == 0, line
    assert phantom == 0, line
    assert duplicated == 0, line
    assert stored["outcome_rows"] == len(stored_ids)
    assert stored["integrity"] == "ok"
    # every counter equals the sum over the accepted outcomes
    assert stored["total_episodes"] == len(acknowledged)
    assert stored["total_steps"] == sum(expected_steps.values())
    assert (stored["learner_episodes"], stored["learner_steps"]) == (
        len(acknowledged),
        sum(expected_steps.values()),
    )
    for clip in range(len(CLIPS)):
        expected = (expected_clips[clip], expected_steps[clip])
        assert stored["clip_stats"].get(clip, (0, 0)) == expected
        assert served_clips[clip] == expected
    assert served["totals"]["episodes"] == len(acknowledged)
