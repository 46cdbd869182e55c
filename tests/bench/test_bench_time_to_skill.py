"""bench/bench_time_to_skill.py: a tiny planar run, --report-only, --from-run on a written log."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_time_to_skill.py"

TINY = [
    "--set", "num_envs=4",
    "--set", "rollout_steps=128",
    "--set", "minibatch_size=256",
    "--set", "update_epochs=2",
    "--set", "hidden=32,32",
    "--set", "max_episode_steps=40",
    "--set", "eval_every=4",
    "--set", "eval_episodes=4",
    "--set", "eval_envs=4",
]  # fmt: skip
"""512 steps per update, an evaluation every 2,048 steps."""


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_time_to_skill", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_planar_run_with_a_tiny_budget(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert bench.main(["--clips", "Run", "--max-steps", "4096", *TINY, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| clip | env | success goal | time goal |" in text
    assert "| Run | planar | ≥ 0.9 | ≤ 3 min |" in text
    assert "Curve of Run (2 evaluations)" in text
    assert "Command: `.venv/bin/python" in text and "--max-steps 4096" in text

    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    (clip,) = data["clips"]
    assert clip["clip"] == "Run" and clip["env"] == "planar"
    assert clip["stop_reason"] in ("steps", "goal")
    assert clip["steps_used"] <= 4096
    assert clip["config"]["clips"] == ["Run"] and clip["config"]["num_envs"] == 4
    assert "--eval-every 4" in clip["train_command"]
    assert "--env planar" in clip["train_command"]
    assert [p["step"] for p in clip["curve"]] == [2048, 4096][: len(clip["curve"])]
    for point in clip["curve"]:
        keys = {"step", "update", "train_seconds", "success", "tracking_reward", "episode_length"}
        assert keys <= set(point)
        assert 0.0 <= point["success"] <= 1.0 and point["train_seconds"] > 0
    seconds = [p["train_seconds"] for p in clip["curve"]]
    assert seconds == sorted(seconds)
    assert (out / "time_to_skill.png").stat().st_size > 10_000
    assert (out / "runs" / "Run" / "learner0" / "eval.jsonl").is_file()

    (out / "time_to_skill.png").unlink()
    assert bench.main(["--report-only", str(out)]) == 0
    again = capsys.readouterr().out
    assert "re-read from" in again and "| Run | planar |" in again
    assert (out / "time_to_skill.png").is_file()


def test_stops_at_the_first_evaluation_that_reaches_the_goal(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--clips", "Idle", "--max-steps", "100000", "--goal-success", "0", *TINY]
    assert bench.main([*args, "--out", str(tmp_path)]) == 0
    assert "| pass |" in capsys.readouterr().out
    (clip,) = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["clips"]
    assert clip["stop_reason"] == "goal" and clip["passed"] and clip["reached"]
    assert clip["steps_to_skill"] == clip["steps_used"] == 2048
    assert clip["updates_to_skill"] == 4 and len(clip["curve"]) == 1


def test_from_run_reads_any_eval_log(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "runs" / "walkA" / "learner0"
    run.mkdir(parents=True)

    def record(step: int, minutes: float, walk: float, jog: float) -> str:
        clips = [
            {"clip": name, "episodes": 8, "success": s, "tracking_reward": 0.5 + s / 4,
             "episode_length": 100 + 200 * s, "full_length": s}
            for name, s in (("walk", walk), ("jog", jog))
        ]  # fmt: skip
        line = {"step": step, "update": step // 2048, "train_seconds": minutes * 60, "clips": clips}
        return json.dumps(line)

    lines = [
        record(51_200, 10, 0.0, 0.0),
        record(102_400, 20, 0.5, 0.125),
        record(153_600, 30, 0.875, 0.25),
        record(204_800, 150, 0.75, 0.25),
    ]
    (run / "eval.jsonl").write_text("\n".join(lines) + '\n{"step": 2', encoding="utf-8")
    out = tmp_path / "report"
    argv = ["--from-run", str(tmp_path / "runs" / "walkA"), "--env", "humanoid", "--out", str(out)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    walk_row = (
        "| walk | humanoid | ≥ 0.8 | ≤ 2 h | 153,600 | 30.0 min | 4 | 0.88 | 204,800, 2.50 h |"
    )
    assert walk_row + " — | run | pass |" in text
    assert "| jog | humanoid | ≥ 0.8 | ≤ 2 h | not reached | — | 4 | 0.25 |" in text
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    walk, jog = data["clips"]
    assert walk["clip"] == "walk" and walk["reached"] and walk["passed"]
    assert walk["steps_to_skill"] == 153_600 and walk["seconds_to_skill"] == 1800
    assert walk["updates_to_skill"] == 75
    assert jog["clip"] == "jog" and not jog["reached"] and not jog["passed"]
    assert jog["best_success"] == 0.25 and jog["steps_used"] == 204_800
    assert [p["success"] for p in walk["curve"]] == [0.0, 0.5, 0.875, 0.75]
    assert (out / "time_to_skill.png").is_file()

    # a slower goal than the run: reached but too slow
    assert bench.main([*argv, "--goal-minutes", "20"]) == 0
    slow = capsys.readouterr().out
    assert "| walk | humanoid | ≥ 0.8 | ≤ 20 min | 153,600 | 30.0 min |" in slow
    assert "| run | fail (too slow) |" in slow


def test_set_parses_values_and_refuses_bench_fields(bench: ModuleType) -> None:
    values = bench.parse_set(
        [
            "learning_rate=5e-5",
            "learn_std=false",
            "entropy_floor=none",
            "hidden=64,64",
            "gamma=0.95",
        ]
    )
    assert values == {
        "learning_rate": 5e-5,
        "learn_std": False,
        "entropy_floor": None,
        "hidden": "64,64",
        "gamma": 0.95,
    }
    config = bench.clip_config("humanoid", "walk", values, Path("runs"), None)
    assert config.hidden == (64, 64) and config.learn_std is False and config.clips == ("walk",)
    with pytest.raises(ValueError, match="set by the bench"):
        bench.parse_set(["total_steps=10"])
    with pytest.raises(ValueError, match="key=value"):
        bench.parse_set(["gamma"])
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        bench.clip_config("planar", "Run", {"no_such_field": 1}, Path("runs"), None)


def test_eval_log_drops_lines_replayed_after_a_resume(bench: ModuleType, tmp_path: Path) -> None:
    def line(step: int, success: float) -> str:
        clip = {"clip": "Run", "success": success, "tracking_reward": 0.5, "episode_length": 9}
        return json.dumps({"step": step, "train_seconds": step / 100, "clips": [clip]})

    # killed after the evaluation at 3,000, resumed from the checkpoint at 2,000
    log = tmp_path / "eval.jsonl"
    steps = [(1000, 0.0), (2000, 0.25), (3000, 1.0), (3000, 0.5), (4000, 0.75)]
    log.write_text("\n".join(line(*s) for s in steps) + "\n", encoding="utf-8")
    (curve,) = bench.read_eval_log(log).values()
    assert [(p.step, p.success) for p in curve] == [
        (1000, 0.0),
        (2000, 0.25),
        (3000, 0.5),
        (4000, 0.75),
    ]
