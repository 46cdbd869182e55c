"""Clip names that resolve: which clips exist, what a name means, ``clipsched clips list``.

A clip given to the humanoid env (``--clips``, ``HumanoidVecEnv(clips=...)``) is a
``MotionClip`` or a string, resolved in this order:

1. an existing file path: a DeepMimic ``.txt``/``.json`` or native ``.npz`` clip file;
2. a name of the design note's five-clip example (``Idle``, ``Walk``, ``Back``, ``Run``,
   ``Sprint``; case-sensitive), built by ``learner.clips.five_clip_example`` from
   ``clip_source`` (default: pybullet_data's walk and run when installed, else the shipped
   ones; ``"builtin"`` = the synthetic gaits);
3. a shipped clip name (``walk``, ``jog``, ``run``: DeepMimic mocap in
   ``learner/data/motions/``, MIT);
4. a pybullet_data clip name (``jump``, ``backflip``, ``cartwheel``, ...) when the extra
   ``clips`` (pybullet) is installed.

Anything else, a missing file, or a file that is not a clip raises ``ClipError`` (a
``ValueError``) with a one-line message that names the clip or file and, for an unknown
name, what is available. ``clipsched train`` prints it as ``error: ...`` and exits 2.

The planar env has its own procedural clips (``learner.envs.planar.DEFAULT_CLIPS``); its
names are listed and checked here too, but resolved by the planar env itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from learner import clips as cl
from learner.clips import FIVE_CLIPS, MotionClip

EnvName = Literal["humanoid", "planar"]

SOURCE_FIVE = "five-clip example"
SOURCE_SHIPPED = "shipped"
SOURCE_PYBULLET = "pybullet"
SOURCE_PLANAR = "planar procedural"

PYBULLET_HINT = 'pip install "clip-scheduler[clips]" adds pybullet\'s 15 DeepMimic clips'
"""What to do for more clips when pybullet is not installed."""


class ClipError(ValueError):
    """A clip name that resolves to nothing, or a clip file that cannot be loaded.

    The message is one line (whitespace runs, newlines included, become one space).
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


# --------------------------------------------------------------------------------------
# What is available
# --------------------------------------------------------------------------------------


def pybullet_clip_files() -> dict[str, Path]:
    """pybullet_data's DeepMimic clips by name ({} without the ``clips`` extra)."""
    return cl.find_motion_files()


def available_names(env: EnvName = "humanoid") -> dict[str, str]:
    """Clip name -> source for every name that resolves (files aside), in resolution order.

    A name found in several sources is listed once, under the one that wins.
    """
    if env == "planar":
        from learner.envs.planar import DEFAULT_CLIPS

        return dict.fromkeys(DEFAULT_CLIPS, SOURCE_PLANAR)
    if env != "humanoid":
        raise ClipError(f"unknown env {env!r}: expected humanoid or planar")
    names = dict.fromkeys(FIVE_CLIPS, SOURCE_FIVE)
    for name in cl.shipped_motion_names():
        names.setdefault(name, SOURCE_SHIPPED)
    for name in sorted(pybullet_clip_files()):
        names.setdefault(name, SOURCE_PYBULLET)
    return names


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or Path(text).suffix.lower() in cl.CLIP_LOADERS


def unknown_clip_message(name: str, env: EnvName = "humanoid") -> str:
    """``unknown clip 'jump': available: ...`` (one line)."""
    if _looks_like_path(name):
        return f"clip file {name!r} does not exist"
    by_source: dict[str, list[str]] = {}
    for clip, source in available_names(env).items():
        by_source.setdefault(source, []).append(clip)
    parts = [f"{', '.join(names)} ({source})" for source, names in by_source.items()]
    message = f"unknown clip {name!r}: available are {'; '.join(parts)}"
    if env == "planar":
        return message + "; DeepMimic motion clips and clip files need --env humanoid"
    message += "; or a clip file (.txt/.json DeepMimic, .npz native)"
    if not pybullet_clip_files():
        message += f"; {PYBULLET_HINT} (jump, backflip, cartwheel, ...)"
    return message


def check_clip_names(env: EnvName, clips: Iterable[str]) -> None:
    """Raise ``ClipError`` for a name that would not resolve (files are not opened here)."""
    names = available_names(env)
    for clip in clips:
        if clip in names or (env == "humanoid" and Path(clip).is_file()):
            continue
        raise ClipError(unknown_clip_message(clip, env))


# --------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------


def load_clip_file(path: str | Path) -> MotionClip:
    """``learner.clips.load_clip`` with its failures as one-line ``ClipError``s."""
    path = Path(path)
    try:
        return cl.load_clip(path)
    except (ValueError, OSError) as exc:
        text = str(exc)
        if str(path) not in text:
            text = f"{path}: {text}"
        raise ClipError(f"bad clip file {text}") from exc


def _five_clip_library(clip_source: str | Path | None, sprint_rate: float) -> dict[str, MotionClip]:
    try:
        example = cl.five_clip_example(clip_source, sprint_rate)
    except (ValueError, OSError) as exc:
        where = clip_source if clip_source is not None else cl.default_gait_source()
        raise ClipError(f"five-clip example from {where}: {exc}") from exc
    return {clip.name: clip for clip in example}


