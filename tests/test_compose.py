"""The compose files are the deployment: their services run here as local processes.

There is no Docker engine on our machines, so this test reads ``docker-compose.yml`` (and
the ``docker-compose.replicas.yml`` override) with PyYAML, resolves them the way compose
does (``${VAR:-default}`` interpolation from a ``.env``-like mapping, ``$$`` escapes,
override merge), and starts each service's own ``command`` with its own ``environment``
on loopback. The only rewrites are the ones Docker would do for us: service host names
and container ports become ``127.0.0.1:<free port>``, named volumes become temp
directories, the PostgreSQL service becomes ``CLIPSCHED_TEST_POSTGRES_URL`` (a fresh
schema), ``0.0.0.0`` becomes loopback, and each learner gets its own ``HOSTNAME`` (Docker
sets it to the container id). Anything else in the files that still points into a
container fails the test, so the files and the code cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text

from clipsched.client.endpoints import preferred_index
from learner.cli import config_from_args
from scheduler_service.cli import build_parser
from scheduler_service.config import Settings
from tests.service_processes import (
    Process,
    base_env,
    free_port,
    postgres_schema,
    stopping,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parents[1]
BASE_FILE = ROOT / "docker-compose.yml"
REPLICAS_FILE = ROOT / "docker-compose.replicas.yml"
SCALE = 3
"""``docker compose up --scale learner=3``."""
STALE_S = 3.0

DOT_ENV = {
    # what a user's .env would hold: a tiny training budget, a short stale grace
    "CLIPSCHED_RUN": "compose-test",
    "CLIPSCHED_NUM_ENVS": "4",
    "CLIPSCHED_TOTAL_STEPS": "768",
    "CLIPSCHED_TRAIN_ARGS": "--rollout-steps 64 --minibatch-size 128 --update-epochs 1 "
    "--hidden 16 --checkpoint-every 0",
    "CLIPSCHED_LEARNER_STALE_SECONDS": str(STALE_S),
    "CLIPSCHED_LOG_LEVEL": "WARNING",
}
LEARNER_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------------------
# Reading compose files the way compose does
# --------------------------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-)(?P<default>.*))?")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: ``$$`` -> ``$``, ``${X:-d}``, ``${X-d}``, ``${X}``, ``$X``."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None or "$" in (braced["default"] or ""):
            raise ValueError(f"interpolation this test does not know: {match[0]!r}")
        name, op, default = braced["name"], braced["op"], braced["default"] or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")

    return _VARIABLE.sub(substitute, value)


def _resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _resolve(value, env) for key, value in node.items()}
    return node


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _merge(base: Any, override: Any, key: str = "") -> Any:
    """Compose's override merge: mappings merge, ``volumes``/``ports`` add up, the rest
    is replaced; ``environment`` is a mapping whichever way it is written."""
    if key == "environment":
        return {**_environment({"environment": base}), **_environment({"environment": override})}
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            merged[k] = _merge(base[k], v, k) if k in base else v
        return merged
    if key in ("volumes", "ports") and isinstance(base, list) and isinstance(override, list):
        return base + [item for item in override if item not in base]
    return override


def load_services(files: Sequence[Path], dot_env: Mapping[str, str]) -> dict[str, Any]:
    """The services of ``files`` (later ones override), interpolated with ``dot_env``."""
    project: dict[str, Any] = {}
    for path in files:
        document = yaml.safe_load(path.read_text())
        project = _merge(project, document)
    services = _resolve(project["services"], dot_env)
    for service in services.values():
        service["environment"] = _environment(service)
    return dict(services)


def command_of(service: Mapping[str, Any]) -> list[str]:
    """The service's command as an argv list."""
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def healthcheck_of(service: Mapping[str, Any]) -> list[str]:
    """The healthcheck test as an argv list (``CMD`` or ``CMD-SHELL``)."""
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return ["sh", "-c", test]
    kind, *rest = test
    return rest if kind == "CMD" else ["sh", "-c", " ".join(rest)]


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Dependency -> condition."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def is_scheduler(service: Mapping[str, Any]) -> bool:
    """A service running ``clipsched serve``."""
    return "build" in service and command_of(service)[:2] == ["clipsched", "serve"]


