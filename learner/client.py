"""The Python client of the clip scheduler, for any trainer.

``SchedulerClient`` is a thin, retrying wrapper over the REST API (``docs/api.md``).
``SchedulerClipSource`` implements the ``ClipSource`` seam on top of it so that an
actor never waits on the network: a background thread keeps a prefetch queue of clip
ids, ``next_clip()`` falls back to sampling the last known ``clip_probs`` when that queue
is empty, and finished episodes are posted in batches by a flusher thread that spills
to a bounded on-disk buffer (``OutcomeBuffer``) while the scheduler is unreachable. The
buffer keeps the original episode ids, so the scheduler's idempotency counts every
outcome exactly once when it comes back.

This module must stay importable without torch.
"""

from __future__ import annotations

import bisect
import collections
import email.utils
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast, get_args
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from learner.clip_source import ActorConfig, AggregationKind, Outcome
from learner.endpoints import connect

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: no cross-process buffer lock
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

MAX_NEXT_CLIPS = 4096
"""Largest ``n`` the scheduler accepts on ``next-clips``."""
MAX_OUTCOMES_PER_BATCH = 1024
"""Largest outcome batch the scheduler accepts (413 past that)."""
_AGGREGATIONS: frozenset[str] = frozenset(get_args(AggregationKind))
_RETRY_AFTER_CAP_S = 30.0


# --------------------------------------------------------------------------------------
# Errors and results
# --------------------------------------------------------------------------------------


