"""The dashboard in headless Chromium (Debian's, driven by Playwright) against a live scheduler.

The real app runs under uvicorn on loopback; scripted learners post outcomes from a
background thread while the page is open. The page must show the run, draw the charts,
raise the collapse alarm the skewed learners cause, notice a learner that joins later,
and set a target through its form (If-Match guarded), which the run state then shows.
Screenshots go to ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from scheduler_service.config import Settings
from scheduler_service.server import serve_in_thread
from tests.browser import CHROMIUM, chromium

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CLIPS = {"Idle": "calm", "Walk": "gait", "Back": "gait", "Run": "fast", "Sprint": "fast"}
RUN = "live"
TIMEOUT_MS = 15_000

pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install '.[dev]')"
)
if not CHROMIUM.exists():
    # CI sets CLIPSCHED_REQUIRE_BROWSER so that a missing browser fails instead of skipping
    if os.environ.get("CLIPSCHED_REQUIRE_BROWSER"):
        pytest.fail(f"{CHROMIUM} is missing and CLIPSCHED_REQUIRE_BROWSER is set", pytrace=False)
    pytest.skip("Debian's chromium is missing (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(autouse=True)
def _artifacts() -> None:
    """Screenshots go to test-artifacts/ (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    """A scheduler without tokens."""
    with serve_in_thread(Settings(database_url=f"sqlite:///{tmp_path / 'dash.db'}")) as url:
        yield url


class SkewedLearners:
    """Background learners posting outcomes, 85% of them on Walk (a collapsing trainer).

    ``seed0`` posts from the start; ``seed1`` joins when ``join`` is set. ``hold`` pauses
    posting (so an operator's If-Match is not raced by controller updates). Bounded by
    ``max_batches``; ``stop()`` ends it.
    """

    def __init__(self, base_url: str, max_batches: int = 3000) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=10)
        self.rng = np.random.default_rng(0)
        self.max_batches = max_batches
        self.join = threading.Event()
        self.hold = threading.Event()
        self.idle = threading.Event()
        self._stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._episode = 0

    def start(self) -> None:
        """Start posting."""
        self.thread.start()

    def stop(self) -> None:
        """Stop posting and close the client."""
        self._stop.set()
        self.thread.join(timeout=10)
        self.client.close()

    def _batch(self, learner: str, size: int) -> dict[str, Any]:
        names = list(CLIPS)
        p = [0.04, 0.85, 0.04, 0.04, 0.03]
        outcomes = []
        for clip in self.rng.choice(len(names), size=size, p=p):
            self._episode += 1
            outcomes.append(
                {
                    "episode_id": f"{learner}-{self._episode:07d}",
                    "clip": names[clip],
                    "steps": 100,
                    "return": float(self.rng.normal(50.0, 5.0)),
                    "success": float(self.rng.random() < 0.7),
                }
            )
        return {"learner_id": learner, "outcomes": outcomes}

    def _run(self) -> None:
        for _ in range(self.max_batches):
            if self._stop.is_set():
                return
            if self.hold.is_set():
                self.idle.set()
                time.sleep(0.02)
                continue
            self.idle.clear()
            learners = ["seed0", "seed1"] if self.join.is_set() else ["seed0"]
            for learner in learners:
                answer = self.client.post(f"/runs/{RUN}/outcomes", json=self._batch(learner, 20))
                if answer.status_code != 200:
                    self.errors.append(answer.text)
            time.sleep(0.03)