def is_learner(service: Mapping[str, Any]) -> bool:
    """A service running ``clipsched train`` (through ``sh -c``)."""
    return "build" in service and "clipsched train" in " ".join(command_of(service))


def start_order(services: Mapping[str, Any]) -> list[str]:
    """Services sorted so that every one comes after what it depends on."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise ValueError(f"depends_on cycle: {' -> '.join((*path, name))}")
        for dependency in depends_on(services[name]):
            visit(dependency, (*path, name))
        order.append(name)

    for name in services:
        visit(name, ())
    return order


# --------------------------------------------------------------------------------------
# Mapping the project onto loopback
# --------------------------------------------------------------------------------------


@dataclass
class Loopback:
    """What Docker would give each service, as local stand-ins."""

    root: Path
    ports: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Scheduler service -> (container port, loopback port)."""
    external: dict[str, str] = field(default_factory=dict)
    """Image-only service (PostgreSQL) -> the URL that stands in for it."""

    def volume_dir(self, volume: str) -> Path:
        """The temp directory standing in for a named volume."""
        path = self.root / "volumes" / volume
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mounts(self, service: Mapping[str, Any]) -> dict[str, Path]:
        """Container path -> host directory of the service's named volumes."""
        mounts = {}
        for entry in service.get("volumes") or []:
            volume, target = str(entry).split(":")[:2]
            assert "/" not in volume, f"bind mounts are not part of the deployment: {entry}"
            mounts[target] = self.volume_dir(volume)
        return mounts

    def rewrite(self, name: str, service: Mapping[str, Any], value: str) -> str:
        """``value`` with container addresses, paths and the bind-all address made local."""
        for other, url in self.external.items():
            value = re.sub(rf"^\w[\w+.-]*://[^@\s/]*@{re.escape(other)}(:\d+)?/\S*$", url, value)
        for other, (container_port, port) in self.ports.items():
            value = re.sub(
                rf"(?<![\w.-]){re.escape(other)}:{container_port}\b", f"127.0.0.1:{port}", value
            )
        if name in self.ports:
            container_port, port = self.ports[name]
            value = re.sub(
                rf"\b(127\.0\.0\.1|localhost):{container_port}\b", f"127.0.0.1:{port}", value
            )
        for target, host in self.mounts(service).items():
            value = re.sub(rf"(?<![\w.]){re.escape(target)}(?=/|$|\s|[\"'])", str(host), value)
        return value.replace("0.0.0.0", "127.0.0.1")

    def environment(self, name: str, service: Mapping[str, Any]) -> dict[str, str]:
        """The service's environment, made local."""
        env = {k: self.rewrite(name, service, v) for k, v in service["environment"].items()}
        if name in self.ports:
            env["CLIPSCHED_PORT"] = str(self.ports[name][1])
        return env

    def leftovers(self, services: Mapping[str, Any], texts: Sequence[str]) -> list[str]:
        """Texts that still point into a container (a service name, a mount path, 0.0.0.0)."""
        names = "|".join(re.escape(n) for n in services)
        targets = {t for s in services.values() for t in self.mounts(s)}
        bad = []
        for value in texts:
            if value in self.external.values():
                continue  # a stand-in URL of ours (it may name a user called postgres)
            names_a_service = re.search(rf"(?<![\w-])({names})(?=[:/@])", value)
            names_a_mount = any(
                re.search(rf"(?<![\w./]){re.escape(t)}(?=/|$|\s)", value) for t in targets
            )
            if names_a_service or names_a_mount or "0.0.0.0" in value:
                bad.append(value)
        return bad


def plan(services: Mapping[str, Any], root: Path, postgres_url: str | None) -> Loopback:
    """Ports for the schedulers, stand-ins for the image-only services."""
    loopback = Loopback(root)
    for name, service in services.items():
        if is_scheduler(service):
            loopback.ports[name] = (int(service["environment"]["CLIPSCHED_PORT"]), free_port())
        elif "build" not in service:
            image = str(service.get("image", ""))
            assert image.startswith("postgres"), f"no local stand-in for service {name} ({image})"
            assert postgres_url is not None
            loopback.external[name] = postgres_url
    return loopback


