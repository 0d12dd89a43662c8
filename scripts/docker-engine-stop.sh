#!/usr/bin/env bash
# Stops the engine scripts/docker-engine.sh started: only the PID it recorded, never a process found by name.
# Containers still there are removed first. The image and the rootfs cache are kept; PURGE=1 deletes them too.
set -uo pipefail
STATE="${OVERLORD_DOCKER_STATE:-/var/tmp/overlord-docker}"
SOCK=/run/overlord-docker.sock
pidf="$STATE/engine.pid"
purge() {
    [ -n "${PURGE:-}" ] || return 0
    rm -rf /var/lib/overlord-docker "$STATE"
    echo "purged /var/lib/overlord-docker and $STATE"
}
[ -f "$pidf" ] || { echo "docker-engine-stop: no $pidf, nothing to stop"; purge; exit 0; }
pid="$(cat "$pidf")"
comm="$(ps -p "$pid" -o comm= 2>/dev/null || true)"
case "$comm" in
    "") echo "docker-engine-stop: PID $pid is gone"; rm -f "$pidf"; purge; exit 0 ;;
    dockerd) ;;
    *) echo "docker-engine-stop: PID $pid is '$comm', not the dockerd we started; not touching it" >&2; exit 1 ;;
esac
ids="$(DOCKER_HOST=unix://$SOCK docker ps -aq 2>/dev/null || true)"
if [ -n "$ids" ]; then
    echo "docker-engine-stop: removing containers left: $(echo $ids)"
    # shellcheck disable=SC2086 # one id per word
    DOCKER_HOST=unix://$SOCK docker rm -f $ids >/dev/null
fi
kill -TERM "$pid"
for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$pid" 2>/dev/null; then echo "docker-engine-stop: PID $pid still alive after 20 s; KILL"; kill -KILL "$pid"; fi
rm -f "$pidf"
echo "docker-engine-stop: stopped dockerd (PID $pid)"
purge
