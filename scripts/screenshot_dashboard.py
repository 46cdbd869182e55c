"""Regenerate the README's dashboard screenshot: ``docs/img/dashboard.png``.

Starts a scheduler on a temporary SQLite file, creates the design note's five clips (with
skill groups) under the design-note preset, and plays synthetic training against it:
three scripted learners take clips from ``next-clips`` and post outcomes whose success
improves with practice (the fast clips learn slowest). Midway an operator raises Sprint's
target, so the audit log has an entry and the target-gap alarm fires while usage catches
up; seed2 drops out early and shows as stale while the others keep posting. Then
headless Chromium (Debian's, driven by Playwright) opens the dashboard and saves
a full-page screenshot.

    .venv/bin/python scripts/screenshot_dashboard.py [--out docs/img/dashboard.png]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from scheduler_service.config import Settings
from scheduler_service.server import serve_in_thread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.browser
from tests.browser import chromium

logger = logging.getLogger("screenshot_dashboard")

RUN = "five-clip"
STALE_SECONDS = 4.0
"""Learner silence shown as stale (short, so that the early drop-out shows as stale)."""
CLIPS = {"Idle": "calm", "Walk": "gait", "Back": "gait", "Run": "fast", "Sprint": "fast"}
MAX_LENGTH = np.array([150.0, 180.0, 170.0, 140.0, 120.0])
"""Episode length (steps) of a clip played to the end."""
LEARN_RATE = np.array([0.010, 0.006, 0.005, 0.003, 0.0015])
"""How fast practice raises each clip's success (Sprint is the hardest)."""
OVERRIDE_ROUNDS_BEFORE_END = 3
"""The operator raises Sprint's target this many rounds before the screenshot."""


class Learners:
    """Scripted learners: clips from next-clips, success that grows with practice."""

    def __init__(self, client: httpx.Client, rng: np.random.Generator) -> None:
        self.client = client
        self.rng = rng
        self.skill = np.array([0.35, 0.25, 0.2, 0.1, 0.02])
        self.episode = 0

    def round(self, learners: list[str], envs: int) -> None:
        """Each learner plays one episode on each of ``envs`` environments and posts them."""
        for learner in learners:
            clip_ids = self.client.get(
                f"/runs/{RUN}/next-clips", params={"n": envs, "learner_id": learner}
            ).json()["clip_ids"]
            outcomes = []
            for clip in clip_ids:
                success = float(self.rng.random() < self.skill[clip])
                fraction = 1.0 if success else self.rng.uniform(0.15, 0.8)
                steps = max(1, round(MAX_LENGTH[clip] * fraction))
                self.skill[clip] += LEARN_RATE[clip] * (1.0 - self.skill[clip])
                self.episode += 1
                outcomes.append(
                    {
                        "episode_id": f"{learner}-{self.episode:07d}",
                        "clip": int(clip),
                        "steps": steps,
                        "return": float(steps * (0.4 + 0.5 * self.skill[clip])),
                        "success": success,
                    }
                )
            self.client.post(
                f"/runs/{RUN}/outcomes", json={"learner_id": learner, "outcomes": outcomes}
            ).raise_for_status()

    def train(self, rounds: int) -> None:
        """The run's history: seed2 drops out early; alice raises Sprint's target late."""
        for r in range(rounds):
            self.round(["seed0", "seed1"] + (["seed2"] if r < rounds // 4 else []), envs=48)
            if r == rounds - OVERRIDE_ROUNDS_BEFORE_END:
                state = self.client.get(f"/runs/{RUN}").json()
                self.client.put(
                    f"/runs/{RUN}/targets",
                    json={"target_usage": {"Sprint": 0.3}},
                    headers={"If-Match": str(state["state_version"]), "X-Operator": "alice"},
                ).raise_for_status()

    @contextmanager
    def trickle(self) -> Iterator[None]:
        """Keep seed0 and seed1 posting a few episodes a second (live, but barely moving)."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(0.4):
                self.round(["seed0", "seed1"], envs=4)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)


def wait_until_stale(client: httpx.Client, learner: str, timeout: float = 30.0) -> None:
    """Wait until the run state shows ``learner`` as stale."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        learners = client.get(f"/runs/{RUN}").json()["learners"]
        if any(item["learner_id"] == learner and item["stale"] for item in learners):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{learner} did not go stale")


def screenshot(base_url: str, out: Path, width: int) -> None:
    """Open the dashboard in headless Chromium and save a full-page screenshot."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(f"{base_url}/dashboard/?poll=500#run={RUN}")
        page.wait_for_selector("svg.chart path.series")
        page.wait_for_selector(".alarm")
        page.wait_for_timeout(800)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)


def main() -> None:
    """Build the demo run and write the screenshot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/dashboard.png"))
    parser.add_argument("--rounds", type=int, default=90, help="rounds of 48 episodes per learner")
    parser.add_argument("--width", type=int, default=1440, help="browser viewport width")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "scheduler_service"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite:///{tmp}/demo.db", learner_stale_seconds=STALE_SECONDS
        )
        with (
            serve_in_thread(settings) as base_url,
            httpx.Client(base_url=base_url, timeout=30) as client,
        ):
            client.post(
                "/runs",
                json={
                    "name": RUN,
                    "clips": [{"name": n, "group": g} for n, g in CLIPS.items()],
                    "preset": "design-note",
                    "strategy": {"update_every_steps": 30_000},
                },
            ).raise_for_status()
            logger.info("playing %d rounds against %s", args.rounds, base_url)
            learners = Learners(client, rng)
            learners.train(args.rounds)
            with learners.trickle():
                wait_until_stale(client, "seed2")
                screenshot(base_url, args.out, args.width)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