def resolve_clips(
    clips: Sequence[str | MotionClip] | None,
    clip_source: str | Path | None = None,
    sprint_rate: float = 1.4,
) -> list[MotionClip]:
    """MotionClips for file paths, names (see the module doc for the order) or clips.

    ``clips`` None or empty = the five-clip example. ``clip_source`` and ``sprint_rate``
    are ``learner.clips.five_clip_example``'s. Raises ``ClipError``.
    """
    wanted = list(clips) if clips else list(FIVE_CLIPS)
    five: dict[str, MotionClip] = {}
    pybullet: dict[str, Path] | None = None
    shipped = set(cl.shipped_motion_names())
    resolved: list[MotionClip] = []
    for clip in wanted:
        if isinstance(clip, MotionClip):
            resolved.append(clip)
        elif Path(clip).is_file():
            resolved.append(load_clip_file(clip))
        elif clip in FIVE_CLIPS:
            five = five or _five_clip_library(clip_source, sprint_rate)
            resolved.append(five[clip])
        elif clip in shipped:
            resolved.append(cl.load_shipped(clip))
        else:
            pybullet = pybullet_clip_files() if pybullet is None else pybullet
            if clip not in pybullet:
                raise ClipError(unknown_clip_message(clip))
            resolved.append(load_clip_file(pybullet[clip]))
    names = [c.name for c in resolved]
    if len(set(names)) != len(names):
        raise ClipError(f"clip names must be unique, got {names}")
    return resolved


# --------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipInfo:
    """One row of ``clipsched clips list``."""

    name: str
    source: str
    duration: float
    """Seconds per cycle (looping) or in total."""
    frames: int
    loop: bool


def _info(clip: MotionClip, source: str) -> ClipInfo:
    return ClipInfo(clip.name, source, clip.duration, clip.num_frames, clip.loop)


def list_clips(env: EnvName = "humanoid", clip_source: str | Path | None = None) -> list[ClipInfo]:
    """Every clip name available to ``env`` (files aside), loaded to tell its length."""
    if env == "planar":
        from learner.envs.planar import (
            DEFAULT_CLIPS,
            PlanarConfig,
            WalkerGeometry,
            default_clips,
            load_walker_model,
        )

        geometry = WalkerGeometry.from_model(load_walker_model())
        planar = default_clips(geometry, PlanarConfig().frames_per_cycle)
        return [
            ClipInfo(name, SOURCE_PLANAR, planar[name].period, planar[name].num_frames, True)
            for name in DEFAULT_CLIPS
        ]
    names = available_names(env)
    origin = str(clip_source) if clip_source is not None else cl.default_gait_source()
    five = _five_clip_library(clip_source, 1.4)
    pybullet = pybullet_clip_files()
    rows: list[ClipInfo] = []
    for name, source in names.items():
        if source == SOURCE_FIVE:
            rows.append(_info(five[name], f"{SOURCE_FIVE} ({origin})"))
        elif source == SOURCE_SHIPPED:
            rows.append(_info(cl.load_shipped(name), source))
        else:
            rows.append(_info(load_clip_file(pybullet[name]), source))
    return rows


def format_clip_list(rows: Sequence[ClipInfo]) -> str:
    """The ``clipsched clips list`` table."""
    from scheduler_service.cli import format_table

    return format_table(
        ["name", "source", "duration_s", "frames", "loop"],
        [[r.name, r.source, r.duration, r.frames, r.loop] for r in rows],
    )


def run_clips_list(args: argparse.Namespace) -> int:
    """Entry point of ``clipsched clips list``."""
    try:
        rows = list_clips(args.env, args.clip_source)
    except ClipError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(format_clip_list(rows) + "\n")
    if args.env == "humanoid":
        notes = ["--clips also takes clip file paths (.txt/.json DeepMimic, .npz native)"]
        if not pybullet_clip_files():
            notes.append(f"{PYBULLET_HINT} (jump, backflip, cartwheel, ...)")
        sys.stdout.write("".join(f"\n{note}" for note in notes) + "\n")
    return 0


def add_clips_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``clipsched clips list``."""
    parser = subparsers.add_parser(
        "clips", help="reference motion clips available to the learner's envs"
    )
    commands = parser.add_subparsers(dest="clips_command", metavar="COMMAND", required=True)
    listing = commands.add_parser(
        "list",
        help="clip names that --clips resolves, with source, duration, frames and loop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument(
        "--env", choices=("humanoid", "planar"), default="humanoid", help="which env's clips"
    )
    listing.add_argument(
        "--clip-source",
        metavar="SOURCE",
        help="five-clip example's walk/run: shipped, pybullet_data, builtin or a directory "
        "(default: pybullet_data when installed, else shipped)",
    )
    listing.set_defaults(func=run_clips_list)


__all__ = [
    "PYBULLET_HINT",
    "SOURCE_FIVE",
    "SOURCE_PLANAR",
    "SOURCE_PYBULLET",
    "SOURCE_SHIPPED",
    "ClipError",
    "ClipInfo",
    "add_clips_command",
    "available_names",
    "check_clip_names",
    "format_clip_list",
    "list_clips",
    "load_clip_file",
    "pybullet_clip_files",
    "resolve_clips",
    "run_clips_list",
    "unknown_clip_message",
]
