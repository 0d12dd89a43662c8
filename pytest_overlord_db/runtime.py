"""One run's database stack: settings -> server -> template -> clones, usable without pytest."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from . import urls
from .servers import Server, choose_backend, inspect_server, make_server, required_extensions
from .servers.embedded import EmbeddedServer
from .settings import Settings
from .template import Templates


@dataclass(frozen=True)
class ServerInfo:
    """What ``overlord_server`` yields: which backend runs and which template the tests use."""

    backend: str
    reason: str
    version: str
    version_num: int
    admin_url: str
    template: str
    template_url: str
    cache_key: str
    template_reused: bool
    build_seconds: float
    start_seconds: float
    datadir: Path | None

    def __str__(self) -> str:
        state = "reused" if self.template_reused else f"built in {self.build_seconds:.2f}s"
        return f"{self.backend} PostgreSQL {self.version}, template {self.template} ({state}) at {urls.mask(self.admin_url)}"


class Runtime:
    def __init__(self, settings: Settings, backend: str | None = None, reason: str = "") -> None:
        self.settings = settings
        if backend is None:
            backend, reason = choose_backend(settings)
        self.backend, self.reason = backend, reason
        self.server: Server = make_server(settings, backend)
        self.templates: Templates | None = None
        self.info: ServerInfo | None = None
        self._work_db: str | None = None

    def start(self) -> ServerInfo:
        started = time.perf_counter()
        try:
            admin_url = self.server.start()
            facts = inspect_server(admin_url, required_extensions(self.settings.migrations_dir))
            self.templates = Templates(admin_url, self.settings, facts)
            self.templates.drop_stale()
            template = self.templates.ensure()
        except BaseException:
            self.stop()
            raise
        self.info = ServerInfo(
            backend=self.backend,
            reason=self.reason,
            version=facts.version,
            version_num=facts.version_num,
            admin_url=admin_url,
            template=template.name,
            template_url=template.url,
            cache_key=template.key,
            template_reused=template.reused,
            build_seconds=template.build_seconds,
            start_seconds=time.perf_counter() - started,
            datadir=self.server.datadir if isinstance(self.server, EmbeddedServer) else None,
        )
        return self.info

    # -- clones -----------------------------------------------------------------------
    def work_db_url(self) -> str:
        """The per-process database the transactional fixtures run in (cloned once)."""
        assert self.templates and self.info
        if self._work_db is None:
            self._work_db = self.templates.clone(self.info.template, "work")
        return self.templates.url(self._work_db)

    def reset_work_db(self) -> None:
        """Throw the work database away (a test committed into it); the next use clones anew."""
        if self._work_db and self.templates:
            self.templates.drop(self._work_db)
        self._work_db = None

    def fresh_db(self) -> str:
        assert self.templates and self.info
        return self.templates.clone(self.info.template, "fresh")

    def drop(self, name: str) -> None:
        assert self.templates
        self.templates.drop(name)

    def stop(self) -> None:
        try:
            if self.templates is not None:
                if self._work_db:
                    self.reset_work_db()
                self.templates.close()
        finally:
            self.server.stop()
