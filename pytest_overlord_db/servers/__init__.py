"""Server backends: embedded (default without Docker), docker, url — one interface."""
from __future__ import annotations

from pathlib import Path

from ..config import Settings
from ..errors import ConfigError
from ..serverconf import EXTENSION_DIR_OPTION, SERVER_SETTING_OPTION
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
    if settings.extension_dirs:
        return "embedded", f"auto: {EXTENSION_DIR_OPTION} is for the embedded server"
    ok, why = docker_available(timeout=1.0)
    if ok:
        return "docker", "auto: Docker answers"
    return "embedded", f"auto: {why}"


def docker_state_dir(settings: Settings) -> Path:
    """The private folder where one project's processes share their container: beside the embedded server's."""
    base = settings.datadir or default_datadir(settings.root)
    return Path(f"{Path(base).resolve()}-docker")


def _refuse_what_we_cannot_configure(settings: Settings, backend: str) -> None:
    if settings.extension_dirs and backend != "embedded":
        whose = "the container's image decides which extensions it has (--overlord-image)" if backend == "docker" else \
            "a server of your own is not the plugin's to configure: install the extensions there"
        raise ConfigError(
            f"{EXTENSION_DIR_OPTION} (from {settings.sources.get('extension_dirs', 'option')}) adds extensions to the "
            f"embedded server only, and this run uses the {backend} backend: {whose}. Drop the option, or use "
            "--overlord-backend=embedded.")
    if settings.server_settings and backend == "url":
        raise ConfigError(
            f"{SERVER_SETTING_OPTION} (from {settings.sources.get('server_settings', 'option')}) configures a server "
            "the plugin starts (embedded or docker), and a server given by --overlord-db-url is not the plugin's to "
            "configure: set it there (ALTER SYSTEM, postgresql.conf), or per database or role (ALTER DATABASE ... SET).")


def make_server(settings: Settings, backend: str) -> Server:
    _refuse_what_we_cannot_configure(settings, backend)
    if backend == "url":
        assert settings.db_url
        return ExternalServer(settings.db_url, settings.admin_db)
    if backend == "docker":
        return DockerServer(settings.image, settings.docker_network, docker_state_dir(settings), str(settings.root),
                            settings.reuse_container, settings.reuse_idle, settings.server_settings)
    return EmbeddedServer(settings.datadir or default_datadir(settings.root), settings.root, settings.cache_max_age,
                          settings.extension_dirs, settings.server_settings)


__all__ = [
    "Server", "ServerFacts", "inspect_server", "choose_backend", "make_server",
    "EmbeddedServer", "DockerServer", "ExternalServer", "docker_available", "default_datadir",
    "docker_state_dir",
]
