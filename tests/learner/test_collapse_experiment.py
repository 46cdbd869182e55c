"""The collapse experiment's pipeline runs end to end on a tiny budget (not the science)."""

from __future__ import annotations

import json
from pathlib import Path

from learner.collapse import ARMS, Budget, run_experiment
from learner.collapse_report import write_report


def test_collapse_pipeline_writes_table_plots_and_page(tmp_path: Path) -> None:
    budget = Budget(
        steps_per_arm=2304,
        expert_steps=2304,
        num_envs=4,
        rollout_steps=64,
        eval_steps=40,
        eval_envs=2,
    )
    results = tmp_path / "results"
    rows = run_experiment(["naive", "preset"], [0], budget, results, workers=2)
    assert sorted(r["arm"] for r in rows) == ["naive", "preset"]
    for row in rows:
        assert abs(sum(row["matched_share"]) - 1.0) < 1e-9
        assert 1.0 <= row["effective_matched_clips"] <= 5.0 + 1e-9
        assert row["steps"] >= budget.steps_per_arm
    page = tmp_path / "docs" / "collapse.md"
    table = write_report(rows, results, page=page, wall_s=1.0, command="clipsched experiment")
    assert table.count("\n") == 3  # header, rule, one line per arm
    assert (results / "usage.png").stat().st_size > 0
    assert (results / "success.png").stat().st_size > 0
    assert "| naive | 1 |" in page.read_text(encoding="utf-8")
    assert json.loads((results / "experts.json").read_text())["success"]
    # A re-run skips finished arms and reuses the experts.
    again = run_experiment(["naive", "preset"], [0], budget, results, workers=1)
    assert [r["wall_s"] for r in again] == [r["wall_s"] for r in rows]


def test_every_arm_names_a_known_scheduler_strategy() -> None:
    kinds = {arm.run_spec.get("strategy", {}).get("kind", "controller") for arm in ARMS.values()}
    assert kinds <= {"static", "controller", "ucb", "thompson"}
    assert {"naive", "preset", "-controller", "-lse", "-per-clip-norm", "-per-clip-heads"} <= set(
        ARMS
    )
