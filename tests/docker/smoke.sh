#!/usr/bin/env bash
# The docker-compose stack started for real (run by .ci/run after `make test`):
#   Docker and compose installed from Debian when missing, dockerd started when not running,
#   base images built offline when Docker Hub cannot be reached (tests/docker/base_images.sh),
#   the host's extra CA certificates trusted by the image build; then postgres, redis, migrate,
#   api and one worker up, a job trained and predicted through the API, a second worker, one
#   worker crashed mid-job, the job finished with every epoch once, /metrics scraped, the JSON
#   logs read (tests/docker/compose_flow.py). Everything it started goes, even on failure:
#   containers, volumes, network, and dockerd when it started it.
# Exit 0 with "SKIPPED: why" where Docker cannot run at all (BPS_SKIP_DOCKER=1 skips it too).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
work=$(mktemp -d /tmp/bps-smoke.XXXXXX)
project="bpssmoke$$"
dockerd_pid=""
compose_cmd=()

say() { echo "[smoke $(date -u +%H:%M:%S)] $*"; }
skip() { say "SKIPPED: $*"; exit 0; }

teardown() {
    local status=$?
    if [ ${#compose_cmd[@]} -gt 0 ]; then
        if [ "$status" -ne 0 ]; then
            say "failed ($status); the last log lines of each service:"
            "${compose_cmd[@]}" logs --no-color --tail=40 2>&1 | tail -200 || true
        fi
        "${compose_cmd[@]}" down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1 || true
    fi
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        wait "$dockerd_pid" 2>/dev/null || true
        say "stopped the dockerd it started"
    fi
    rm -rf "$work"
    exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

[ -z "${BPS_SKIP_DOCKER:-}" ] || skip "BPS_SKIP_DOCKER is set"

install_docker() {  # Debian's docker.io and docker-compose (1.29; the v2 plugin is not packaged)
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
    say "installing docker.io and docker-compose from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io docker-compose >"$work/apt.log" 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -q docker.io docker-compose >"$work/apt.log" 2>&1; }
}

start_dockerd() {
    [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null || return 1
    say "starting dockerd"
    dockerd >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return 0
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 0.5
    done
    say "dockerd did not come up: $(tail -3 "$work/dockerd.log" | tr '\n' ' ')"
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    dockerd_pid=""
    return 1
}

has_compose() { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null; }
{ command -v docker >/dev/null && command -v dockerd >/dev/null && has_compose; } || install_docker \
    || skip "Docker or a compose client is missing and cannot be installed here (needs root and apt-get)"
has_compose || skip "no compose client (docker compose or docker-compose)"
docker info >/dev/null 2>&1 || start_dockerd \
    || skip "no Docker engine can run here: $(docker info 2>&1 | grep -iE 'error|denied|cannot' | head -1)"

if docker compose version >/dev/null 2>&1; then compose_bin=(docker compose); else compose_bin=(docker-compose); fi

tests/docker/base_images.sh "$work/images.env"
set -a
# shellcheck disable=SC1091
. "$work/images.env"
set +a
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    BPS_CA_CERTS=$(cat /usr/local/share/ca-certificates/*.crt)  # a TLS-intercepting proxy's CA
    export BPS_CA_CERTS
fi
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export BPS_IMAGE=bps-smoke/backprop-service:latest BPS_API_PORT FLOWER_PORT JOB_HEARTBEAT_TIMEOUT_S=10
BPS_API_PORT=$(free_port)
FLOWER_PORT=$(free_port)
compose_cmd=("${compose_bin[@]}" -p "$project" -f docker-compose.yml)

started=$(date +%s)
say "building the image on ${BPS_BASE_IMAGE}"
"${compose_cmd[@]}" build api >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
say "built in $(( $(date +%s) - started )) s; starting postgres, redis, migrate, api and one worker"
"${compose_cmd[@]}" up -d --no-build postgres redis migrate api worker-cpu >"$work/up.log" 2>&1 \
    || { cat "$work/up.log"; exit 1; }
key=$("${compose_cmd[@]}" run --rm -T migrate bps keys create smoke 2>/dev/null | tail -1 | tr -d '\r')
[ -n "$key" ] || { say "bps keys create printed no key"; exit 1; }

COMPOSE="${compose_cmd[*]}" "$PYTHON" -m tests.docker.compose_flow "http://127.0.0.1:${BPS_API_PORT}" "$key"
say "passed in $(( $(date +%s) - started )) s"
