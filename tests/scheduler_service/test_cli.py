"""The ``clipsched`` command line: parsing, run specs, tables, REST calls and errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from clipsched.client.http import SchedulerClient
from scheduler_service import cli

STATE: dict[str, Any] = {
    "name": "five-clip",
    "state_version": 17,
    "paused": False,
    "strategy": {"kind": "controller", "eta": 1.0},
    "aggregation": {"kind": "lse", "temperature": 0.3},
    "totals": {"episodes": 1234, "steps": 98765, "updates": 3},
    "clips": [
        {"id": 0, "name": "Idle", "group": "calm", "target_usage": 0.2, "usage": 0.19,
         "clip_prob": 0.21, "reward_weight": 0.2, "success": 0.8, "episodes": 250},
        {"id": 1, "name": "Sprint", "group": None, "target_usage": 0.15, "usage": 0.1234,
         "clip_prob": 0.18, "reward_weight": 0.17, "success": None, "episodes": 9},
    ],
    "learners": [
        {"learner_id": "seed0", "last_seen": "2026-11-25T06:00:00Z", "episodes": 600,
         "steps": 50000, "usage": [0.5, 0.5], "stale": False},
    ],
}  # fmt: skip


def use_transport(
    monkeypatch: pytest.MonkeyPatch, handler: Callable[[httpx.Request], httpx.Response]
) -> list[httpx.Request]:
    """Route the CLI's client through a MockTransport; returns the recorded requests."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    def client(args: argparse.Namespace) -> SchedulerClient:
        return SchedulerClient(
            args.url,
            None,
            learner_id="clipsched-cli",
            token=args.token,
            retries=0,
            transport=httpx.MockTransport(record),
        )

    monkeypatch.setattr(cli, "_client", client)
    return seen


def test_parser_builds_every_command_without_the_learner() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--port", "9000", "--database-url", "sqlite:///x.db"])
    assert (args.func, args.port, args.database_url) == (cli.cmd_serve, 9000, "sqlite:///x.db")
    args = parser.parse_args(["runs", "create", "r", "--clips", "Idle,Walk", "--url", "http://h"])
    assert (args.func, args.name, args.url) == (cli.cmd_runs_create, "r", "http://h")
    assert parser.parse_args(["runs", "list"]).func is cli.cmd_runs_list
    assert parser.parse_args(["runs", "show", "r"]).func is cli.cmd_runs_show
    args = parser.parse_args(["targets", "set", "r", "Walk=0.3", "Run=0.1", "--if-match", "4"])
    assert (args.assignments, args.if_match, args.group) == (["Walk=0.3", "Run=0.1"], 4, False)


def test_url_and_token_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPSCHED_URL", "http://sched:9")
    monkeypatch.setenv("CLIPSCHED_TOKEN", "tok")
    args = cli.build_parser().parse_args(["runs", "list"])
    assert (args.url, args.token) == ("http://sched:9", "tok")
    monkeypatch.delenv("CLIPSCHED_URL")
    args = cli.build_parser().parse_args(["runs", "list"])
    assert args.url == cli.DEFAULT_URL


def test_a_learner_command_gets_its_flags_when_it_is_the_command() -> None:
    pytest.importorskip("torch")
    from learner.cli import run_train

    parser = cli.build_parser("train")
    args = parser.parse_args(["train", "--dump-config", "--num-envs", "3"])
    assert (args.func, args.num_envs) == (run_train, "3")  # coerced by TrainConfig
    assert cli.command_of(["-v", "train", "--num-envs", "4"]) == "train"
    assert cli.command_of(["--help"]) is None


def test_own_commands_and_help_do_not_import_the_learner_or_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from scheduler_service import cli\n"
        "cli.build_parser('runs').parse_args(['runs', 'list'])\n"
        "out = io.StringIO()\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(out):\n"
        "    cli.build_parser(None).parse_args(['--help'])\n"
        "print(sorted(m for m in ('learner.cli', 'torch', 'mujoco') if m in sys.modules))\n"
        "print(all(c in out.getvalue() for c in cli.LEARNER_COMMANDS))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split("\n")[:2] == ["[]", "True"], out.stdout


