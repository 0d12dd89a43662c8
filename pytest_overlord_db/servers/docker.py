"""A throwaway PostgreSQL container, one per run, shared by every process of it (xdist workers, parallel runs).

Like the embedded server, the processes of one project share it through a
private folder (``<datadir>-docker``): under its lock each registers in a
client list beside the container's id and URL, the first one starts the
container and the last one out removes it. A run killed with SIGKILL leaves
its container; the next start removes it (see ``containers`` for how owners
are told apart). With ``--overlord-docker-network=host`` the container shares
this machine's network and PostgreSQL listens on a free 127.0.0.1 port:
no bridge, no published port.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..errors import ServerError
from . import containers, settingsfile
from .base import Server
from .private import make_private, replace_file

# The flags that make a test server fast; durability is irrelevant for throwaway data.
FAST_FLAGS = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=300")


def docker_available(timeout: float = 1.0) -> tuple[bool, str]:
    """Whether a Docker engine answers within ``timeout`` seconds, and why not if it does not."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not os.path.exists("/var/run/docker.sock"):
        return False, "no DOCKER_HOST and no /var/run/docker.sock"
    try:
        client = containers.client(timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # the SDK raises several unrelated types
        return False, f"Docker does not answer ({type(exc).__name__}: {containers.first_line(exc) if str(exc) else ''})"
    return True, "Docker answers"


def container_command() -> str:
    return "postgres " + " ".join(FAST_FLAGS)


def _process_key() -> list[Any]:
    return [os.getpid(), containers.process_start(os.getpid())]


def _live(clients: list[list[Any]]) -> list[list[Any]]:
    return [c for c in clients if containers.process_start(int(c[0])) == c[1]]


class DockerServer(Server):
    kind = "docker"

    def __init__(self, image: str, network: str = "default", state_dir: Path | None = None, project: str = "",
                 reuse: bool = False, idle_seconds: float = containers.IDLE_DEFAULT,
                 settings: tuple[tuple[str, str], ...] = ()) -> None:
        self.image, self.network = image, network
        self.settings = settings  # --overlord-server-setting: more -c flags after the fast ones
        self.state_dir = Path(state_dir) if state_dir else None
        self.project = project
        self.reuse, self.idle_seconds = reuse, idle_seconds
        self.container_id: str | None = None

    @property
    def record_file(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / "container.json"

    def start(self) -> str:
        ok, why = docker_available()
        if not ok:
            raise ServerError(
                f"--overlord-backend=docker, but {why}. Start Docker, or use --overlord-backend=embedded "
                "(no Docker needed) or --overlord-db-url=URL."
            )
        if self.state_dir is None:
            raise ServerError("The docker backend needs a folder for its state (DockerServer(state_dir=...)).")
        make_private(self.state_dir)
        client = containers.client()
        try:
            with FileLock(str(self.state_dir / "lock"), timeout=180, mode=0o600):
                return self._join_or_start(client)
        finally:
            client.close()

    def _join_or_start(self, client: Any) -> str:
        record = self._read()
        clients = _live(record.get("clients", []))
        found = containers.get(client, record["id"]) if record.get("id") else None
        wanted = {"image": self.image, "network": self.network, "reuse": self.reuse,
                  "settings": [list(pair) for pair in self.settings]}  # a kept container with others is replaced
        usable = (found is not None and found.status == "running" and all(record.get(k) == v for k, v in wanted.items())
                  and (bool(clients) or self.reuse))  # no live user and not kept on purpose: a killed run's
        if not usable:
            containers.remove(found)
            clients = []
        containers.remove_orphans(client, keep=_in_use)
        if not usable:
            labels = containers.owner_labels(self.project, str(self.state_dir), self.reuse)
            try:
                started = containers.start(client, self.image, self.network, self.flags(), labels, secrets.token_hex(16))
            except ServerError as exc:
                refused = settingsfile.refused(str(exc).splitlines(), self.settings, f"PostgreSQL in {self.image}")
                if refused is None:
                    raise
                raise refused from None
            record = {"id": started.id, "url": started.url, **wanted}
            if self.reuse:
                containers.watch_idle(client, started.id)
        me = _process_key()
        if me not in clients:
            clients.append(me)
        self._write({**record, "clients": clients})
        self.container_id = record["id"]
        if self.reuse:
            containers.mark_users(client, self.container_id, len(clients), self.idle_seconds)
        return str(record["url"])

    def flags(self) -> tuple[str, ...]:
        return FAST_FLAGS + tuple(arg for name, value in self.settings for arg in ("-c", f"{name}={value}"))

    def stop(self) -> None:
        if self.container_id is None or self.state_dir is None:
            return
        with FileLock(str(self.state_dir / "lock"), timeout=180, mode=0o600):
            record = self._read()
            me = _process_key()
            clients = [c for c in _live(record.get("clients", [])) if c != me]
            if record.get("id") != self.container_id:
                self.container_id = None
                return  # replaced by another process already
            self._write({**record, "clients": clients} if clients or self.reuse else {})
            if not clients:
                client = containers.client()
                try:
                    if self.reuse:  # kept for the next run; its idle clock starts now
                        containers.mark_users(client, self.container_id, 0, self.idle_seconds)
                    else:
                        containers.remove(containers.get(client, self.container_id))
                finally:
                    client.close()
        self.container_id = None

    def describe(self) -> str:
        extras = [what for what, on in (("host network", self.network == "host"), ("reused between runs", self.reuse)) if on]
        return f"docker {self.image}" + (f" ({', '.join(extras)})" if extras else "")

    def log_tail(self, lines: int = 8) -> list[str]:
        if self.container_id is None:
            return []
        try:
            client = containers.client(timeout=5)
            try:
                text = client.containers.get(self.container_id).logs(tail=lines).decode(errors="replace")
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - the container may be gone with the server
            return []
        return [line for line in text.splitlines() if line.strip()]

    # -- the shared record ---------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        try:
            found = json.loads(self.record_file.read_text())
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def _write(self, record: dict[str, Any]) -> None:
        # The record holds the container's password: the folder is private, the file too.
        replace_file(self.record_file, json.dumps(record))


def remove_kept(state_dir: Path | None, dry_run: bool = False) -> list[tuple[str, str, str | None]]:
    """Remove the containers kept by ``--overlord-reuse-container`` that no live process uses: the one of the project
    whose state folder is ``state_dir``, or every one of ours on this host (None). (short id, project, why it was
    left alone or None) of each; nothing, and no wait, where no engine answers."""
    if not docker_available()[0]:
        return []
    client = containers.client()
    done: list[tuple[str, str, str | None]] = []
    try:
        for container in client.containers.list(all=True, filters={"label": f"{containers.REUSE}=1"}):
            labels = container.labels
            if labels.get(containers.OWNER_HOST) != containers.this_host():
                continue
            if state_dir is not None and labels.get(containers.STATE) != str(state_dir):
                continue
            why = "a run is using it" if _users(container) else None
            if why is None and not dry_run:
                containers.remove(container)
            done.append((container.short_id, labels.get(containers.PROJECT, "?"), why))
    finally:
        client.close()
    return done


def _users(container: Any) -> list[list[Any]]:
    state = container.labels.get(containers.STATE)
    try:
        record = json.loads((Path(state) / "container.json").read_text()) if state else None
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict) or record.get("id") != container.id:
        return []
    return _live(record.get("clients", []))


def _in_use(container: Any) -> bool:
    """Whether a container whose starter died still serves live processes of its project (other xdist workers):
    read from that project's record without its lock; a process joining it at this moment would find its
    users gone too and start its own."""
    if container.labels.get(containers.REUSE) == "1" and container.status == "running":
        return True  # kept between runs on purpose; it stops itself when idle
    return bool(_users(container))