class SchedulerError(Exception):
    """The scheduler refused a request (4xx/5xx) or could not be reached."""

    def __init__(self, message: str, *, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class SchedulerUnavailable(SchedulerError):
    """No answer after every retry: connection errors, timeouts or 5xx."""


def format_detail(detail: Any) -> str:
    """The server's ``detail`` as one readable line (pydantic error lists included)."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc", ()))
                msg = str(item.get("msg", item))
                parts.append(f"{loc}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, Mapping):
        return orjson.dumps(detail).decode()
    return str(detail)


@dataclass(frozen=True)
class NextClips:
    """Answer of ``next-clips``: clip ids, the state version, and the config when it changed."""

    clip_ids: tuple[int, ...]
    state_version: int
    actor_config: ActorConfig | None


@dataclass(frozen=True)
class ReportResult:
    """Answer of ``outcomes``: how many were stored and which ids were already known."""

    accepted: int
    duplicates: tuple[str, ...]
    state_version: int


class EpisodeIds:
    """Globally unique episode ids: ``{learner_id}-{session}-{counter:09d}``."""

    def __init__(self, learner_id: str, session: str | None = None) -> None:
        self.prefix = f"{learner_id}-{session or uuid.uuid4().hex[:8]}"
        self._counter = itertools.count()

    def __call__(self) -> str:
        """The next id (thread-safe: ``itertools.count`` advances atomically)."""
        return f"{self.prefix}-{next(self._counter):09d}"

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return self()


# --------------------------------------------------------------------------------------
# Wire format helpers
# --------------------------------------------------------------------------------------


def outcome_payload(outcome: Outcome, term_names: Sequence[str] = ()) -> dict[str, Any]:
    """One outcome as the JSON object of ``POST /runs/{run}/outcomes``."""
    payload: dict[str, Any] = {
        "episode_id": outcome.episode_id,
        "clip": int(outcome.clip_id),
        "steps": int(outcome.steps),
        "return": float(outcome.episode_return),
        "success": float(outcome.success),
    }
    if outcome.term_count > 0 and outcome.term_mean:
        if len(term_names) != len(outcome.term_mean):
            raise ValueError(
                f"outcome {outcome.episode_id} has {len(outcome.term_mean)} reward terms "
                f"but {len(term_names)} term names were given"
            )
        count = int(outcome.term_count)
        payload["reward_terms"] = {
            # sum = mean * count; m2 = sum of squared deviations from the mean
            name: {"sum": float(mean) * count, "count": count, "mean": float(mean), "m2": float(m2)}
            for name, mean, m2 in zip(term_names, outcome.term_mean, outcome.term_m2, strict=True)
        }
    return payload


def actor_config_from_json(data: Mapping[str, Any], state_version: int) -> ActorConfig:
    """Parse the ``actor_config`` object of ``next-clips`` (terms in the server's order)."""
    names = tuple(str(n) for n in data["clip_names"])
    k = len(names)
    probs = _finite_vector(data["clip_probs"], k, "clip_probs")
    weights = _finite_vector(data.get("reward_weights", probs), k, "reward_weights")
    aggregation = data.get("aggregation") or {}
    kind = str(aggregation.get("kind", "max"))
    if kind not in _AGGREGATIONS:
        raise SchedulerError(f"unknown aggregation kind {kind!r} in actor_config")
    norm = data.get("normalizers") or {}
    terms = tuple(str(t) for t in norm.get("terms", ()))
    shape = (k, len(terms))
    mean = np.asarray(norm.get("mean") or np.zeros(shape), dtype=np.float64).reshape(shape)
    std = np.asarray(norm.get("std") or np.zeros(shape), dtype=np.float64).reshape(shape)
    counts = norm.get("count")
    return ActorConfig(
        state_version=int(state_version),
        clip_names=names,
        clip_probs=probs,
        reward_weights=weights,
        aggregation=cast(AggregationKind, kind),
        temperature=float(aggregation.get("temperature", 0.3)),
        threshold_delta=float(aggregation.get("threshold_delta", 0.5)),
        term_names=terms,
        norm_mean=mean,
        norm_std=std,
        **(
            {"norm_count": np.asarray(counts, dtype=np.float64).reshape(shape)}
            if counts is not None
            else {}
        ),
    )


def default_actor_config(clip_names: Sequence[str], term_names: Sequence[str]) -> ActorConfig:
    """The config before any contact: uniform probs and weights, ``max``, unusable normalisers."""
    k, t = len(clip_names), len(term_names)
    uniform = np.full(k, 1.0 / k) if k else np.zeros(0)
    return ActorConfig(
        state_version=0,
        clip_names=tuple(clip_names),
        clip_probs=uniform,
        reward_weights=uniform.copy(),
        aggregation="max",
        temperature=0.3,
        threshold_delta=0.5,
        term_names=tuple(term_names),
        norm_mean=np.zeros((k, t)),
        norm_std=np.ones((k, t)),
        norm_count=np.zeros((k, t)),
    )


def with_term_order(config: ActorConfig, term_names: Sequence[str]) -> ActorConfig:
    """Reorder normaliser columns to ``term_names``; missing terms get mean 0, std 0, count 0."""
    if not term_names or tuple(term_names) == config.term_names:
        return config
    k = len(config.clip_names)
    index = {name: j for j, name in enumerate(config.term_names)}
    cols = [index.get(name) for name in term_names]

    def pick(a: np.ndarray) -> np.ndarray:
        out = np.zeros((k, len(term_names)))
        for j, col in enumerate(cols):
            if col is not None:
                out[:, j] = a[:, col]
        return out

    has_count = config.norm_count.shape == config.norm_mean.shape
    return replace(
        config,
        term_names=tuple(term_names),
        norm_mean=pick(config.norm_mean),
        norm_std=pick(config.norm_std),
        norm_count=pick(config.norm_count) if has_count else np.zeros((0, 0)),
    )


def _finite_vector(values: Any, k: int, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (k,) or not np.isfinite(arr).all() or (arr < 0).any():
        raise SchedulerError(f"actor_config.{name} is not {k} finite non-negative numbers")
    return arr


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# --------------------------------------------------------------------------------------
# The REST client
# --------------------------------------------------------------------------------------


class SchedulerClient:
    """Retrying keep-alive client of one scheduler, bound to one run and one learner.

    Retries (exponential backoff with jitter, ``backoff * 2**attempt`` capped at
    ``max_backoff``, times a factor in [0.5, 1]) on connection errors, timeouts and 5xx;
    a 503 with ``Retry-After`` waits what the server asked. Never retries a 4xx: it
    raises ``SchedulerError`` with the server's detail.
    """

    def __init__(
        self,
        url: str,
        run: str | None,
        *,
        learner_id: str,
        token: str | None = None,
        timeout: float = 2.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        transport: httpx.BaseTransport | None = None,
        rng: np.random.Generator | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.run = run
        self.learner_id = learner_id
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._rng = rng if rng is not None else np.random.default_rng()
        self._sleep = sleep
        headers = {"Accept": "application/json", "User-Agent": "clipsched-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # ``url`` may list several replicas ("http://a:8000,http://b:8000"): the failover
        # transport prefers one by a stable hash of the learner id and moves on when it fails.
        base_url, failover = connect(url, key=learner_id)
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport or failover
        )

    # ----- plumbing ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the keep-alive connections."""
        self._http.close()

    def __enter__(self) -> SchedulerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run_path(self, run: str | None, suffix: str = "") -> str:
        name = run if run is not None else self.run
        if not name:
            raise ValueError("no run given and the client is not bound to one")
        return f"/runs/{quote(name, safe='')}{suffix}"

    def _backoff_delay(self, attempt: int) -> float:
        """Equal jitter: d = min(max_backoff, backoff * 2**attempt) * U(0.5, 1)."""
        base = min(self.max_backoff, self.backoff * (2.0**attempt))
        return float(base * self._rng.uniform(0.5, 1.0))

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send with retries; the decoded JSON answer, or ``SchedulerError``."""
        content = None if body is None else orjson.dumps(body)
        hdrs = dict(headers or {})
        if content is not None:
            hdrs["Content-Type"] = "application/json"
        what = f"{method} {path}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(
                    method, path, params=params, content=content, headers=hdrs
                )
            except httpx.UnsupportedProtocol as exc:
                raise SchedulerError(f"{what}: {exc}") from exc
            except httpx.TransportError as exc:
                if last:
                    raise SchedulerUnavailable(
                        f"{what}: scheduler at {self.url} unreachable after "
                        f"{attempt + 1} attempts: {type(exc).__name__}: {exc}"
                    ) from exc
                logger.debug("%s failed (%s); retrying", what, exc)
                self._sleep(self._backoff_delay(attempt))
                continue
            status = response.status_code
            if status < 400:
                return orjson.loads(response.content) if response.content else None
            if status >= 500 and not last:
                wait = None
                if status == 503:
                    wait = _retry_after_seconds(response.headers.get("Retry-After"))
                if wait is None:
                    wait = self._backoff_delay(attempt)
                logger.debug("%s answered %d; retrying in %.3fs", what, status, wait)
                self._sleep(min(wait, _RETRY_AFTER_CAP_S))
                continue
            raise self._error(what, response, unavailable=status >= 500)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns

    @staticmethod
    def _error(what: str, response: httpx.Response, *, unavailable: bool) -> SchedulerError:
        try:
            detail = orjson.loads(response.content).get("detail", response.text)
        except (orjson.JSONDecodeError, AttributeError):
            detail = response.text or response.reason_phrase
        cls = SchedulerUnavailable if unavailable else SchedulerError
        return cls(
            f"{what}: {response.status_code} {format_detail(detail)}",
            status_code=response.status_code,
            detail=detail,
        )

    # ----- the API -----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return cast(dict[str, Any], self._request("GET", "/health"))

    def create_run(self, spec: Mapping[str, Any], *, exist_ok: bool = False) -> dict[str, Any]:
        """``POST /runs``; with ``exist_ok`` a 409 returns the existing run's state instead."""
        try:
            return cast(dict[str, Any], self._request("POST", "/runs", body=dict(spec)))
        except SchedulerError as exc:
            if exist_ok and exc.status_code == 409:
                return self.run_state(str(spec["name"]))
            raise

    def list_runs(self) -> list[dict[str, Any]]:
        """``GET /runs`` as a list of run summaries."""
        answer = self._request("GET", "/runs")
        if isinstance(answer, Mapping):
            answer = answer.get("runs", [])
        return cast(list[dict[str, Any]], answer)

    def run_state(self, run: str | None = None) -> dict[str, Any]:
        """``GET /runs/{run}``: clips, targets, usage, learners, totals."""
        return cast(dict[str, Any], self._request("GET", self._run_path(run)))

    def history(self, run: str | None = None, *, since_update: int = 0) -> list[dict[str, Any]]:
        """``GET /runs/{run}/history``: one row per controller update (p, u, w, success)."""
        answer = self._request(
            "GET", self._run_path(run, "/history"), params={"since_update": since_update}
        )
        return cast(list[dict[str, Any]], answer.get("updates", []))

    def set_targets(
        self,
        target_usage: Mapping[str, float],
        *,
        by_group: bool = False,
        if_match: int | None = None,
        run: str | None = None,
    ) -> dict[str, Any]:
        """``PUT /runs/{run}/targets`` per clip (or per group); returns the server's answer."""
        key = "target_usage_by_group" if by_group else "target_usage"
        headers = {"If-Match": str(if_match)} if if_match is not None else None
        return cast(
            dict[str, Any],
            self._request(
                "PUT",
                self._run_path(run, "/targets"),
                body={key: dict(target_usage)},
                headers=headers,
            ),
        )

    def next_clips(self, n: int, *, known_version: int | None = None) -> NextClips:
        """``n`` clip ids; the actor config too unless ``known_version`` is current."""
        params: dict[str, Any] = {"n": int(n), "learner_id": self.learner_id}
        if known_version is not None:
            params["known_version"] = int(known_version)
        answer = self._request("GET", self._run_path(None, "/next-clips"), params=params)
        version = int(answer["state_version"])
        raw_config = answer.get("actor_config")
        return NextClips(
            clip_ids=tuple(int(c) for c in answer["clip_ids"]),
            state_version=version,
            actor_config=None
            if raw_config is None
            else actor_config_from_json(raw_config, version),
        )

    def report(self, outcomes: Sequence[Outcome], term_names: Sequence[str] = ()) -> ReportResult:
        """``POST outcomes`` (at most 1,024); ``term_names`` name the outcomes' term columns."""
        return self.report_payloads([outcome_payload(o, term_names) for o in outcomes])

    def report_payloads(self, payloads: Sequence[Mapping[str, Any]]) -> ReportResult:
        """``POST outcomes`` with outcomes already in wire form (see ``outcome_payload``)."""
        body = {"learner_id": self.learner_id, "outcomes": list(payloads)}
        answer = self._request("POST", self._run_path(None, "/outcomes"), body=body)
        return ReportResult(
            accepted=int(answer.get("accepted", 0)),
            duplicates=tuple(str(d) for d in answer.get("duplicates", ())),
            state_version=int(answer.get("state_version", -1)),
        )


# --------------------------------------------------------------------------------------
# The on-disk outcome buffer
# --------------------------------------------------------------------------------------


class OutcomeBuffer:
    """Bounded FIFO of outcome payloads on disk: fsync'ed JSON-lines segment files.

    One segment per appended batch (``seg-<seq>.jsonl``, written to a temp file, fsync'ed
    and renamed, so a crash leaves whole segments only). Beyond ``cap_outcomes`` the
    oldest outcomes are dropped and counted in ``dropped``. An exclusive lock file keeps
    two processes from sharing one directory.
    """

    def __init__(self, directory: str | os.PathLike[str], cap_outcomes: int) -> None:
        if cap_outcomes < 1:
            raise ValueError("cap_outcomes must be at least 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cap = int(cap_outcomes)
        self.dropped = 0
        self._lock = threading.Lock()
        self._lock_file: Any = open(self.directory / ".lock", "a+b")  # noqa: SIM115
        try:
            if fcntl is not None:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            raise RuntimeError(
                f"outcome buffer {self.directory} is in use by another client "
                "(give each learner its own buffer_dir)"
            ) from exc
        for tmp in self.directory.glob("seg-*.jsonl.tmp"):
            tmp.unlink(missing_ok=True)
        self._segments: collections.OrderedDict[int, int] = collections.OrderedDict()
        for path in sorted(self.directory.glob("seg-*.jsonl")):
            count = sum(1 for line in path.read_bytes().splitlines() if line.strip())
            self._segments[int(path.name[4:-6])] = count
        self._next_seq = max(self._segments, default=-1) + 1
        self._total = sum(self._segments.values())
        with self._lock:
            self._make_room(0)

    def __len__(self) -> int:
        return self._total

    def counts(self) -> tuple[int, int]:
        """(buffered, dropped), read together (waits for a write in progress)."""
        with self._lock:
            return self._total, self.dropped

    def close(self) -> None:
        """Release the directory lock (files stay for the next start)."""
        if not self._lock_file.closed:
            if fcntl is not None:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()

    def _path(self, seq: int) -> Path:
        return self.directory / f"seg-{seq:012d}.jsonl"

    def _write(self, seq: int, payloads: Sequence[Mapping[str, Any]]) -> None:
        path = self._path(seq)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(orjson.dumps(p) + b"\n" for p in payloads))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read(self, seq: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for line in self._path(seq).read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                logger.warning("dropping an unreadable line of outcome segment %d", seq)
                self.dropped += 1
        return out

    def _make_room(self, incoming: int) -> None:
        """Drop the oldest outcomes so that len + incoming <= cap (lock held)."""
        excess = len(self) + incoming - self.cap
        while excess > 0 and self._segments:
            seq, count = next(iter(self._segments.items()))
            if count <= excess:
                self._path(seq).unlink(missing_ok=True)
                del self._segments[seq]
                self._total -= count
                self.dropped += count
                excess -= count
            else:
                items = self._read(seq)
                keep = items[excess:]
                self._write(seq, keep)
                self.dropped += len(items) - len(keep)
                self._segments[seq] = len(keep)
                self._total += len(keep) - count
                excess = 0

    def append(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Persist one batch as a new segment, dropping the oldest outcomes beyond the cap."""
        if not payloads:
            return
        with self._lock:
            if len(payloads) > self.cap:
                self.dropped += len(payloads) - self.cap
                payloads = payloads[len(payloads) - self.cap :]
            self._make_room(len(payloads))
            seq = self._next_seq
            self._next_seq += 1
            self._write(seq, payloads)
            self._segments[seq] = len(payloads)
            self._total += len(payloads)

    def oldest(self) -> tuple[int, list[dict[str, Any]]] | None:
        """The oldest segment's sequence number and payloads, or None when empty."""
        with self._lock:
            if not self._segments:
                return None
            seq = next(iter(self._segments))
            return seq, self._read(seq)

    def remove(self, seq: int) -> None:
        """Delete a segment once the scheduler has it."""
        with self._lock:
            count = self._segments.pop(seq, None)
            if count is not None:
                self._total -= count
                self._path(seq).unlink(missing_ok=True)


def default_buffer_dir(run: str, learner_id: str) -> Path:
    """``$XDG_CACHE_HOME/clipsched/outcomes/<run>/<learner_id>`` (stable across restarts)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "clipsched" / "outcomes" / quote(run, safe="") / quote(learner_id, safe="")


# --------------------------------------------------------------------------------------
# The ClipSource over HTTP
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSourceStats:
    """Counters of a ``SchedulerClipSource`` (a snapshot)."""

    state_version: int
    prefetched: int
    """Clip ids waiting in the prefetch queue."""
    fetched: int
    """Clip ids received from the scheduler so far."""
    fallback_draws: int
    """``next_clip`` calls served from the cached ``clip_probs`` (queue empty)."""
    fetch_errors: int
    pending: int
    """Outcomes in memory, not yet posted."""
    sent: int
    """Outcomes the scheduler accepted."""
    duplicates: int
    """Outcomes the scheduler already had (harmless re-sends)."""
    buffered: int
    """Outcomes waiting in the on-disk buffer."""
    dropped_outcomes: int
    """Oldest buffered outcomes dropped beyond the buffer cap."""
    rejected_outcomes: int
    """Outcomes the scheduler refused one by one (409/422); never re-sent."""
    flush_errors: int


class SchedulerClipSource:
    """``ClipSource`` backed by the scheduler: prefetched clips, buffered outcomes, no blocking."""

    def __init__(
        self,
        client: SchedulerClient,
        *,
        num_envs: int,
        buffer_dir: str | os.PathLike[str],
        clip_names: Sequence[str] | None = None,
        term_names: Sequence[str] = (),
        prefetch: int | None = None,
        buffer_cap_outcomes: int = 100_000,
        flush_every_s: float = 1.0,
        batch_size: int = 256,
        refresh_s: float = 5.0,
        retry_s: float = 0.5,
        max_retry_s: float = 5.0,
        close_timeout_s: float = 5.0,
        rng: np.random.Generator | None = None,
        owns_client: bool = False,
        start: bool = True,
    ) -> None:
        if not 1 <= batch_size <= MAX_OUTCOMES_PER_BATCH:
            raise ValueError(f"batch_size must be in [1, {MAX_OUTCOMES_PER_BATCH}]")
        self.client = client
        self._term_names = tuple(term_names)
        self._prefetch = int(prefetch or min(MAX_NEXT_CLIPS, max(64, 2 * num_envs)))
        self._low_water = max(1, self._prefetch // 2)
        self._batch_size = batch_size
        self._flush_every_s = flush_every_s
        self._refresh_s = refresh_s
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._close_timeout_s = close_timeout_s
        self._rng = rng if rng is not None else np.random.default_rng()
        self._owns_client = owns_client

        self._queue: collections.deque[int] = collections.deque()
        self._pending: collections.deque[Outcome] = collections.deque()
        self._inflight: list[Outcome] = []
        self._take_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_prefetch = threading.Event()
        self._wake_flush = threading.Event()
        self._contact = threading.Event()
        self._closed = False
        self._down_until = 0.0
        self._flush_failures = 0
        self._last_fetch = -float("inf")
        self._server_config = False
        # counters (each written by one thread only)
        self._fetched = 0
        self._fallback_draws = 0
        self._fetch_errors = 0
        self._sent = 0
        self._duplicates = 0
        self._rejected = 0
        self._flush_errors = 0

        self._config = default_actor_config(clip_names or (), self._term_names)
        self._cdf: tuple[float, ...] = ()
        if clip_names is None:
            self._fetch(1)  # learn the clip set now: without it there is nothing to fall back on
        else:
            self._set_cdf(self._config.clip_probs)
        self._buffer = OutcomeBuffer(buffer_dir, buffer_cap_outcomes)
        self._threads = [
            threading.Thread(target=self._prefetch_loop, name="clipsched-prefetch", daemon=True),
            threading.Thread(target=self._flush_loop, name="clipsched-flush", daemon=True),
        ]
        if start:
            self.start()

    @classmethod
    def for_run(
        cls,
        url: str,
        run: str,
        *,
        learner_id: str,
        clip_names: Sequence[str],
        term_names: Sequence[str] = (),
        preset: str | None = "design-note",
        run_spec: Mapping[str, Any] | None = None,
        num_envs: int = 16,
        token: str | None = None,
        buffer_dir: str | os.PathLike[str] | None = None,
        ready_timeout_s: float = 5.0,
        **kwargs: Any,
    ) -> SchedulerClipSource:
        """Attach to ``run`` (created with ``clip_names`` and ``preset`` if missing) and start.

        ``run_spec`` adds fields to the create request; the token defaults to
        ``$CLIPSCHED_TOKEN``; the buffer to ``default_buffer_dir(run, learner_id)``.
        """
        client = SchedulerClient(
            url, run, learner_id=learner_id, token=token or os.environ.get("CLIPSCHED_TOKEN")
        )
        try:
            spec: dict[str, Any] = {"name": run, "clips": [{"name": n} for n in clip_names]}
            if preset:
                spec["preset"] = preset
            spec.update(run_spec or {})
            state = client.create_run(spec, exist_ok=True)
            names = [str(c["name"]) for c in state.get("clips", ())]
            if names != list(clip_names):
                raise ValueError(
                    f"run {run!r} on {url} has clips {names}, this learner has {list(clip_names)}"
                )
            source = cls(
                client,
                num_envs=num_envs,
                clip_names=clip_names,
                term_names=term_names,
                buffer_dir=buffer_dir or default_buffer_dir(run, learner_id),
                owns_client=True,
                **kwargs,
            )
        except BaseException:
            client.close()
            raise
        if not source.wait_ready(ready_timeout_s):
            logger.warning("no clips from %s within %.1fs; sampling locally", url, ready_timeout_s)
        return source

    # ----- the ClipSource API (actor thread) ---------------------------------------------

    def next_clip(self) -> int:
        """Next prefetched clip id, or a local draw from the last ``clip_probs``; never blocks."""
        try:
            clip = self._queue.popleft()
        except IndexError:
            self._fallback_draws += 1
            clip = self._fallback_draw()
        if len(self._queue) < self._low_water and not self._wake_prefetch.is_set():
            self._wake_prefetch.set()
        return clip

    def report(self, outcome: Outcome) -> None:
        """Queue one finished episode for the flusher."""
        if self._closed:
            raise RuntimeError("report() on a closed SchedulerClipSource")
        if outcome.term_count > 0 and len(outcome.term_mean) != len(self._term_names):
            raise ValueError(
                f"outcome has {len(outcome.term_mean)} reward terms, "
                f"the source knows {len(self._term_names)} term names"
            )
        self._pending.append(outcome)
        if len(self._pending) >= self._batch_size and not self._wake_flush.is_set():
            self._wake_flush.set()

    def actor_config(self) -> ActorConfig:
        """The latest config from the scheduler (a uniform default before contact)."""
        return self._config

    def close(self) -> None:
        """Flush what can be flushed within ``close_timeout_s``, persist the rest, stop."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake_prefetch.set()
        self._wake_flush.set()
        prefetcher, flusher = self._threads
        if flusher.is_alive():
            flusher.join(timeout=self._close_timeout_s)
        with self._take_lock:
            # a stuck post may still succeed later: re-sending it is a harmless duplicate
            leftover = (list(self._inflight) if flusher.is_alive() else []) + self._drain_pending()
        self._persist(leftover)
        if prefetcher.is_alive():
            prefetcher.join(timeout=self._close_timeout_s)
        self._buffer.close()
        if self._owns_client:
            self.client.close()

    # ----- extras ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the prefetch and flush threads (done by the constructor unless ``start=False``)."""
        for thread in self._threads:
            if not thread.is_alive():
                thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the first answer of the scheduler; True if it came."""
        return self._contact.wait(timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        """Ask the flusher to post now; True once nothing is pending or buffered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._take_lock:
                if not self._pending and not self._inflight and len(self._buffer) == 0:
                    return True
            self._down_until = 0.0
            self._wake_flush.set()
            time.sleep(0.005)
        return False

    def stats(self) -> ClipSourceStats:
        """A snapshot of the counters."""
        buffered, dropped = self._buffer.counts()
        return ClipSourceStats(
            state_version=self._config.state_version,
            prefetched=len(self._queue),
            fetched=self._fetched,
            fallback_draws=self._fallback_draws,
            fetch_errors=self._fetch_errors,
            pending=len(self._pending) + len(self._inflight),
            sent=self._sent,
            duplicates=self._duplicates,
            buffered=buffered,
            dropped_outcomes=dropped,
            rejected_outcomes=self._rejected,
            flush_errors=self._flush_errors,
        )

    # ----- sampling and config -----------------------------------------------------------

    def _set_cdf(self, probs: np.ndarray) -> None:
        # F_i = sum_{j<=i} p_j; a draw is the first i with u * F_K < F_i
        self._cdf = tuple(float(x) for x in np.cumsum(probs))

    def _fallback_draw(self) -> int:
        cdf = self._cdf
        if not cdf or cdf[-1] <= 0.0:
            return 0
        i = bisect.bisect_right(cdf, float(self._rng.random()) * cdf[-1])
        return min(i, len(cdf) - 1)

    def _fetch(self, n: int) -> None:
        """One ``next-clips`` call; refreshes the config when the server sent one."""
        known = self._config.state_version if self._server_config else None
        answer = self.client.next_clips(n, known_version=known)
        if answer.actor_config is not None:
            self._apply_config(answer.actor_config)
        k = len(self._config.clip_names)
        usable = [c for c in answer.clip_ids if 0 <= c < k]
        self._queue.extend(usable)
        self._fetched += len(usable)
        self._last_fetch = time.monotonic()
        self._contact.set()
        if not usable:  # back off rather than ask again at once
            raise SchedulerError(f"next-clips gave no clip id in [0, {k})")

    def _apply_config(self, config: ActorConfig) -> None:
        known = self._config.clip_names
        if known and config.clip_names != known:
            logger.error(
                "scheduler clips %s differ from ours %s; ignored", config.clip_names, known
            )
            return
        self._set_cdf(config.clip_probs)
        self._config = with_term_order(config, self._term_names)
        self._server_config = True

    def _prefetch_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            stale = time.monotonic() - self._last_fetch >= self._refresh_s
            if len(self._queue) < self._low_water or stale:
                n = max(1, min(MAX_NEXT_CLIPS, self._prefetch - len(self._queue)))
                try:
                    self._fetch(n)
                except SchedulerError as exc:
                    failures += 1
                    self._fetch_errors += 1
                    log = logger.warning if failures == 1 else logger.debug
                    log("next-clips failed (%s); sampling locally meanwhile", exc)
                    self._stop.wait(self._retry_delay(failures))
                    continue
                except Exception:
                    logger.exception("next-clips answer unusable")
                    failures += 1
                    self._fetch_errors += 1
                    self._stop.wait(self._retry_delay(failures))
                    continue
                if failures:
                    logger.info("scheduler reachable again after %d failed fetches", failures)
                failures = 0
                continue
            self._wake_prefetch.wait(timeout=self._refresh_s)
            self._wake_prefetch.clear()

    def _retry_delay(self, failures: int) -> float:
        """d = min(max_retry_s, retry_s * 2**(failures - 1))."""
        return float(min(self._max_retry_s, self._retry_s * 2.0 ** (failures - 1)))

    # ----- outcomes ----------------------------------------------------------------------

    def _payloads(self, outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
        return [outcome_payload(o, self._term_names) for o in outcomes]

    def _drain_pending(self) -> list[Outcome]:
        """Everything queued in memory (caller holds ``_take_lock``)."""
        out: list[Outcome] = []
        while True:
            try:
                out.append(self._pending.popleft())
            except IndexError:
                return out

    def _take_batch(self) -> list[Outcome]:
        with self._take_lock:
            batch: list[Outcome] = []
            self._inflight = batch  # no moment where an outcome is in neither place
            while len(batch) < self._batch_size:
                try:
                    batch.append(self._pending.popleft())
                except IndexError:
                    break
            return batch

    def _persist(self, outcomes: Sequence[Outcome]) -> None:
        """Append outcomes to the disk buffer in segments of at most ``batch_size``."""
        for start in range(0, len(outcomes), self._batch_size):
            self._buffer.append(self._payloads(outcomes[start : start + self._batch_size]))

    def _spill_pending(self) -> None:
        with self._take_lock:  # held while writing, so ``flush`` never sees them nowhere
            self._persist(self._drain_pending())

    def _post(self, payloads: list[dict[str, Any]]) -> bool:
        """Post one batch; False when the scheduler is unreachable (the caller keeps it).

        A 409/413/422 rejects a batch whole, so it is split in halves until the bad outcomes
        are isolated; those are counted in ``rejected_outcomes`` and dropped.
        """
        try:
            answer = self.client.report_payloads(payloads)
        except SchedulerError as exc:
            if exc.status_code in (409, 413, 422):
                if len(payloads) == 1:
                    self._rejected += 1
                    logger.error("outcome %s rejected: %s", payloads[0].get("episode_id"), exc)
                    return True
                mid = len(payloads) // 2
                return self._post(payloads[:mid]) and self._post(payloads[mid:])
            self._flush_errors += 1
            log = logger.warning if self._flush_failures == 0 else logger.debug
            log("posting %d outcomes failed (%s); buffering on disk", len(payloads), exc)
            return False
        self._sent += answer.accepted
        self._duplicates += len(answer.duplicates)
        return True

    def _mark_down(self) -> None:
        self._flush_failures += 1
        self._down_until = time.monotonic() + self._retry_delay(self._flush_failures)

    def _flush_disk(self, deadline: float | None) -> bool:
        """Post buffered segments oldest first; False on failure or past the deadline."""
        while (deadline is None or time.monotonic() < deadline) and (
            item := self._buffer.oldest()
        ) is not None:
            seq, payloads = item
            for start in range(0, len(payloads), self._batch_size):
                if not self._post(payloads[start : start + self._batch_size]):
                    return False
            self._buffer.remove(seq)
        return deadline is None or time.monotonic() < deadline

    def _flush_memory(self, deadline: float | None) -> bool:
        """Post the in-memory queue in batches; a failed batch goes to disk."""
        while deadline is None or time.monotonic() < deadline:
            batch = self._take_batch()
            if not batch:
                return True
            payloads = self._payloads(batch)
            ok = self._post(payloads)
            if not ok:
                self._buffer.append(payloads)
            with self._take_lock:
                self._inflight = []
            if not ok:
                return False
        return False

    def _flush_cycle(self, final: bool) -> None:
        if time.monotonic() < self._down_until:
            self._spill_pending()  # known down: make the outcomes durable, retry later
            return
        deadline = time.monotonic() + self._close_timeout_s if final else None
        had_buffer = len(self._buffer)
        # normally oldest first; on close the in-memory outcomes first (disk is durable)
        steps = (
            (self._flush_memory, self._flush_disk)
            if final
            else (self._flush_disk, self._flush_memory)
        )
        for step in steps:
            if not step(deadline):
                self._spill_pending()
                if not (final and time.monotonic() >= (deadline or 0.0)):
                    self._mark_down()
                return
        if self._flush_failures or had_buffer:
            logger.info("scheduler reachable; %d buffered outcomes flushed", had_buffer)
        self._flush_failures = 0

    def _flush_loop(self) -> None:
        while True:
            stopping = self._stop.is_set()
            try:
                self._flush_cycle(final=stopping)
            except Exception:
                logger.exception("outcome flusher failed; buffering on disk")
                self._flush_errors += 1
                self._spill_pending()
                self._mark_down()
            if stopping:
                return
            self._wake_flush.wait(timeout=self._flush_every_s)
            self._wake_flush.clear()
