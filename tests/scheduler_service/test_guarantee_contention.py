"""Guarantee 3: lock contention is never a 500 nor a lost write.

32 writer threads and 4 reader threads hammer a real ``clipsched serve`` process for a
bounded time: no answer is a 5xx, no body mentions "database is locked", and the
counters equal what was acknowledged. When the writer's queue is too deep the service
sheds the request with 503 + ``Retry-After: 1`` (``ServiceOverloaded``), and the learner
client waits what the server asked before retrying.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection

from clipsched.client.http import SchedulerClient
from scheduler_service.api.app import create_app
from scheduler_service.config import Settings
from scheduler_service.errors import ServiceOverloaded
from scheduler_service.store.engine import create_store_engine
from scheduler_service.writer import Writer
from tests.guarantee_support import record_guarantee, start_scheduler
from tests.scheduler_service.helpers import outcome, run_spec
from tests.service_processes import Process, free_port, stopping

RUN = "contended"
CLIPS = ("a", "b", "c", "d")
WRITERS = 32
READERS = 4
BATCH = 8


class Tally:
    """What the threads saw: statuses, bad bodies, acknowledged episodes and steps."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self.locked_bodies = 0
        self.acknowledged = 0
        self.steps = 0
        self.transport_errors = 0

    def saw(self, response: httpx.Response) -> None:
        """Count one answer."""
        with self.lock:
            self.statuses[response.status_code] += 1
            if "database is locked" in response.text.lower():
                self.locked_bodies += 1


def writer_loop(url: str, seed: int, until: float, tally: Tally) -> None:
    """Post fresh batches until ``until``; a 503 is retried after its Retry-After."""
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30.0) as client:
        batch_no = 0
        while time.monotonic() < until:
            batch = [
                outcome(
                    rng.choice(CLIPS),
                    steps=rng.randint(1, 20),
                    episode_id=f"w{seed}-{batch_no}-{i}",
                )
                for i in range(BATCH)
            ]
            body = {"learner_id": f"writer-{seed}", "outcomes": batch}
            for _ in range(20):
                try:
                    response = client.post(f"/runs/{RUN}/outcomes", json=body)
                except httpx.TransportError:
                    with tally.lock:
                        tally.transport_errors += 1
                    continue
                tally.saw(response)
                if response.status_code == 200:
                    with tally.lock:
                        tally.acknowledged += response.json()["accepted"]
                        tally.steps += sum(o["steps"] for o in batch)
                    break
                time.sleep(float(response.headers.get("Retry-After", "0.1")))
            batch_no += 1


def reader_loop(url: str, until: float, tally: Tally) -> None:
    """Read the run state and sample clips until ``until``."""
    with httpx.Client(base_url=url, timeout=30.0) as client:
        while time.monotonic() < until:
            tally.saw(client.get(f"/runs/{RUN}"))
            tally.saw(client.get(f"/runs/{RUN}/next-clips", params={"n": 64}))


