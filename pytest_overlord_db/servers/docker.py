"""A throwaway pgvector container through testcontainers (Ryuk removes it if we die)."""
from __future__ import annotations

import os
from typing import Any

from .. import urls
from ..errors import ServerError
from .base import Server

# The flags that make a test server fast; durability is irrelevant for throwaway data.
FAST_FLAGS = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=300")


def docker_available(timeout: float = 1.0) -> tuple[bool, str]:
    """Whether a Docker engine answers within ``timeout`` seconds, and why not if it does not."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not os.path.exists("/var/run/docker.sock"):
        return False, "no DOCKER_HOST and no /var/run/docker.sock"
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # the SDK raises several unrelated types
        return False, f"Docker does not answer ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return True, "Docker answers"


def container_command() -> str:
    return "postgres " + " ".join(FAST_FLAGS)


class DockerServer(Server):
    kind = "docker"

    def __init__(self, image: str) -> None:
        self.image = image
        self.container: Any = None

    def start(self) -> str:
        ok, why = docker_available()
        if not ok:
            raise ServerError(
                f"--overlord-backend=docker, but {why}. Start Docker, or use --overlord-backend=embedded "
                "(no Docker needed) or --overlord-db-url=URL."
            )
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer(self.image, username="overlord", password="overlord", dbname="postgres", driver=None)
        container.with_command(container_command())
        try:
            container.start()
        except Exception as exc:
            raise ServerError(f"Could not start Docker image {self.image}: {exc}") from None
        self.container = container
        return urls.normalize(container.get_connection_url())

    def stop(self) -> None:
        if self.container is not None:
            self.container.stop()
            self.container = None

    def describe(self) -> str:
        return f"docker {self.image}"
