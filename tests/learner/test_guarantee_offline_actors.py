"""Guarantee 5: actors never block on the scheduler.

A ``SchedulerClipSource`` runs against a real ``clipsched serve`` process that is stopped
(for 3 s; 30 s with ``--slow``) and restarted on the same SQLite file. The actor loop
(``next_clip`` at each reset, ``report`` at each episode end) keeps going throughout;
the p99 of one reset (``next_clip``) stays under 1 ms; outcomes wait in the on-disk
buffer (cap stated below, drops counted) and are flushed with their original episode
ids after the restart: nothing is stored twice and the server counts exactly the
outcomes produced.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from clipsched.client import SchedulerClipSource
from clipsched.clip_source import Outcome
from tests.guarantee_support import record_guarantee, start_scheduler
from tests.service_processes import Process, free_port, stopping

RUN = "offline"
CLIPS = ("a", "b", "c", "d")
BUFFER_CAP = 100_000
"""Outcomes the on-disk buffer holds before the oldest are dropped."""
EPISODE_SECONDS = 0.001
"""The actor's pause between episodes (bounds the outcome rate to ~1k/s)."""


def actor_loop(
    source: SchedulerClipSource, seconds: float, produced: list[str], resets_ns: list[int]
) -> int:
    """Play episodes for ``seconds``; returns the largest backlog (pending + buffered) seen."""
    backlog = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.perf_counter_ns()
        clip = source.next_clip()
        resets_ns.append(time.perf_counter_ns() - started)
        episode_id = f"actor-{len(produced):07d}"
        source.report(Outcome(episode_id, clip, 10, 1.0, 1.0))
        produced.append(episode_id)
        if len(produced) % 200 == 0:
            stats = source.stats()
            backlog = max(backlog, stats.pending + stats.buffered)
        time.sleep(EPISODE_SECONDS)
    return backlog


def offline_run(tmp_path: Path, down_seconds: float) -> dict[str, Any]:
    """Up 1 s, down ``down_seconds``, up again 1 s, then flush; the figures."""
    database = tmp_path / "offline.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    produced: list[str] = []
    resets_ns: list[int] = []
    processes: list[Process] = []
    with stopping(processes):
        processes.append(start_scheduler("server-0", database, port, tmp_path))
        source = SchedulerClipSource.for_run(
            url,
            RUN,
            learner_id="actor",
            clip_names=CLIPS,
            preset=None,
            buffer_dir=tmp_path / "buffer",
            buffer_cap_outcomes=BUFFER_CAP,
            flush_every_s=0.2,
            retry_s=0.1,
            max_retry_s=0.5,
        )
        try:
            actor_loop(source, 1.0, produced, resets_ns)
            processes[-1].stop()
            produced_before_down = len(produced)
            backlog = actor_loop(source, down_seconds, produced, resets_ns)
            produced_while_down = len(produced) - produced_before_down
            processes.append(start_scheduler("server-1", database, port, tmp_path))
            actor_loop(source, 1.0, produced, resets_ns)
            flushed = source.flush(timeout=30.0)
            stats = source.stats()
        finally:
            source.close()
        state = httpx.get(f"{url}/runs/{RUN}", timeout=10).json()
    with sqlite3.connect(database) as conn:
        stored = [r[0] for r in conn.execute("SELECT episode_id FROM outcomes")]
    latencies = np.asarray(resets_ns, dtype=np.float64) / 1e6
    return {
        "down_seconds": down_seconds,
        "produced": len(produced),
        "produced_while_down": produced_while_down,
        "max_backlog": backlog,
        "buffer_cap": BUFFER_CAP,
        "flushed": flushed,
        "dropped": stats.dropped_outcomes,
        "rejected": stats.rejected_outcomes,
        "resent_duplicates": stats.duplicates,
        "fallback_draws": stats.fallback_draws,
        "server_episodes": state["totals"]["episodes"],
        "stored_rows": len(stored),
        "stored_duplicates": len(stored) - len(set(stored)),
        "missing_ids": len(set(produced) - set(stored)),
        "reset_p50_ms": round(float(np.percentile(latencies, 50)), 5),
        "reset_p99_ms": round(float(np.percentile(latencies, 99)), 5),
        "reset_max_ms": round(float(latencies.max()), 3),
    }


def check_and_record(figures: dict[str, Any]) -> None:
    """Assert the guarantee and report the figures."""
    record_guarantee(
        5,
        f"server down {figures['down_seconds']:.0f} s: actor produced {figures['produced']} "
        f"({figures['produced_while_down']} while down, backlog peak {figures['max_backlog']}, "
        f"cap {figures['buffer_cap']}), reset p99 {figures['reset_p99_ms']:.4f} ms, "
        f"dropped={figures['dropped']}, stored duplicates={figures['stored_duplicates']}, "
        f"server count {figures['server_episodes']} == produced {figures['produced']}",
        **figures,
    )
    assert figures["produced_while_down"] > 0  # the loop kept going while the server was away
    assert figures["reset_p99_ms"] < 1.0
    assert figures["flushed"]
    assert figures["dropped"] == 0 and figures["rejected"] == 0
    assert figures["stored_duplicates"] == 0
    assert figures["missing_ids"] == 0  # flushed with the original ids
    assert figures["server_episodes"] == figures["produced"] == figures["stored_rows"]


def test_an_actor_keeps_going_while_the_scheduler_is_down_for_3_s(tmp_path: Path) -> None:
    check_and_record(offline_run(tmp_path, down_seconds=3.0))


@pytest.mark.slow
def test_an_actor_keeps_going_while_the_scheduler_is_down_for_30_s(tmp_path: Path) -> None:
    check_and_record(offline_run(tmp_path, down_seconds=30.0))