def contend(tmp_path: Path, seconds: float) -> dict[str, Any]:
    """Run the writers and readers against a server process; the figures."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tally = Tally()
    processes: list[Process] = []
    with stopping(processes):
        processes.append(start_scheduler("server", tmp_path / "c.db", port, tmp_path))
        spec = run_spec(RUN, CLIPS, strategy={"kind": "controller", "update_every_steps": 500})
        assert httpx.post(f"{url}/runs", json=spec, timeout=10).status_code == 201
        until = time.monotonic() + seconds
        threads = [
            threading.Thread(target=writer_loop, args=(url, s, until, tally))
            for s in range(WRITERS)
        ] + [threading.Thread(target=reader_loop, args=(url, until, tally)) for _ in range(READERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=seconds + 60)
        state = httpx.get(f"{url}/runs/{RUN}", timeout=10).json()
        log = processes[-1].log_tail(200_000)
    server_errors = sum(n for code, n in tally.statuses.items() if code >= 500)
    return {
        "seconds": seconds,
        "requests": sum(tally.statuses.values()),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "server_errors": server_errors,
        "locked_bodies": tally.locked_bodies,
        "locked_in_log": log.lower().count("database is locked"),
        "transport_errors": tally.transport_errors,
        "acknowledged": tally.acknowledged,
        "episodes_counted": sum(c["episodes"] for c in state["clips"]),
        "total_episodes": state["totals"]["episodes"],
        "steps_acknowledged": tally.steps,
        "total_steps": state["totals"]["steps"],
        "updates": state["totals"]["updates"],
    }


def check_and_record(figures: dict[str, Any]) -> None:
    """Assert the guarantee and report the figures."""
    record_guarantee(
        3,
        f"{WRITERS} writers + {READERS} readers for {figures['seconds']:.0f} s: "
        f"{figures['requests']} requests, 5xx={figures['server_errors']}, "
        f"'database is locked' bodies={figures['locked_bodies']}, acknowledged="
        f"{figures['acknowledged']} counted={figures['episodes_counted']} "
        f"steps {figures['steps_acknowledged']}/{figures['total_steps']}",
        **figures,
    )
    assert figures["server_errors"] == 0
    assert figures["locked_bodies"] == 0
    assert figures["transport_errors"] == 0
    assert figures["acknowledged"] > 0
    assert figures["episodes_counted"] == figures["acknowledged"] == figures["total_episodes"]
    assert figures["total_steps"] == figures["steps_acknowledged"]


def test_contention_is_never_a_500_nor_a_lost_write(tmp_path: Path) -> None:
    check_and_record(contend(tmp_path, seconds=8.0))


@pytest.mark.slow
def test_contention_for_a_minute_is_never_a_500_nor_a_lost_write(tmp_path: Path) -> None:
    check_and_record(contend(tmp_path, seconds=60.0))


def test_a_full_writer_queue_sheds_with_service_overloaded(tmp_path: Path) -> None:
    engine = create_store_engine(str(tmp_path / "w.db"))
    writer = Writer(engine, max_queue=2)
    release = threading.Event()
    running = threading.Event()

    def blocking(conn: Connection) -> int:
        running.set()
        release.wait(10)
        return 1

    try:
        first = writer.submit(blocking)
        assert running.wait(10)
        queued = [writer.submit(lambda conn: 2), writer.submit(lambda conn: 3)]
        with pytest.raises(ServiceOverloaded) as shed:
            writer.submit(lambda conn: 4)
        assert shed.value.retry_after == 1.0
        release.set()
        assert [first.result(10)] + [f.result(10) for f in queued] == [1, 2, 3]
    finally:
        release.set()
        writer.close()
        engine.dispose()


@pytest.mark.anyio
async def test_an_overloaded_service_answers_503_with_retry_after(sqlite_url: str) -> None:
    app = create_app(Settings(database_url=sqlite_url))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://scheduler") as client,
    ):
        assert (await client.post("/runs", json=run_spec(RUN, CLIPS))).status_code == 201
        app.state.service._writer.max_queue = 0  # every write is now shed
        body = {"learner_id": "l0", "outcomes": [outcome("a")]}
        response = await client.post(f"/runs/{RUN}/outcomes", json=body)
        app.state.service._writer.max_queue = 1024
        state = (await client.get(f"/runs/{RUN}")).json()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert state["totals"]["episodes"] == 0


def test_the_learner_client_waits_the_retry_after_it_is_given() -> None:
    answers = iter([503, 503, 200])
    slept: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        code = next(answers)
        if code == 503:
            return httpx.Response(503, json={"detail": "queued"}, headers={"Retry-After": "1"})
        return httpx.Response(200, json={"accepted": 1, "duplicates": [], "state_version": 1})

    client = SchedulerClient(
        "http://scheduler",
        RUN,
        learner_id="l0",
        transport=httpx.MockTransport(handler),
        sleep=slept.append,
        retries=3,
    )
    with client:
        client.report_payloads([outcome("a")])
    assert slept == [1.0, 1.0]
