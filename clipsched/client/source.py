"""``SchedulerClipSource``: the ``ClipSource`` of a trainer backed by the scheduler.

A background thread keeps a prefetch queue of clip ids, ``next_clip()`` falls back to
sampling the last known ``clip_probs`` when that queue is empty, and finished episodes
are posted in batches by a flusher thread that spills to the on-disk ``OutcomeBuffer``
while the scheduler is unreachable: an actor never waits on the network.
"""

from __future__ import annotations

import bisect
import collections
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipsched.client.buffer import OutcomeBuffer, default_buffer_dir
from clipsched.client.http import (
    MAX_NEXT_CLIPS,
    MAX_OUTCOMES_PER_BATCH,
    SchedulerClient,
    SchedulerError,
    default_actor_config,
    outcome_payload,
    with_term_order,
)
from clipsched.clip_source import ActorConfig, Outcome

logger = logging.getLogger(__name__)


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
