"""Several scheduler URLs: parsing, the preferred replica, failover and the cooldown."""

from __future__ import annotations

import httpx
import pytest

from clipsched.client.endpoints import (
    FailoverTransport,
    connect,
    preferred_index,
    split_urls,
)

A, B = "http://sched-a:8000", "http://sched-b:9000/prefix"


class Replicas:
    """A fake network: which hosts are down or overloaded, and what each one received."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.overloaded: set[str] = set()
        self.seen: list[tuple[str, str, str, bytes]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        self.seen.append((host, request.url.path, request.headers["host"], request.content))
        if host in self.overloaded:
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(200, json={"host": host})


def make_client(
    replicas: Replicas, *, preferred: int = 0, now: list[float] | None = None
) -> httpx.Client:
    clock = now if now is not None else [0.0]
    transport = FailoverTransport(
        [A, B],
        preferred=preferred,
        cooldown_s=5.0,
        inner=httpx.MockTransport(replicas.handler),
        clock=lambda: clock[0],
    )
    return httpx.Client(base_url=A, transport=transport)


def test_split_urls_accepts_one_or_several_and_rejects_junk() -> None:
    assert split_urls("http://a:1/") == ("http://a:1",)
    assert split_urls(" http://a:1 , http://b:2/x/ ") == ("http://a:1", "http://b:2/x")
    for bad in ("", " , ", "a:1", "ftp://a", "http://a:1,http://a:1"):
        with pytest.raises(ValueError):
            split_urls(bad)


def test_connect_keeps_the_default_transport_for_one_url() -> None:
    assert connect("http://a:1/") == ("http://a:1", None)
    base, transport = connect("http://a:1,http://b:2", key="seed0")
    assert base == "http://a:1"
    assert isinstance(transport, FailoverTransport)
    assert transport.preferred_url == ("http://a:1", "http://b:2")[preferred_index("seed0", 2)]


def test_preferred_replica_spreads_learner_ids_over_replicas() -> None:
    picks = {preferred_index(f"learner-{i}", 2) for i in range(20)}
    assert picks == {0, 1}
    assert preferred_index("learner-3", 2) == preferred_index("learner-3", 2)
    assert preferred_index(None, 3) == 0


def test_requests_go_to_the_preferred_replica_with_path_host_and_body_rewritten() -> None:
    replicas = Replicas()
    with make_client(replicas, preferred=1) as client:
        answer = client.post("/runs/r/outcomes", content=b'{"x":1}')
    assert answer.json() == {"host": "sched-b"}
    assert replicas.seen == [("sched-b", "/prefix/runs/r/outcomes", "sched-b:9000", b'{"x":1}')]


def test_a_refused_connection_fails_over_and_the_replica_is_skipped_until_cooldown() -> None:
    replicas = Replicas()
    now = [0.0]
    replicas.down.add("sched-a")
    with make_client(replicas, now=now) as client:
        assert client.get("/health").json() == {"host": "sched-b"}
        replicas.down.clear()
        assert client.get("/health").json() == {"host": "sched-b"}  # a still cooling down
        now[0] = 6.0
        assert client.get("/health").json() == {"host": "sched-a"}  # preferred again
    assert [s[0] for s in replicas.seen] == ["sched-b", "sched-b", "sched-a"]


def test_an_overloaded_replica_fails_over_but_the_last_answer_is_returned() -> None:
    replicas = Replicas()
    replicas.overloaded.add("sched-a")
    with make_client(replicas) as client:
        assert client.get("/health").status_code == 200
        replicas.overloaded.add("sched-b")
        assert client.get("/health").status_code == 503  # every replica tried, none took it


def test_when_every_replica_is_unreachable_the_connect_error_is_raised() -> None:
    replicas = Replicas()
    replicas.down.update({"sched-a", "sched-b"})
    with make_client(replicas) as client, pytest.raises(httpx.ConnectError):
        client.get("/health")