# --------------------------------------------------------------------------------------
# Running the project
# --------------------------------------------------------------------------------------


@dataclass
class Deployment:
    """A project running locally: scheduler URLs, learner processes, where things are."""

    services: dict[str, Any]
    loopback: Loopback
    processes: list[Process]
    urls: dict[str, str] = field(default_factory=dict)
    learners: list[Process] = field(default_factory=list)


def run_healthcheck(
    name: str, service: Mapping[str, Any], loopback: Loopback, env: dict[str, str], work: Path
) -> None:
    """Run the service's own healthcheck command until it passes (bounded)."""
    argv = [loopback.rewrite(name, service, part) for part in healthcheck_of(service)]
    deadline = time.monotonic() + 30.0
    while True:
        check = subprocess.run(argv, env=env, cwd=work, capture_output=True, timeout=30)
        if check.returncode == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"healthcheck of {name} never passed: {check.stderr.decode()[-2000:]}")
        time.sleep(0.2)


def _local(deployment: Deployment, name: str) -> tuple[list[str], dict[str, str]]:
    """The service's argv and environment made local; fails on anything left pointing into
    a container."""
    service = deployment.services[name]
    loopback = deployment.loopback
    env = loopback.environment(name, service)
    argv = [loopback.rewrite(name, service, part) for part in command_of(service)]
    leftovers = loopback.leftovers(deployment.services, [*env.values(), *argv])
    assert not leftovers, f"{name}: values that still point into a container: {leftovers}"
    return argv, env


def start_schedulers(
    services: dict[str, Any], work: Path, processes: list[Process], postgres_url: str | None
) -> Deployment:
    """Start every scheduler service in depends_on order, each healthy before the next."""
    deployment = Deployment(services, plan(services, work, postgres_url), processes)
    for name in start_order(services):
        service = services[name]
        if name in deployment.loopback.external or is_learner(service):
            continue
        assert is_scheduler(service), f"service {name} is neither a scheduler nor a learner"
        argv, env = _local(deployment, name)
        assert {"CLIPSCHED_HOST", "CLIPSCHED_PORT"} <= set(env)
        host_env = base_env(work, {**_passthrough(), **env})
        process = Process(name, argv, host_env, work / "logs")
        processes.append(process)
        deployment.urls[name] = f"http://127.0.0.1:{deployment.loopback.ports[name][1]}"
        wait_healthy(process, deployment.urls[name])
        run_healthcheck(name, service, deployment.loopback, host_env, work)
    return deployment


def start_learners(deployment: Deployment, work: Path) -> None:
    """``--scale learner=SCALE``: that many processes per learner service, own HOSTNAMEs."""
    for name, service in deployment.services.items():
        if not is_learner(service):
            continue
        argv, env = _local(deployment, name)
        for i in range(1, SCALE + 1):
            host_env = base_env(work, {**_passthrough(), **env, "HOSTNAME": f"{name}-{i}"})
            process = Process(f"{name}-{i}", argv, host_env, work / "logs")
            deployment.processes.append(process)
            deployment.learners.append(process)


def _passthrough() -> dict[str, str]:
    """PYTHONPATH of the caller, if any (the processes import the same code as we do)."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def _fake_clipsched(directory: Path) -> Path:
    """A ``clipsched`` that prints its argv as JSON (to read what ``sh -c`` would run)."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "clipsched"
    script.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return directory


def learner_argv(service: Mapping[str, Any], env: Mapping[str, str], work: Path) -> list[str]:
    """The argv the learner's shell command hands to ``clipsched`` with ``env``."""
    fake_bin = _fake_clipsched(work / "fake-bin")
    shell_env = {**env, "PATH": f"{fake_bin}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"}
    done = subprocess.run(
        command_of(service), env=shell_env, capture_output=True, text=True, timeout=30, check=True
    )
    argv: list[str] = json.loads(done.stdout)
    return argv


