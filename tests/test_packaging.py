"""The core install is torch-free: the service, the client and the service's commands need
none of the learner extra's packages; a learner command without them says what to install."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEARNER_ONLY = ("torch", "mujoco", "gymnasium", "tensorboard", "matplotlib", "tqdm", "PIL")

# Run with the learner extra's packages made unimportable, as on a core install.
BLOCKER = f"""
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {LEARNER_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def _requirement_names(requirements: list[str]) -> set[str]:
    return {r.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip() for r in requirements}


def test_core_dependencies_leave_the_learner_packages_to_the_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = _requirement_names(project["dependencies"])
    extra = _requirement_names(project["optional-dependencies"]["learner"])
    heavy = {"torch", "mujoco", "gymnasium", "tensorboard", "matplotlib", "tqdm", "pillow"}
    assert not core & heavy
    assert heavy <= extra
    assert "clip-scheduler[learner,postgres]" in project["optional-dependencies"]["dev"]


def test_service_client_and_commands_run_without_the_learner_extra() -> None:
    done = _run(
        "import contextlib, io\n"
        "import clipsched.client.http, clipsched.clip_source, clipsched.client.endpoints\n"
        "import scheduler_service.api.app, scheduler_service.server\n"
        "from scheduler_service import cli\n"
        "for argv in (['--help'], ['serve', '--help'], ['runs', 'list', '--help']):\n"
        "    out = io.StringIO()\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(out):\n"
        "        cli.main(argv)\n"
        "    assert 'usage: clipsched' in out.getvalue(), argv\n"
        "print('ok')\n"
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_learner_command_without_the_extra_says_what_to_install() -> None:
    done = _run(
        "from scheduler_service import cli\n"
        "raise SystemExit(cli.main(['train', '--env', 'humanoid', '--clips', 'walk']))\n"
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert 'pip install "clip-scheduler[learner]"' in done.stderr
    assert "Traceback" not in done.stderr
