"""Server backends: embedded (default without Docker), docker, url — one interface."""
from __future__ import annotations

from pathlib import Path

from ..config import Settings
from .base import Server, ServerFacts, inspect_server
from .docker import DockerServer, docker_available
from .embedded import EmbeddedServer, default_datadir
from .external import ExternalServer


def choose_backend(settings: Settings) -> tuple[str, str]:
    """Resolve ``auto``: a URL if given, else Docker if it answers within a second, else embedded."""
    if settings.backend != "auto":
        return settings.backend, "chosen by option"
    if settings.db_url:
        return "url", "auto: a database URL was given"
    ok, why = docker_available(timeout=1.0)
    if ok:
        return "docker", "auto: Docker answers"
    return "embedded", f"auto: {why}"


def docker_state_dir(settings: Settings) -> Path:
    """The private folder where one project's processes share their container: beside the embedded server's."""
    base = settings.datadir or default_datadir(settings.root)
    return Path(f"{Path(base).resolve()}-docker")


def make_server(settings: Settings, backend: str) -> Server:
    if backend == "url":
        assert settings.db_url
        return ExternalServer(settings.db_url, settings.admin_db)
    if backend == "docker":
        return DockerServer(settings.image, settings.docker_network, docker_state_dir(settings), str(settings.root),
                            settings.reuse_container, settings.reuse_idle)
    return EmbeddedServer(settings.datadir or default_datadir(settings.root), settings.root, settings.cache_max_age)


__all__ = [
    "Server", "ServerFacts", "inspect_server", "choose_backend", "make_server",
    "EmbeddedServer", "DockerServer", "ExternalServer", "docker_available", "default_datadir",
    "docker_state_dir",
]
