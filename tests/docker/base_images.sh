#!/usr/bin/env bash
# Stand-ins for python:3.11-slim, postgres:16 and redis:7 built without a registry, for machines
# that cannot reach Docker Hub: `debootstrap --variant=minbase bookworm` imported as a base
# image, then Debian's python3, postgresql and redis-server on it. The rootfs tarball is kept
# under $BPS_SMOKE_CACHE and each image is built only when missing, so reruns take seconds.
# Usage: base_images.sh ENV_FILE   -- writes BPS_BASE_IMAGE=, POSTGRES_IMAGE=, REDIS_IMAGE= to ENV_FILE
set -euo pipefail
env_file=${1:?usage: base_images.sh ENV_FILE}
cache=${BPS_SMOKE_CACHE:-/var/cache/bps-smoke}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
: > "$env_file"

reachable() {  # the registry answers: pull the real image
    timeout "${BPS_PULL_TIMEOUT_S:-60}" docker pull -q "$1" >/dev/null 2>&1
}

base_rootfs() {
    if docker image inspect bps-standin/bookworm:minbase >/dev/null 2>&1; then return; fi
    mkdir -p "$cache"
    if [ ! -s "$cache/bookworm-minbase.tar" ]; then
        command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
        local root; root=$(mktemp -d)
        echo "base images: debootstrap bookworm (minbase) from $mirror" >&2
        debootstrap --variant=minbase bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
            || { tail -20 "$cache/debootstrap.log" >&2; rm -rf "$root"; return 1; }
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar -C "$root" -cf "$cache/bookworm-minbase.tar.tmp" . && mv "$cache/bookworm-minbase.tar.tmp" "$cache/bookworm-minbase.tar"
        rm -rf "$root"
    fi
    docker import "$cache/bookworm-minbase.tar" bps-standin/bookworm:minbase >/dev/null
}

standin() {  # standin TAG: build the stand-in from the Dockerfile on stdin unless it exists
    if ! docker image inspect "$1" >/dev/null 2>&1; then
        echo "base images: building $1" >&2
        docker build -q -t "$1" - >/dev/null
    fi
}

APT='apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends'
CLEAN='apt-get clean && rm -rf /var/lib/apt/lists/*'

python_image() {
    standin bps-standin/python:3.11 <<DOCKERFILE
FROM bps-standin/bookworm:minbase
RUN $APT python3 python3-venv ca-certificates && $CLEAN && python3 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
DOCKERFILE
}

postgres_image() {
    # Initialised with UTF-8 (the server's own default would be SQL_ASCII under LANG=C); the
    # POSTGRES_USER/PASSWORD/DB variables of the official image are honoured on first start.
    standin bps-standin/postgres:15 <<'DOCKERFILE'
FROM bps-standin/bookworm:minbase
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main.conf \
 && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql-15 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && printf '%s\n' '#!/bin/sh' 'set -e' 'BIN=/usr/lib/postgresql/15/bin; D=/var/lib/postgresql/data' \
    'mkdir -p "$D" /var/run/postgresql && chown postgres "$D" /var/run/postgresql && chmod 700 "$D"' \
    'if [ ! -s "$D/PG_VERSION" ]; then' \
    '  printf %s "${POSTGRES_PASSWORD:-postgres}" > /tmp/pw && chown postgres /tmp/pw' \
    '  runuser -u postgres -- $BIN/initdb -D "$D" -U "${POSTGRES_USER:-postgres}" --pwfile=/tmp/pw -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null' \
    '  rm /tmp/pw && echo "host all all all scram-sha-256" >> "$D/pg_hba.conf"' \
    '  runuser -u postgres -- $BIN/pg_ctl -D "$D" -o "-c listen_addresses=" -w start >/dev/null' \
    '  runuser -u postgres -- psql -q -U "${POSTGRES_USER:-postgres}" -d postgres -c "CREATE DATABASE \"${POSTGRES_DB:-postgres}\"" || true' \
    '  runuser -u postgres -- $BIN/pg_ctl -D "$D" -m fast -w stop >/dev/null' \
    'fi' \
    'exec runuser -u postgres -- $BIN/postgres -D "$D" -c listen_addresses=*' > /usr/local/bin/postgres-entrypoint \
 && chmod +x /usr/local/bin/postgres-entrypoint
ENV LANG=C.UTF-8 PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EXPOSE 5432
CMD ["postgres-entrypoint"]
DOCKERFILE
}

redis_image() {
    # Debian's redis-server refuses outside clients without a password (protected mode); the
    # official image turns it off, and so does this one.
    standin bps-standin/redis:7 <<'DOCKERFILE'
FROM bps-standin/bookworm:minbase
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server \
 && apt-get clean && rm -rf /var/lib/apt/lists/* && mkdir -p /data \
 && printf '%s\n' '#!/bin/sh' 'if [ "$1" = redis-server ]; then shift; exec redis-server --protected-mode no --bind 0.0.0.0 "$@"; fi' 'exec "$@"' \
    > /usr/local/bin/redis-entrypoint && chmod +x /usr/local/bin/redis-entrypoint
WORKDIR /data
ENTRYPOINT ["redis-entrypoint"]
CMD ["redis-server"]
DOCKERFILE
}

pick() {  # pick VAR REAL_IMAGE BUILDER STANDIN_TAG
    if [ -n "${BPS_SMOKE_OFFLINE:-}" ] || ! reachable "$2"; then
        base_rootfs && "$3" && echo "$1=$4" >> "$env_file"
    else
        echo "$1=$2" >> "$env_file"
    fi
}

pick BPS_BASE_IMAGE python:3.11-slim python_image bps-standin/python:3.11
if grep -q '=bps-standin/' "$env_file"; then export BPS_SMOKE_OFFLINE=1; fi  # one failed pull is enough
pick POSTGRES_IMAGE postgres:16 postgres_image bps-standin/postgres:15
pick REDIS_IMAGE redis:7 redis_image bps-standin/redis:7
cat "$env_file" >&2
