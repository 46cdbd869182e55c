"""The clip scheduler's Python client, for any trainer; importable without torch.

One import for a training loop::

    from clipsched.client import Outcome, SchedulerClient, SchedulerClipSource

- ``SchedulerClient`` (``http``): the REST API with retries, failover over several
  scheduler URLs (``endpoints``) and ``SchedulerError`` for refusals.
- ``SchedulerClipSource`` (``source``): ``next_clip()`` from a prefetch queue (never waits
  on the network; falls back to the last known ``clip_probs``), ``report(outcome)`` in
  batches from a background thread, spilled to the on-disk ``OutcomeBuffer`` (``buffer``,
  under ``default_buffer_dir``) while the scheduler is unreachable.
- ``Outcome``, ``ActorConfig``, ``StaticClipSource`` (``clipsched.clip_source``): the episode
  report, what an actor needs to shape rewards, and in-process sampling without a server.
"""

from clipsched.client.buffer import OutcomeBuffer, default_buffer_dir
from clipsched.client.http import (
    EpisodeIds,
    NextClips,
    ReportResult,
    SchedulerClient,
    SchedulerError,
    SchedulerUnavailable,
)
from clipsched.client.source import ClipSourceStats, SchedulerClipSource
from clipsched.clip_source import ActorConfig, ClipSource, Outcome, StaticClipSource

__all__ = [
    "ActorConfig",
    "ClipSource",
    "ClipSourceStats",
    "EpisodeIds",
    "NextClips",
    "Outcome",
    "OutcomeBuffer",
    "ReportResult",
    "SchedulerClient",
    "SchedulerClipSource",
    "SchedulerError",
    "SchedulerUnavailable",
    "StaticClipSource",
    "default_buffer_dir",
]
