"""``clipsched demo`` (the README's first command) end to end, briefly, on the planar env.

The real command in a subprocess: a scheduler on SQLite and two learner processes sharing
the five-clip run. It must finish by itself, print where everything is, and leave a
database whose run counted exactly the episodes the two learners report.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

from tests.service_processes import VENV_BIN, base_env


def test_demo_runs_two_learners_on_one_run_and_stops_by_itself(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    command = ["demo", "--env", "planar", "--minutes", "0.3", "--workdir", str(workdir)]
    done = subprocess.run(
        [str(VENV_BIN / "clipsched"), *command],
        env=base_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for label in ("scheduler", "dashboard", "metrics", "run state", "TensorBoard:"):
        assert label in out, out[-3000:]
    assert re.search(r"dashboard\s+http://127\.0\.0\.1:\d+/dashboard/#run=five-clip", out)
    header = re.search(r"episodes (\d+)\s+steps (\d+)\s+updates (\d+)", out)
    assert header is not None, out[-3000:]
    episodes = int(header.group(1))
    learners = re.findall(r"^(learner\d)\s+(\d+)\s+(\d+)\s", out, flags=re.MULTILINE)
    assert [name for name, _, _ in learners] == ["learner0", "learner1"]
    assert episodes > 0 and sum(int(e) for _, e, _ in learners) == episodes
    # the database survives the demo with the same count
    with sqlite3.connect(workdir / "scheduler.db") as db:
        (stored,) = db.execute("SELECT COUNT(*) FROM outcomes").fetchone()
    assert stored == episodes
    assert any((workdir / "tensorboard").rglob("events.out.tfevents.*"))
    # the skill table: how the run's episodes moved and the final policy's evaluation
    assert "skill: run episodes" in out, out[-3000:]
    rows = re.findall(
        r"^(Idle|Walk|Back|Run|Sprint)\s+(\d+)\s+\S+ -> \S+\s+\S+ -> \S+\s+([\d.]+)",
        out,
        flags=re.MULTILINE,
    )
    assert [name for name, _, _ in rows] == ["Idle", "Walk", "Back", "Run", "Sprint"], out[-3000:]
    assert all(0.0 <= float(success) <= 1.0 for _, _, success in rows)
    strip = re.search(r"^filmstrip\s+(\S+\.png)$", out, flags=re.MULTILINE)
    assert strip is None or Path(strip.group(1)).is_file()
