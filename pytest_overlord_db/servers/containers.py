"""The plugin's containers on a Docker engine: started with owner labels, waited for, removed when their owner died.

Ryuk (testcontainers' reaper) is not used: it removes a session's containers
when the process that started them exits, which would pull the server from
under the xdist workers that share it; and it needs a published port and an
image from a registry. Instead every container names its owner in labels, and
each start removes the containers whose owners on this host are dead.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote, urlsplit

import psutil

from .. import urls
from ..errors import ServerError

LABEL = "dev.overlord-db"  # every container of ours has it; the others below name the owner
OWNER_HOST, OWNER_PID, OWNER_START = f"{LABEL}.owner-host", f"{LABEL}.owner-pid", f"{LABEL}.owner-start"
PROJECT, STATE, REUSE = f"{LABEL}.project", f"{LABEL}.state", f"{LABEL}.reuse"
IDLE_DEFAULT = 1800.0  # seconds a reused container waits for the next run before it stops itself
USERS_FILE = "/tmp/ovl-users"  # inside the container: users and allowed idle seconds; its age is the idle time
READY_TIMEOUT = 90.0  # initdb plus the first start, on a slow CI runner
DEFAULT_PGDATA = "/var/lib/postgresql/data"  # the official images up to 17, when an image names none


@dataclass(frozen=True)
class Started:
    id: str
    url: str  # a superuser URL to the maintenance database


def this_host() -> str:
    return socket.gethostname()


def process_start(pid: int) -> str | None:
    """When ``pid`` started (it tells a live owner from a new process that got its number), or None if it is gone."""
    try:
        return f"{psutil.Process(pid).create_time():.3f}"
    except psutil.Error:
        return None


def owner_labels(project: str, state: str, reuse: bool = False) -> dict[str, str]:
    pid = os.getpid()
    return {LABEL: "1", OWNER_HOST: this_host(), OWNER_PID: str(pid), OWNER_START: process_start(pid) or "",
            PROJECT: project, STATE: state, REUSE: "1" if reuse else "0"}


def owner_dead(labels: dict[str, str]) -> bool:
    """Whether the process that started a container is gone. Another host's owners cannot be seen from here, so
    their containers are never touched."""
    if labels.get(OWNER_HOST) != this_host():
        return False
    try:
        pid = int(labels.get(OWNER_PID, ""))
    except ValueError:
        return True
    return process_start(pid) != labels.get(OWNER_START)


def client(timeout: float = 30.0) -> Any:
    import docker

    return docker.from_env(timeout=timeout)


def free_port() -> int:
    """A port free on 127.0.0.1 now; the container binds it a moment later (a lost race is retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def published_host() -> tuple[str, str]:
    """Where a published port is reached, and the host address it is bound to: loopback for a local engine."""
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith(("tcp://", "http://", "https://", "ssh://")):
        return urlsplit(host).hostname or "127.0.0.1", "0.0.0.0"
    return "127.0.0.1", "127.0.0.1"


def ensure_image(docker_client: Any, image: str) -> Any:
    """The image, pulled only when the engine lacks it; a failure names the image and what to do."""
    import docker.errors

    try:
        return docker_client.images.get(image)
    except docker.errors.ImageNotFound:
        pass
    try:
        return docker_client.images.pull(image)
    except docker.errors.DockerException as exc:
        raise ServerError(
            f"Docker image {image} is not on the engine and could not be pulled ({first_line(exc)}). Pull or build "
            "it first, or name another image with --overlord-image."
        ) from None


def data_directory(found: Any) -> str:
    """Where the image's entrypoint puts the cluster: its PGDATA (the official images set it; 18 moved it)."""
    for item in (found.attrs.get("Config") or {}).get("Env") or []:
        name, _, value = str(item).partition("=")
        if name == "PGDATA" and value:
            return value
    return DEFAULT_PGDATA


def _starts_as_root(found: Any) -> bool:
    user = str((found.attrs.get("Config") or {}).get("User") or "")
    return user.split(":", 1)[0] in ("", "root", "0")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def start(docker_client: Any, image: str, network: str, fast_flags: tuple[str, ...], labels: dict[str, str],
          password: str) -> Started:
    """Start one PostgreSQL container and wait until it answers; on any failure it is removed, never left
    ``Created`` or running."""
    # The cluster on a tmpfs, as the embedded server's on /dev/shm: measured on this engine, the container is
    # ready in 0.9 s instead of 2.0 s and CREATE DATABASE takes 28 ms instead of 175 ms. A test database is
    # small and lives as long as its container. The mount is root's: only an entrypoint that starts as root
    # (the official images') can give it to its postgres user, so an image that starts as another user keeps
    # its cluster where it had it.
    found = ensure_image(docker_client, image)
    tmpfs = {data_directory(found): "rw,mode=0700"} if _starts_as_root(found) else {}
    for attempt in range(3):
        container = None
        try:
            kwargs: dict[str, Any] = {"tmpfs": tmpfs} if tmpfs else {}
            command = ["postgres", *fast_flags]
            if network == "host":
                port = free_port()
                command += ["-c", f"port={port}", "-c", "listen_addresses=127.0.0.1"]
                kwargs["network_mode"] = "host"
                host = "127.0.0.1"
            else:
                host, bind = published_host()
                kwargs["ports"] = {"5432/tcp": (bind, None)}
            container = docker_client.containers.create(
                image, command=command, detach=True, labels=labels,
                environment={"POSTGRES_USER": "overlord", "POSTGRES_PASSWORD": password, "POSTGRES_DB": "postgres"},
                **kwargs)
            container.start()
            if network != "host":
                container.reload()
                port = _published_port(container, image)
            url = f"postgresql://overlord:{quote(password, safe='')}@{host}:{port}/postgres"
            wait_ready(container, url)
            return Started(container.id, url)
        except _PortTaken:
            remove(container)
            if attempt == 2:
                raise ServerError(f"Docker image {image}: PostgreSQL found no free port on 127.0.0.1 in three tries.") from None
        except BaseException as exc:
            remove(container)
            if isinstance(exc, ServerError):
                raise
            if not isinstance(exc, Exception):
                raise  # Ctrl-C: the container is gone, the interrupt goes on
            raise ServerError(f"Could not start a container of Docker image {image}: {first_line(exc)}") from None
    raise AssertionError("unreachable")


def _published_port(container: Any, image: str) -> int:
    # An engine without a bridge network (dockerd --bridge=none, some CI runners) starts the container but
    # publishes nothing: docker-py then shows no port at all, where a KeyError would be all the user saw.
    bindings = ((container.attrs.get("NetworkSettings") or {}).get("Ports") or {}).get("5432/tcp") or []
    for binding in bindings:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    mode = (container.attrs.get("HostConfig") or {}).get("NetworkMode", "?")
    raise ServerError(
        f"The Docker engine started a container of {image} but published no port for its PostgreSQL (network mode "
        f"{mode!r}; an engine without a bridge network publishes none). Use --overlord-docker-network=host "
        "(OVERLORD_DOCKER_NETWORK=host): the container then shares this machine's network and needs no published port.")


class _PortTaken(Exception):
    pass


def wait_ready(container: Any, url: str, timeout: float = READY_TIMEOUT,
               connect: Callable[[str], None] | None = None) -> None:
    """Poll until PostgreSQL accepts a connection on its TCP port (the image's entrypoint runs its temporary
    initdb server on a unix socket only, so a TCP answer is the real server); a container that exits is an error
    with the end of its log."""
    connect = connect or _connect
    deadline = time.monotonic() + timeout
    # A refused TCP connection and a container.reload() cost a few ms each; a longer sleep only waits
    # past the moment the server came up (the image's initdb takes about a second).
    delay = 0.02
    while True:
        try:
            connect(url)
            return
        except Exception as exc:  # noqa: BLE001 - not up yet; the container's state decides
            last = exc
        container.reload()
        if container.status not in ("created", "running"):
            log = container.logs(tail=12).decode(errors="replace")
            if "could not bind" in log or "Address already in use" in log:
                raise _PortTaken()
            tail = "\n".join(f"    {line}" for line in log.splitlines() if line.strip())
            raise ServerError(f"The container stopped before PostgreSQL was ready (status {container.status}). "
                              f"The last lines of its log:\n{tail}")
        if time.monotonic() > deadline:
            raise ServerError(f"PostgreSQL in the container did not answer within {timeout:.0f} s "
                              f"({urls.mask_text(first_line(last), url)}).")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


def _connect(url: str) -> None:
    import psycopg2

    psycopg2.connect(url, connect_timeout=3).close()


def remove(container: Any) -> None:
    if container is None:
        return
    import docker.errors

    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        pass


def get(docker_client: Any, container_id: str) -> Any:
    """The container with that id, whatever its state, or None."""
    import docker.errors

    try:
        return docker_client.containers.get(container_id)
    except docker.errors.NotFound:
        return None


def watch_idle(docker_client: Any, container_id: str) -> None:
    """A reused container stops itself once nobody has used it for the idle time the last run set: a small loop
    inside it (any image with a POSIX shell) stops PostgreSQL, PID 1, when the users file says 0 and has not
    changed for that long. The next run finds it exited and starts a new one."""
    loop = (f'while sleep 1; do set -- $(cat {USERS_FILE} 2>/dev/null || echo 1 0); '
            f'age=$(( $(date +%s) - $(stat -c %Y {USERS_FILE} 2>/dev/null || date +%s) )); '
            'if [ "$1" = 0 ] && [ "$age" -ge "${2:-0}" ]; then kill -INT 1; exit 0; fi; done')
    docker_client.containers.get(container_id).exec_run(["sh", "-c", loop], detach=True, user="root")


def mark_users(docker_client: Any, container_id: str, users: int, idle_seconds: float) -> None:
    """How many processes use the container now, and how long it may then wait unused (this run's setting)."""
    docker_client.containers.get(container_id).exec_run(
        ["sh", "-c", f"echo {int(users)} {int(idle_seconds)} > {USERS_FILE}"], user="root")


def remove_orphans(docker_client: Any, keep: Callable[[Any], bool]) -> list[str]:
    """Remove our containers whose owners on this host are dead, except those ``keep`` says are still in use."""
    removed = []
    for container in docker_client.containers.list(all=True, filters={"label": LABEL}):
        if owner_dead(container.labels) and not keep(container):
            remove(container)
            removed.append(container.short_id)
    return removed
