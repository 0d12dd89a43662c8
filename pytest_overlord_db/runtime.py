"""One run's database stack: settings -> server -> migrator -> template -> clones, usable without pytest."""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import urls
from .config import Settings
from .errors import OverlordError, ServerGone
from .migrators import Migrator, for_folder
from .servers import Server, choose_backend, inspect_server, make_server
from .servers.base import connect
from .servers.embedded import EmbeddedServer
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

    def __repr__(self) -> str:  # shown by pytest --showlocals and in assertion messages: no passwords
        return f"ServerInfo({self})"


@dataclass(frozen=True)
class FreshDatabase:
    """A database cloned from the migrated template for one test; dropped afterwards."""

    name: str
    url: str

    @property
    def dsn(self) -> dict[str, object]:
        """host, port, user, password, dbname: keyword arguments for psycopg2.connect (asyncpg calls
        dbname ``database``)."""
        return urls.dsn_parts(self.url)

    def __str__(self) -> str:
        return urls.mask(self.url)

    def __repr__(self) -> str:  # shown by pytest --showlocals and in assertion messages: no passwords
        return f"FreshDatabase(name={self.name!r}, url={urls.mask(self.url)!r})"


class FreshPool:
    """Fresh clones for ``overlord_fresh_db``, kept ready ahead of time.

    Cloning (~10 ms) and dropping (~6 ms) happen in background threads, each with a connection of its own:
    while a test runs, its predecessor's clone is dropped and the clones of the next ``AHEAD`` tests are made,
    side by side (measured here: two clones at once took 4.8 ms each, one after the other 10.7; a clone
    beside a drop 11.7 ms the pair, one after the other 14.7). A test that does work of its own then waits
    for none of it.
    """

    AHEAD = 2

    def __init__(self, templates: Templates, template: str) -> None:
        self.template = template
        self.foreground = templates

        def background(name: str) -> tuple[ThreadPoolExecutor, Templates]:
            return (ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"overlord-{name}"),
                    Templates(templates.admin_url, templates.settings, templates.facts, templates.migrator))

        self.cloners = [background(f"clone-{i}") for i in range(self.AHEAD)]
        self.dropper = background("drop")
        self.spares: deque[Future[str]] = deque()
        self._next = 0  # the cloner the next spare goes to

    def take(self) -> str:
        name = None
        while self.spares and name is None:
            try:
                name = self.spares[0].result()  # left in the queue until made: on Ctrl-C here close() drops it
            except Exception:
                name = None  # made again below, in the foreground, where its error is reported
            self.spares.popleft()
        if name is None:
            name = self.foreground.clone(self.template, "fresh")
        while len(self.spares) < self.AHEAD:
            worker, conn = self.cloners[self._next]
            self._next = (self._next + 1) % len(self.cloners)
            self.spares.append(worker.submit(conn.clone, self.template, "fresh"))
        return name

    def give_back(self, name: str) -> None:
        worker, conn = self.dropper
        worker.submit(conn.drop, name)

    def close(self) -> None:
        for worker, _ in self.cloners:
            worker.shutdown(wait=True)  # every spare is made by now, or failed
        for spare in self.spares:
            if spare.exception() is None:
                self.give_back(spare.result())
        self.spares.clear()
        self.dropper[0].shutdown(wait=True)
        for _, conn in [*self.cloners, self.dropper]:
            conn.close()


