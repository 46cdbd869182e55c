#!/usr/bin/env bash
# One entry point for a fresh machine: sets up .venv (CPU torch pinned by
# constraints.txt) and then runs the demo or the test suite.
#   bash dev.sh demo     # install, then run the five-clip demo
#   bash dev.sh test     # install, then lint, type-check and run the tests
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
VENV=.venv

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
    fi
    # The stamp skips a reinstall when nothing that defines the install changed.
    local stamp="$VENV/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[dev]"
        touch "$stamp"
    fi
}

case "${1:-}" in
    demo)
        shift
        setup
        exec "$VENV/bin/clipsched" demo "$@"
        ;;
    test)
        shift
        setup
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/mypy"
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: bash dev.sh demo|test [args...]" >&2
        exit 2
        ;;
esac