def test_run_state_table_has_one_aligned_row_per_clip() -> None:
    text = cli.format_run_state(STATE)
    lines = text.splitlines()
    assert lines[0].startswith("run five-clip  version 17  strategy controller")
    header = next(i for i, line in enumerate(lines) if line.startswith("clip "))
    table = lines[header : header + 4]
    assert table[0].split() == [
        "clip", "group", "target_usage", "usage", "clip_prob", "reward_weight", "success",
        "episodes",
    ]  # fmt: skip
    assert set(table[1]) <= {"-", " "}
    assert table[2].split() == ["Idle", "calm", "0.200", "0.190", "0.210", "0.200", "0.800", "250"]
    assert table[3].split() == ["Sprint", "-", "0.150", "0.123", "0.180", "0.170", "-", "9"]
    # numeric columns are right-aligned: every row ends its episodes cell at one column
    assert len({len(row) for row in table[0:1] + table[2:]}) == 1
    assert "seed0" in text


def test_format_table_right_aligns_numbers_and_left_aligns_text() -> None:
    table = cli.format_table(("name", "n"), [["a", 1], ["long", 100]]).splitlines()
    assert table == ["name    n", "----  ---", "a       1", "long  100"]


def test_run_spec_from_flags_over_a_spec_file(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"name": "x", "strategy": {"kind": "static", "eta": 2.0}}))
    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "runs", "create", "five", "--clips", "Idle,Walk,Run", "--groups", "calm,gait,gait",
            "--preset", "design-note", "--strategy", "controller",
            "--targets", "Idle=0.2,Walk=0.5", "--targets", "Run=0.3", "--from-file", str(spec_file),
        ]
    )  # fmt: skip
    spec = cli.build_run_spec(args)
    assert spec["name"] == "five"
    assert spec["clips"] == [
        {"name": "Idle", "group": "calm"},
        {"name": "Walk", "group": "gait"},
        {"name": "Run", "group": "gait"},
    ]
    assert spec["strategy"] == {"kind": "controller", "eta": 2.0}
    assert spec["preset"] == "design-note"
    assert spec["target_usage"] == {"Idle": 0.2, "Walk": 0.5, "Run": 0.3}


def test_groups_by_name_must_name_known_clips() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["runs", "create", "r", "--clips", "Idle,Walk", "--groups", "Run=x"])
    with pytest.raises(ValueError, match="unknown clips: Run"):
        cli.build_run_spec(args)


@pytest.mark.parametrize(
    ("assignment", "message"), [("Walk:0.3", "NAME=VALUE"), ("Walk=nan", "finite")]
)
def test_bad_assignment_is_a_usage_error(
    assignment: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["targets", "set", "r", assignment])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_runs_show_prints_the_table_from_the_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = use_transport(monkeypatch, lambda r: httpx.Response(200, json=STATE))
    assert cli.main(["runs", "show", "five-clip", "--url", "http://sched.test"]) == 0
    assert seen[0].url == "http://sched.test/runs/five-clip"
    assert cli.format_run_state(STATE) in capsys.readouterr().out


def test_runs_list_accepts_a_wrapped_or_bare_list(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    row = {"name": "five-clip", "clip_count": 5, "strategy": "controller", "state_version": 3,
           "totals": {"episodes": 10, "steps": 200}}  # fmt: skip
    for body in ({"runs": [row]}, [row]):
        use_transport(monkeypatch, lambda r, body=body: httpx.Response(200, json=body))
        assert cli.main(["runs", "list"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[2].split() == ["five-clip", "5", "controller", "3", "10", "200"]


def test_targets_set_sends_the_shares_and_if_match(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = use_transport(monkeypatch, lambda r: httpx.Response(200, json=STATE))
    argv = ["targets", "set", "five-clip", "Walk=0.3", "Run=0.1", "--if-match", "17", "--group"]
    assert cli.main([*argv, "--token", "tok"]) == 0
    request = seen[0]
    assert (request.method, request.url.path) == ("PUT", "/runs/five-clip/targets")
    assert json.loads(request.content) == {"target_usage_by_group": {"Walk": 0.3, "Run": 0.1}}
    assert request.headers["If-Match"] == "17"
    assert request.headers["Authorization"] == "Bearer tok"
    assert "Idle" in capsys.readouterr().out


def test_server_errors_print_the_message_and_exit_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_transport(
        monkeypatch, lambda r: httpx.Response(409, json={"detail": "run 'five-clip' exists"})
    )
    assert cli.main(["runs", "create", "five-clip", "--clips", "Idle,Walk"]) == 1
    err = capsys.readouterr().err
    assert "409" in err
    assert "run 'five-clip' exists" in err
