#!/usr/bin/env bash
# Static check of the compose files without a Docker engine: `docker-compose config -q`
# (Debian's docker-compose 1.29 parses, validates and interpolates without a daemon).
#   bash scripts/compose_check.sh
# Installs Debian's docker-compose with apt-get when it is missing and we are root;
# otherwise skips with a message (exit 0), so a developer machine is never blocked.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker-compose >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "compose_check: installing Debian's docker-compose" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            docker-compose >/dev/null
    else
        echo "compose_check: SKIPPED (docker-compose missing and cannot install it: not root" \
            "or no apt-get); install it with 'apt-get install docker-compose'" >&2
        exit 0
    fi
fi

# Interpolation needs no host variables: every ${VAR:-default} has a default. A stray
# .env in the checkout must not change what is checked, so point --env-file at nothing.
empty_env="$(mktemp)"
trap 'rm -f "$empty_env"' EXIT

check() {
    echo "compose_check: docker-compose $* config -q" >&2
    docker-compose --env-file "$empty_env" "$@" config -q
}

check -f docker-compose.yml
# the override is only meaningful on top of the base file
check -f docker-compose.yml -f docker-compose.replicas.yml
echo "compose_check: OK ($(docker-compose version --short))" >&2
