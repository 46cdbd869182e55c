"""Two replicas started at the same moment on a fresh PostgreSQL schema both come up."""

from pathlib import Path

import pytest

from tests.service_processes import (
    VENV_BIN,
    Process,
    base_env,
    free_port,
    postgres_schema,
    stopping,
    wait_healthy,
)


@pytest.mark.postgres
@pytest.mark.parametrize("attempt", range(3))
def test_two_replicas_starting_together_on_a_fresh_database_both_serve(
    tmp_path: Path, attempt: int
) -> None:
    with postgres_schema() as url, stopping([]) as processes:
        ports = [free_port(), free_port()]
        for i, port in enumerate(ports):
            env = base_env(tmp_path, {"CLIPSCHED_DATABASE_URL": url, "CLIPSCHED_PORT": str(port)})
            processes.append(
                Process(f"r{i}", [str(VENV_BIN / "clipsched"), "serve"], env, tmp_path)
            )
        for process, port in zip(processes, ports, strict=True):
            wait_healthy(process, f"http://127.0.0.1:{port}")