class Runtime:
    def __init__(self, settings: Settings, backend: str | None = None, reason: str = "",
                 report: Callable[[str], None] | None = None, migrator: Migrator | None = None) -> None:
        self.settings = settings
        self.report = report
        self.detail: Callable[[str], None] | None = None  # what only a verbose run shows
        if backend is None:
            backend, reason = choose_backend(settings)
        self.backend, self.reason = backend, reason
        self.server: Server = make_server(settings, backend)
        self.migrator = migrator or for_folder(settings.migrations_dir, settings.migrator)
        self.templates: Templates | None = None
        self.info: ServerInfo | None = None
        self._work_db: str | None = None
        self._work_url = ""
        self._fresh: FreshPool | None = None
        self.gone: ServerGone | None = None  # the server stopped mid-run: every later use says so

    def start(self) -> ServerInfo:
        started = time.perf_counter()
        try:
            admin_url = self.server.start()
            swept = self.server.swept if isinstance(self.server, EmbeddedServer) else []
            if swept and self.report is not None:
                self.report(f"overlord-db: removed {len(swept)} data folder(s) unused for over "
                            f"{self.settings.cache_max_age:g} day(s): {', '.join(map(str, swept))}")
            facts = inspect_server(admin_url, self.migrator.required_extensions(), self.backend)
            self.templates = Templates(admin_url, self.settings, facts, self.migrator)
            self.templates.report, self.templates.detail = self.report, self.detail
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
        if self.report is not None:  # the header is printed before any server starts: this is its last line
            self.report(f"overlord-db: {self.info}")
        return self.info

    # -- liveness ---------------------------------------------------------------------
    def check_alive(self, cause: BaseException) -> None:
        """After a lost connection: return if the server still answers (the caller reconnects);
        otherwise raise, now and for every later test, one paragraph with the end of its log."""
        if self.gone is not None:
            raise self.gone
        assert self.info is not None
        try:
            connect(self.info.admin_url, connect_timeout=3).close()
            return
        except OverlordError:
            pass
        what = urls.mask_text(str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__,
                              self.info.admin_url)
        tail = self.server.log_tail()
        log = ". The last lines of its log:\n" + "\n".join(f"    {line}" for line in tail) if tail else "."
        said = f"The PostgreSQL server ({self.server.describe()}) stopped during the run ({what})"
        self.gone = ServerGone(f"{said}; the first error says more.")  # for every later test
        raise ServerGone(f"{said}. Every remaining test that needs a database fails{log}")

    # -- clones -----------------------------------------------------------------------
    def work_db_url(self) -> str:
        """The per-process database the transactional fixtures run in (cloned once)."""
        assert self.templates and self.info
        if self._work_db is None:
            self._work_db = self.templates.clone(self.info.template, "work")
            self._work_url = self.templates.url(self._work_db)  # asked for by every test: built once
        return self._work_url

    def reset_work_db(self) -> None:
        """Throw the work database away (a test committed into it); the next use clones anew."""
        if self._work_db and self.templates:
            self.templates.drop(self._work_db)
        self._work_db = None

    def fresh_db(self) -> FreshDatabase:
        """A new clone of the template for one test; give it back with ``release_fresh_db``."""
        assert self.templates and self.info
        if self._fresh is None:
            self._fresh = FreshPool(self.templates, self.info.template)
        name = self._fresh.take()
        return FreshDatabase(name, self.templates.url(name))

    def release_fresh_db(self, db: FreshDatabase) -> None:
        assert self._fresh is not None
        self._fresh.give_back(db.name)

    def drop_db(self, name: str) -> None:
        """Drop a database of this run made outside the fresh pool (a migration test's, say)."""
        assert self.templates is not None
        self.templates.drop(name)

    def keep_db(self, name: str) -> None:
        """Leave one of this run's databases for debugging (the next run drops it); an embedded server
        stays running after the run, so it can be reached."""
        assert self.templates is not None
        self.templates.keep(name)
        self.server.keep_after_run()

    def stop(self) -> None:
        if self.gone is not None:
            self._abandon()
            return
        try:
            if self._fresh is not None:
                self._fresh.close()
                self._fresh = None
            if self.templates is not None:
                if self._work_db:
                    self.reset_work_db()
                self.templates.close()
        finally:
            self.server.stop()

    def _abandon(self) -> None:
        """Stop after the server died: nothing is left to clean up in it, and nothing more to say."""
        closers = [self._fresh.close] if self._fresh is not None else []
        closers += [self.templates.close] if self.templates is not None else []
        for close in [*closers, self.server.stop]:
            try:
                close()
            except Exception:  # noqa: BLE001 - the run has already reported why
                pass
        self._fresh = None
