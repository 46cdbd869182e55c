"""The package boundaries hold: no import circle between the project's modules, the
service never imports the learner, the client never imports the server or the learner.

Every import statement counts, at module level or inside a function (a lazy import is
still a dependency), read with ``ast`` from the source files.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scheduler_service", "learner", "clipsched")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Iterator[str]:
    """Every project module a file imports (``from a.b import c`` counts a.b and a.b.c)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def project_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        graph[name] = {m for m in imports_of(path) if m in files and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle_between_the_project_modules() -> None:
    assert find_cycle(project_graph()) is None, " -> ".join(find_cycle(project_graph()) or [])


def test_the_cycle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_the_service_never_imports_the_learner() -> None:
    graph = project_graph()
    offenders = {
        (m, d) for m, deps in graph.items() if m.startswith("scheduler_service")
        for d in deps if d.startswith("learner")
    }  # fmt: skip
    assert not offenders


def test_the_client_imports_neither_the_server_nor_the_learner() -> None:
    graph = project_graph()
    allowed = "scheduler_service.algorithms"  # the shared pure maths

    def forbidden(dep: str) -> bool:
        server = dep.startswith("scheduler_service") and not dep.startswith(allowed)
        return server or dep.startswith("learner")

    offenders = {
        (m, d) for m, deps in graph.items() if m.startswith("clipsched") for d in deps
        if forbidden(d)
    }  # fmt: skip
    assert not offenders
