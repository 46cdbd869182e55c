"""The byte format of the packed per-clip statistics: ``ClipStats`` and ``ClipDelta`` BLOBs.

A packed value is ``u32 header length`` + a JSON header (``meta`` and, per array, its
name, little-endian dtype and shape) + the arrays' raw bytes, concatenated in header
order. numpy reads it back without copying per element, so a 10,000-clip base state
(~1.6 MB with four reward terms) packs and unpacks in about a millisecond, and a
256-outcome delta is one ~60 KB row instead of ~1,800 rows.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from scheduler_service.algorithms.clip_stats import AffineDelta, ClipDelta, ClipStats
from scheduler_service.algorithms.normalizers import Moments

_LENGTH = struct.Struct("<I")


def pack_arrays(arrays: Mapping[str, np.ndarray], meta: Any = None) -> bytes:
    """Arrays (int64 or float64, any shape) and a JSON-able ``meta`` as one byte string."""
    parts: list[bytes] = []
    specs = []
    for name, values in arrays.items():
        kind = "<i8" if np.issubdtype(values.dtype, np.integer) else "<f8"
        array = np.ascontiguousarray(values, dtype=kind)
        specs.append([name, kind, list(array.shape)])
        parts.append(array.tobytes())
    header = orjson.dumps({"meta": meta, "arrays": specs})
    return b"".join([_LENGTH.pack(len(header)), header, *parts])


def unpack_arrays(data: bytes) -> tuple[dict[str, np.ndarray], Any]:
    """The arrays and ``meta`` of ``pack_arrays``.

    The arrays are read-only views of ``data`` (no copy): ``clip_stats.fold`` copies a
    base once before updating it, and deltas are never modified.
    """
    view = memoryview(data)
    (length,) = _LENGTH.unpack_from(view, 0)
    header = orjson.loads(bytes(view[4 : 4 + length]))
    offset = 4 + length
    arrays: dict[str, np.ndarray] = {}
    for name, kind, shape in header["arrays"]:
        count = math.prod(shape)
        arrays[name] = np.frombuffer(view, dtype=kind, count=count, offset=offset).reshape(shape)
        offset += count * 8
    return arrays, header["meta"]


def pack_stats(stats: ClipStats) -> bytes:
    """The ``clip_state`` BLOB of a run."""
    m = stats.moments
    return pack_arrays(
        {
            "episodes": stats.episodes,
            "steps": stats.steps,
            "return_sum": stats.return_sum,
            "success_sum": stats.success_sum,
            "ema_success": stats.ema_success,
            "ema_return": stats.ema_return,
            "ts_successes": stats.ts_successes,
            "ts_failures": stats.ts_failures,
            "moment_count": m.count,
            "moment_mean": m.mean,
            "moment_m2": m.m2,
        },
        {"terms": list(stats.terms)},
    )


def unpack_stats(data: bytes) -> ClipStats:
    """Inverse of ``pack_stats``."""
    a, meta = unpack_arrays(data)
    return ClipStats(
        episodes=a["episodes"],
        steps=a["steps"],
        return_sum=a["return_sum"],
        success_sum=a["success_sum"],
        ema_success=a["ema_success"],
        ema_return=a["ema_return"],
        ts_successes=a["ts_successes"],
        ts_failures=a["ts_failures"],
        terms=tuple(meta["terms"]),
        moments=Moments(count=a["moment_count"], mean=a["moment_mean"], m2=a["moment_m2"]),
    )


def pack_delta(delta: ClipDelta) -> bytes:
    """The ``clip_deltas.data`` BLOB of one batch."""
    m = delta.moments
    return pack_arrays(
        {
            "clip_ids": delta.clip_ids,
            "episodes": delta.episodes,
            "steps": delta.steps,
            "return_sum": delta.return_sum,
            "success_sum": delta.success_sum,
            "ema_success_decay": delta.ema_success.decay,
            "ema_success_carry": delta.ema_success.carry,
            "ema_success_first": delta.ema_success.first,
            "ema_return_decay": delta.ema_return.decay,
            "ema_return_carry": delta.ema_return.carry,
            "ema_return_first": delta.ema_return.first,
            "ts_decay": delta.ts_decay,
            "ts_successes": delta.ts_successes,
            "ts_failures": delta.ts_failures,
            "moment_count": m.count,
            "moment_mean": m.mean,
            "moment_m2": m.m2,
        },
        {"terms": list(delta.terms)},
    )


def unpack_delta(data: bytes) -> ClipDelta:
    """Inverse of ``pack_delta``."""
    a, meta = unpack_arrays(data)
    return ClipDelta(
        clip_ids=a["clip_ids"],
        episodes=a["episodes"],
        steps=a["steps"],
        return_sum=a["return_sum"],
        success_sum=a["success_sum"],
        ema_success=AffineDelta(
            a["ema_success_decay"], a["ema_success_carry"], a["ema_success_first"]
        ),
        ema_return=AffineDelta(a["ema_return_decay"], a["ema_return_carry"], a["ema_return_first"]),
        ts_decay=a["ts_decay"],
        ts_successes=a["ts_successes"],
        ts_failures=a["ts_failures"],
        terms=tuple(meta["terms"]),
        moments=Moments(count=a["moment_count"], mean=a["moment_mean"], m2=a["moment_m2"]),
    )


def pack_counts(episodes: np.ndarray, steps: np.ndarray) -> bytes:
    """A learner's per-clip (episodes, steps) over the run's clips."""
    return pack_arrays({"episodes": episodes, "steps": steps})


def unpack_counts(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``pack_counts``."""
    a, _ = unpack_arrays(data)
    return a["episodes"], a["steps"]