@pytest.fixture
def learners(base_url: str) -> Iterator[SkewedLearners]:
    """The run, and skewed learners posting to it in the background."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        created = client.post(
            "/runs",
            json={
                "name": RUN,
                "clips": [{"name": n, "group": g} for n, g in CLIPS.items()],
                "preset": "design-note",
                "strategy": {"update_every_steps": 2000},
            },
        )
        assert created.status_code == 201, created.text
    posting = SkewedLearners(base_url)
    posting.start()
    try:
        yield posting
    finally:
        posting.stop()


def _state(base_url: str) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(f"{base_url}/runs/{RUN}", timeout=10).json()
    return state


def _wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_dashboard_shows_live_run_alarm_and_sets_target_through_form(
    base_url: str, learners: SkewedLearners
) -> None:
    _wait_for(lambda: _state(base_url)["totals"]["updates"] >= 3)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        try:
            page.goto(f"{base_url}/?poll=300#run={RUN}")  # / redirects to the dashboard
            page.wait_for_selector("#run-name:text('live')")

            # charts: a usage and a target line per clip, one line per clip elsewhere
            page.wait_for_function(
                "document.querySelectorAll('#chart-usage path.series').length >= 10"
            )
            for chart in ("#chart-probs", "#chart-weights", "#chart-success"):
                assert page.locator(f"{chart} path.series").count() == len(CLIPS)
            assert page.locator("#chart-usage path.series.dashed").count() == len(CLIPS)

            # the skewed learners collapse usage onto Walk: the top-1 alarm fires, naming it
            alarm = page.locator('.alarm.firing[data-alarm="top1_share"]')
            alarm.wait_for()
            assert "Walk" in alarm.inner_text()
            assert page.locator("#clip-table tbody tr").count() == len(CLIPS)

            # live: a learner that joins while the page is open shows up without a reload
            learners.join.set()
            page.locator("#learner-table td.name", has_text="seed1").wait_for()

            # set Sprint's target through the form, at the version the page shows
            learners.hold.set()
            _wait_for(learners.idle.is_set)
            version = _state(base_url)["state_version"]
            page.locator("#targets-version", has_text=f"state v{version}").wait_for()
            page.fill('#target-rows input[name="name"]', "Sprint")
            page.fill('#target-rows input[name="share"]', "0.4")
            page.click("#apply-targets")
            page.locator("#targets-status.ok").wait_for()
            learners.hold.clear()

            sprint = next(c for c in _state(base_url)["clips"] if c["name"] == "Sprint")
            assert sprint["target_usage"] == pytest.approx(0.4)
            page.locator('#audit-table tr[data-action="set_target_usage"]').wait_for()
            page.locator("#clip-table tbody tr", has_text="Sprint").filter(
                has_text="40.0%"
            ).wait_for()
            assert not learners.errors
            assert not errors, errors  # no script error, no failed request
        finally:
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)


def test_dashboard_reports_a_stale_if_match_and_applies_on_retry(
    base_url: str, learners: SkewedLearners
) -> None:
    learners.hold.set()
    _wait_for(learners.idle.is_set)
    with chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        script_errors: list[str] = []
        page.on("pageerror", lambda exc: script_errors.append(str(exc)))
        try:
            page.goto(f"{base_url}/dashboard/?poll=60000#run={RUN}")  # one poll, then quiet
            seen = _state(base_url)["state_version"]
            page.locator("#targets-version", has_text=f"state v{seen}").wait_for()

            # another operator changes the run behind the page's back
            bumped = httpx.put(
                f"{base_url}/runs/{RUN}/targets",
                json={"target_usage": {"Idle": 0.3}},
                headers={"If-Match": str(seen)},
            )
            assert bumped.status_code == 200, bumped.text

            page.fill('#target-rows input[name="name"]', "Run")
            page.fill('#target-rows input[name="share"]', "0.35")
            page.click("#apply-targets")
            page.locator("#targets-status.error", has_text="changed since").wait_for()
            run = next(c for c in _state(base_url)["clips"] if c["name"] == "Run")
            assert run["target_usage"] != pytest.approx(0.35)

            # the failed attempt refreshed the page; the kept row applies on the retry
            page.locator("#targets-version", has_text=f"state v{seen + 1}").wait_for()
            page.click("#apply-targets")
            page.locator("#targets-status.ok").wait_for()
            run = next(c for c in _state(base_url)["clips"] if c["name"] == "Run")
            assert run["target_usage"] == pytest.approx(0.35)
            assert not script_errors, script_errors
        finally:
            page.screenshot(path=str(ARTIFACTS / "dashboard-412.png"), full_page=True)


def test_dashboard_asks_for_a_token_and_sends_it_when_tokens_are_configured(
    tmp_path: Path,
) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'auth.db'}", write_token="w-secret")
    with serve_in_thread(settings) as url:
        created = httpx.post(
            f"{url}/runs",
            json={"name": "guarded", "clips": [{"name": "Walk"}, {"name": "Run"}]},
            headers={"Authorization": "Bearer w-secret"},
        )
        assert created.status_code == 201, created.text
        with chromium() as browser:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            try:
                page.goto(f"{url}/dashboard/?poll=300")
                page.locator("#token-dialog[open]").wait_for()
                assert page.locator("#run-view").is_hidden()
                page.fill("#token-input", "w-secret")
                page.click("#token-dialog button[value='save']")
                page.wait_for_selector("#run-name:text('guarded')")
                assert page.evaluate("sessionStorage.getItem('clipsched.token')") == "w-secret"

                page.fill('#target-rows input[name="name"]', "Run")
                page.fill('#target-rows input[name="share"]', "0.8")
                page.click("#apply-targets")
                page.locator("#targets-status.ok").wait_for()
            finally:
                page.screenshot(path=str(ARTIFACTS / "dashboard-token.png"), full_page=True)
            state = httpx.get(
                f"{url}/runs/guarded", headers={"Authorization": "Bearer w-secret"}
            ).json()
        run = next(c for c in state["clips"] if c["name"] == "Run")
        assert run["target_usage"] == pytest.approx(0.8)


def test_dashboard_stays_usable_at_1200_clips_with_search_top_k_and_group_roll_up(
    base_url: str,
) -> None:
    k, groups = 1200, 12
    names = [f"clip{i:04d}" for i in range(k)]
    rng = np.random.default_rng(1)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        created = client.post(
            "/runs",
            json={
                "name": "big",
                "clips": [{"name": n, "group": f"g{i % groups:02d}"} for i, n in enumerate(names)],
                "strategy": {"update_every_steps": 20_000},
            },
        )
        assert created.status_code == 201, created.text
        for batch in range(4):  # 4,000 episodes, enough for two controller updates
            outcomes = [
                {
                    "episode_id": f"b{batch}-{j}",
                    "clip": names[int(c)],
                    "steps": 10,
                    "return": 1.0,
                    "success": 1.0,
                }
                for j, c in enumerate(rng.integers(0, k, size=1000))
            ]
            answer = client.post(
                "/runs/big/outcomes", json={"learner_id": "l", "outcomes": outcomes}
            )
            assert answer.status_code == 200, answer.text
        assert client.get("/runs/big").json()["totals"]["updates"] >= 2

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        try:
            page.goto(f"{base_url}/dashboard/?poll=60000#run=big")
            page.locator("#table-title", has_text=f"Clips ({k})").wait_for()
            # the table pages (25 rows) and the charts draw only the top-k clips
            assert page.locator("#clip-table tbody tr").count() == 25
            page.wait_for_function(
                "document.querySelectorAll('#chart-probs path.series').length > 0"
            )
            assert page.locator("#chart-probs path.series").count() == 8
            page.fill("#top-k", "3")
            page.wait_for_function(
                "document.querySelectorAll('#chart-probs path.series').length === 3"
            )

            # search finds one clip among 1,200
            page.fill("#clip-search", "clip0042")
            page.locator("#clip-table tbody tr", has_text="clip0042").wait_for()
            page.wait_for_function("document.querySelectorAll('#clip-table tbody tr').length === 1")
            page.fill("#clip-search", "")

            # the group roll-up: one row per group, and a group target set through the form
            page.select_option("#view-mode", "group")
            page.locator("#table-title", has_text=f"Groups ({groups})").wait_for()
            page.wait_for_function(
                f"document.querySelectorAll('#clip-table tbody tr').length === {groups}"
            )
            page.check('input[name="mode"][value="group"]')
            page.fill('#target-rows input[name="name"]', "g03")
            page.fill('#target-rows input[name="share"]', "0.5")
            page.click("#apply-targets")
            page.locator("#targets-status.ok").wait_for()
            assert not errors, errors
        finally:
            page.screenshot(path=str(ARTIFACTS / "dashboard-1200.png"), full_page=True)
    state = httpx.get(f"{base_url}/runs/big", timeout=30).json()
    g03 = sum(c["target_usage"] for c in state["clips"] if c["group"] == "g03")
    assert g03 == pytest.approx(0.5)
