"""The on-disk outcome buffer of ``SchedulerClipSource``: nothing is lost while the
scheduler is unreachable.

Outcomes that cannot be posted go to fsync'ed JSON-lines segment files under
``default_buffer_dir(run, learner_id)`` = ``$XDG_CACHE_HOME/clipsched/outcomes/<run>/
<learner_id>`` (``~/.cache/...`` without ``XDG_CACHE_HOME``), kept across restarts and
flushed oldest first when the scheduler answers again, with their original episode ids.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: no cross-process buffer lock
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


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
