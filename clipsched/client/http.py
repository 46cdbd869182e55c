"""``SchedulerClient``: a thin, retrying wrapper over the scheduler's REST API
(``docs/api.md``), with its errors, results and the outcome payload on the wire.

``clipsched.client.source.SchedulerClipSource`` builds the non-blocking clip source of a
trainer on top of it. Importable without torch (the whole ``clipsched.client`` package).
"""

from __future__ import annotations

import email.utils
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast, get_args
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from clipsched.client.endpoints import connect
from clipsched.clip_source import ActorConfig, Outcome
from scheduler_service.algorithms.aggregation import AggregationKind

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