def check_learners_landed(deployment: Deployment, url: str, run: str, count_outcomes: Any) -> None:
    """Every learner exits 0, is listed in the run with exactly its own episodes, the
    counters add up, nothing is left in an outcome buffer, and the silent learners go stale."""
    import torch  # the learners' checkpoints hold their own episode counts

    for process in deployment.learners:
        code = process.wait(LEARNER_TIMEOUT_S)
        assert code == 0, f"{process.name} exited with {code}:\n{process.log_tail()}"
    state = httpx.get(f"{url}/runs/{run}", timeout=10.0).json()
    read_at = time.time()
    learners = {entry["learner_id"]: entry for entry in state["learners"]}
    assert set(learners) == {p.name for p in deployment.learners}

    state_dir = deployment.loopback.volume_dir("learner-state") / "runs" / run
    for learner_id, entry in learners.items():
        saved = torch.load(state_dir / learner_id / "checkpoints" / "latest.pt", weights_only=True)
        assert entry["episodes"] == saved["episodes"] > 0
        assert entry["steps"] > 0
        assert sum(entry["usage"]) == pytest.approx(1.0)
        assert not list((state_dir / learner_id / "outcome-buffer").glob("*.jsonl"))
        # stale exactly when silent longer than the grace (1 s margin for clock reads)
        age = read_at - datetime.fromisoformat(entry["last_seen"]).timestamp()
        if abs(age - STALE_S) > 1.0:
            assert entry["stale"] == (age > STALE_S), (learner_id, age, entry["stale"])
    totals = state["totals"]
    assert totals["episodes"] == sum(e["episodes"] for e in learners.values())
    assert totals["steps"] == sum(e["steps"] for e in learners.values())
    assert totals["episodes"] == sum(c["episodes"] for c in state["clips"])
    assert totals["episodes"] == count_outcomes()
    # silent for the grace period -> stale (CLIPSCHED_LEARNER_STALE_SECONDS from the file)
    newest = max(datetime.fromisoformat(e["last_seen"]).timestamp() for e in learners.values())
    time.sleep(max(0.0, newest + STALE_S + 0.5 - time.time()))
    later = httpx.get(f"{url}/runs/{run}", timeout=10.0).json()
    assert all(entry["stale"] for entry in later["learners"])


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


def test_compose_commands_parse_with_the_clipsched_cli_and_settings(tmp_path: Path) -> None:
    for files in ([BASE_FILE], [BASE_FILE, REPLICAS_FILE]):
        services = load_services(files, {})
        schedulers = [n for n, s in services.items() if is_scheduler(s)]
        learners = [n for n, s in services.items() if is_learner(s)]
        assert schedulers and learners == ["learner"]
        for name in schedulers:
            env = services[name]["environment"]
            unknown = {k for k in env if k.startswith("CLIPSCHED_")} - {
                f"CLIPSCHED_{f.upper()}" for f in Settings.model_fields
            }
            assert not unknown, f"{name}: not Settings fields: {unknown}"
            settings = Settings(**{k.removeprefix("CLIPSCHED_").lower(): v for k, v in env.items()})
            assert settings.port == 8000 and settings.host == "0.0.0.0"
            assert "8000" in " ".join(healthcheck_of(services[name]))
            build_parser("serve").parse_args(command_of(services[name])[1:])
            assert depends_on(services["learner"])[name] == "service_healthy"
        learner = services["learner"]
        seeds = set()
        for i in (1, 2):
            env = {**learner["environment"], "HOSTNAME": f"learner-{i}", "PATH": os.environ["PATH"]}
            argv = learner_argv(learner, env, tmp_path)
            config = config_from_args(build_parser("train").parse_args(argv))
            assert argv[0] == "train"
            assert config.scheduler_url == learner["environment"]["CLIPSCHED_URL"]
            assert config.learner_id == f"learner-{i}"
            assert config.run_name == "compose" and config.run_preset == "design-note"
            assert config.log_dir == "/state/runs" and not config.progress
            seeds.add(config.seed)
        assert len(seeds) == 2  # --scale gives each learner its own seed


def test_replica_b_is_the_same_service_as_the_scheduler() -> None:
    services = load_services([BASE_FILE, REPLICAS_FILE], {})
    a, b = services["scheduler"], services["scheduler-b"]
    assert command_of(a) == command_of(b)
    assert a["environment"] == b["environment"]
    assert a["healthcheck"] == b["healthcheck"]
    assert a["environment"]["CLIPSCHED_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert depends_on(b) == {"postgres": "service_healthy", "scheduler": "service_healthy"}
    urls = services["learner"]["environment"]["CLIPSCHED_URL"].split(",")
    assert urls == ["http://scheduler:8000", "http://scheduler-b:8000"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_this_reader_resolves_the_files_as_docker_compose_does(tmp_path: Path) -> None:
    dot_env = tmp_path / ".env"
    dot_env.write_text("".join(f"{k}={v}\n" for k, v in DOT_ENV.items()))
    for files in ([BASE_FILE], [BASE_FILE, REPLICAS_FILE]):
        argv = ["docker-compose", "--env-file", str(dot_env)]
        for path in files:
            argv += ["-f", str(path)]
        done = subprocess.run(
            [*argv, "config"], capture_output=True, text=True, timeout=60, check=True
        )
        theirs = yaml.safe_load(done.stdout)["services"]
        ours = load_services(files, DOT_ENV)
        assert set(theirs) == set(ours)
        for name, service in theirs.items():
            if "command" in service:  # printed re-escaped for compose ($ as $$)
                theirs_argv = [c.replace("$$", "$") for c in command_of(service)]
                assert theirs_argv == command_of(ours[name])
            assert _environment(service) == ours[name]["environment"]


def test_learners_of_the_compose_file_attach_train_and_land_their_outcomes(
    tmp_path: Path,
) -> None:
    services = load_services([BASE_FILE], DOT_ENV)
    with stopping([]) as processes:
        deployment = start_schedulers(services, tmp_path, processes, None)
        start_learners(deployment, tmp_path)
        database = deployment.loopback.volume_dir("scheduler-data") / "clipsched.db"

        def count_outcomes() -> int:
            with sqlite3.connect(database) as conn:
                return int(conn.execute("SELECT count(*) FROM outcomes").fetchone()[0])

        url = deployment.urls["scheduler"]
        check_learners_landed(deployment, url, DOT_ENV["CLIPSCHED_RUN"], count_outcomes)


def _client_takes_several_urls(env: Mapping[str, str], live_url: str, work: Path) -> bool:
    """Whether ``SchedulerClient`` (as the learners import it) fails over a list of URLs."""
    dead = f"http://127.0.0.1:{free_port()}"
    probe = (
        "import sys\nfrom clipsched.client.http import SchedulerClient\n"
        "try:\n"
        "    with SchedulerClient(sys.argv[1], None, learner_id='probe', retries=0) as c:\n"
        "        c.health()\n"
        "except Exception:\n    sys.exit(1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, f"{dead},{live_url}"],
        env=dict(env),
        cwd=work,
        capture_output=True,
        timeout=60,
    )
    return done.returncode == 0


@pytest.mark.postgres
def test_learners_share_one_run_over_two_replicas_on_postgresql(tmp_path: Path) -> None:
    services = load_services([BASE_FILE, REPLICAS_FILE], DOT_ENV)
    with postgres_schema() as database_url, stopping([]) as processes:
        deployment = start_schedulers(services, tmp_path, processes, database_url)
        if not _client_takes_several_urls(
            base_env(tmp_path, _passthrough()), deployment.urls["scheduler"], tmp_path
        ):
            pytest.skip(
                "SchedulerClient does not take several URLs yet "
                "(learner/endpoints.py: docs/deploy.md, 'Replicas')"
            )
        _, env = _local(deployment, "learner")
        assert env["CLIPSCHED_URL"].split(",") == [
            deployment.urls["scheduler"],
            deployment.urls["scheduler-b"],
        ]
        # the learners prefer different replicas (by learner id): both serve the run
        assert {preferred_index(f"learner-{i}", 2) for i in range(1, SCALE + 1)} == {0, 1}
        start_learners(deployment, tmp_path)

        def count_outcomes() -> int:
            engine = create_engine(database_url)
            try:
                with engine.connect() as conn:
                    return int(conn.execute(text("SELECT count(*) FROM outcomes")).scalar_one())
            finally:
                engine.dispose()

        url = deployment.urls["scheduler-b"]
        check_learners_landed(deployment, url, DOT_ENV["CLIPSCHED_RUN"], count_outcomes)
