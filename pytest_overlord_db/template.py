"""The template: migrations applied once into a database named by a content hash, then cloned.

The name carries the migrator's content hash (every migration file and the
tool's version), the seed files in use, the server's major version and the
plugin's version, so a cached template is reused only while all of them are
unchanged (yoyo itself notices only new file *names*). It is built under a PostgreSQL advisory lock
(concurrent runs and xdist workers never race, and a killed builder's lock
dies with its connection) in a database with a temporary name, renamed only
when complete: a crash never leaves a half-built template that looks ready.

Every database we create carries a COMMENT marking it as ours; cleanup only
ever drops databases with that mark, for this project.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil
import psycopg2
from psycopg2 import sql

from . import __version__, interrupts, seeds, urls
from .config import Settings
from .errors import OverlordError
from .migrators import Migrator, for_folder
from .polling import poll
from .servers.base import ServerFacts, connect
from .watch import watched

MARK = "pytest-overlord-db"
_counter = itertools.count(1)


def project_id(settings: Settings) -> str:
    """Identifies one project (and seed choice) on a shared server: its templates replace each other."""
    ident = f"{settings.migrations_dir}\0{settings.seed or ''}"
    return hashlib.sha256(ident.encode()).hexdigest()[:8]


def cache_key(migrator: Migrator, seed_files: list[Path], server_major: int) -> str:
    h = hashlib.sha256(migrator.content_hash().encode())
    for path in seed_files:
        h.update(b"S\0" + path.name.encode() + b"\0" + path.read_bytes())
    h.update(f"pg{server_major} plugin{__version__}".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Template:
    name: str
    key: str
    url: str
    reused: bool
    build_seconds: float


class Templates:
    """Builds the template once and clones it; all admin work goes through one autocommit connection."""

    def __init__(self, admin_url: str, settings: Settings, facts: ServerFacts, migrator: Migrator | None = None) -> None:
        self.admin_url = urls.normalize(admin_url)
        self.settings = settings
        self.facts = facts
        self.migrator = migrator or for_folder(settings.migrations_dir, settings.migrator)
        self.report: Callable[[str], None] | None = None  # where "still migrating..." lines go
        self.project = project_id(settings)
        self.prefix = f"ovl_{self.project}_"
        # In every name this process makes: a database a killed run left unmarked (it died between
        # CREATE DATABASE and COMMENT ON DATABASE) is still known by its name to be ours, and whose.
        self.host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
        self._conn: psycopg2.extensions.connection | None = None

    # -- connection & bookkeeping -----------------------------------------------
    @property
    def conn(self) -> "psycopg2.extensions.connection":
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.admin_url)
            self._conn.autocommit = True
            interrupts.register(self._conn)  # a wait for the build lock ends on Ctrl-C too
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            interrupts.close(self._conn)

    def url(self, name: str) -> str:
        return urls.with_database(self.admin_url, name)

    def _execute(self, query: sql.Composable | str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._run(query, params)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if self._conn is None or not self._conn.closed:
                raise  # the statement failed, not the connection
            # Its backend was terminated (pg_terminate_backend, a restart): once more, on a new one.
            return self._run(query, params)

    def _run(self, query: sql.Composable | str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def _mark(self, name: str, kind: str) -> None:
        note = json.dumps({"by": MARK, "kind": kind, "project": self.project, "host": socket.gethostname(), "pid": os.getpid()})
        self._execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(note)))

    def _named_ours(self) -> list[tuple[str, str | None]]:
        """(name, comment) of every database whose name has this project's prefix."""
        return [(str(name), comment) for name, comment in self._execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname LIKE %s",
            (self.prefix.replace("_", r"\_") + "%",),
        )]

    def ours(self, rows: list[tuple[str, str | None]] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(name, mark) of every database of this project that we created."""
        found = []
        for name, comment in self._named_ours() if rows is None else rows:
            try:
                mark = json.loads(comment or "")
            except ValueError:
                continue
            if isinstance(mark, dict) and mark.get("by") == MARK and mark.get("project") == self.project:
                found.append((name, mark))
        return found

    def exists(self, name: str) -> bool:
        return bool(self._execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)))

    # -- the template ---------------------------------------------------------------
    def key(self) -> str:
        return cache_key(self.migrator, self.settings.seed_files(), self.facts.major)

    def template_name(self, key: str) -> str:
        return f"{self.prefix}t_{key}"

    def ensure(self) -> Template:
        key = self.key()
        name = self.template_name(key)
        if self.exists(name):  # the rename is the last step, so existing means complete
            return Template(name, key, self.url(name), reused=True, build_seconds=0.0)
        lock_id = int.from_bytes(hashlib.sha256(f"{MARK}:{self.project}".encode()).digest()[:8], "big", signed=True)
        self._execute("SELECT pg_advisory_lock(%s)", (lock_id,))
        try:
            if self.exists(name):  # another process built it while we waited
                return Template(name, key, self.url(name), reused=True, build_seconds=0.0)
            self.drop_stale()
            started = time.perf_counter()
            self._build(name)
            seconds = time.perf_counter() - started
            self._drop_old_templates(keep=name)
            return Template(name, key, self.url(name), reused=False, build_seconds=seconds)
        finally:
            self._execute("SELECT pg_advisory_unlock(%s)", (lock_id,))

    def _build(self, name: str) -> None:
        building = f"{self.prefix}b_{self.host}_{os.getpid()}_0"
        self.drop(building)
        self._execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(building)))
        self._mark(building, "build")
        try:
            with watched(self.report, self.settings.migration_timeout, "building the template") as watch:
                self.migrator.apply(self.url(building), self.migrator.chain(), lock=False, on_progress=watch.step)
            files = self.settings.seed_files()
            if files:
                conn = connect(self.url(building))
                try:
                    seeds.load(conn, files)
                finally:
                    conn.close()
        except BaseException:
            self.drop(building)
            raise
        self._wait_idle(building)
        self._execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(building), sql.Identifier(name)))
        self._mark(name, "template")

    def _drop_old_templates(self, keep: str) -> None:
        for other, mark in self.ours():
            if mark.get("kind") == "template" and other != keep:
                try:
                    self._execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(other)))
                except psycopg2.Error:
                    pass  # still being cloned by another run; the next build tries again

    def _unmarked_of_this_host(self, rows: list[tuple[str, str | None]]) -> list[tuple[str, int]]:
        """(name, pid) of databases named as this host's processes name them but never marked."""
        pattern = re.compile(rf"{re.escape(self.prefix)}[bwfr]_{self.host}_(\d+)_\d+")
        return [(name, int(m.group(1))) for name, comment in rows if comment is None and (m := pattern.fullmatch(name))]

    def drop_stale(self) -> None:
        """Drop clones and builds left by dead processes of this host (a SIGKILLed run, say), and the
        databases an earlier run kept for debugging (``--overlord-keep-failed``)."""
        host = socket.gethostname()
        rows = self._named_ours()  # one query for the marked and the unmarked
        stale = [(name, int(mark.get("pid", 0))) for name, mark in self.ours(rows)
                 if mark.get("kind") in ("build", "work", "fresh", "roundtrip", "kept") and mark.get("host") == host]
        kept = {name for name, mark in self.ours(rows) if mark.get("kind") == "kept"}
        for name, pid in stale + self._unmarked_of_this_host(rows):
            if pid != os.getpid() and not psutil.pid_exists(pid):
                try:
                    self.drop(name)
                    if name in kept and self.report is not None:
                        self.report(f"overlord-db: dropped {name}, kept by an earlier run for debugging a failed test")
                except psycopg2.errors.InsufficientPrivilege as exc:
                    # Made by another role (which must drop it): never let it break every run.
                    self._warn(f"overlord-db: left the stale database {name} alone: this role may not drop it "
                               f"({str(exc).strip().splitlines()[0]}). Its owner can: DROP DATABASE {name} WITH (FORCE)")

    def _warn(self, message: str) -> None:
        if self.report is not None:
            self.report(message)
        else:
            warnings.warn(message, stacklevel=2)

    # -- clones ------------------------------------------------------------------------
    def _new_name(self, kind: str) -> str:
        """A database name of this project that says which process made it, and for what."""
        return f"{self.prefix}{kind[0]}_{self.host}_{os.getpid()}_{next(_counter)}"

    def clone(self, template: str, kind: str) -> str:
        """A new database copied from ``template``."""
        name = self._new_name(kind)
        strategy = sql.SQL(" STRATEGY FILE_COPY") if self.facts.major >= 15 else sql.SQL("")
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)) + strategy
        def created() -> bool:
            try:
                self._execute(query)
                return True
            except psycopg2.errors.ObjectInUse:
                return False  # someone is connected to the template (a round trip, a person with psql)

        if not poll(created, timeout=2.5, interval=0.05):
            raise OverlordError(f"Cannot clone {template}: other sessions keep it busy.")
        self._mark(name, kind)
        return name

    def create_empty(self, kind: str) -> str:
        """A new empty database (from template1) of ours, for work that must not touch any other."""
        name = self._new_name(kind)
        # FILE_COPY: 9 ms against WAL_LOG's (the default's) 12 ms for template1 on tmpfs, measured here.
        strategy = sql.SQL(" STRATEGY FILE_COPY") if self.facts.major >= 15 else sql.SQL("")
        self._execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)) + strategy)
        self._mark(name, kind)
        return name

    def _wait_idle(self, name: str, timeout: float = 1.0) -> None:
        # A backend that just closed still counts for DROP/RENAME, which then
        # naps 100 ms; polling pg_stat_activity for ~1 ms is cheaper.
        poll(lambda: not self._execute("SELECT 1 FROM pg_stat_activity WHERE datname = %s LIMIT 1", (name,)),
             timeout=timeout, interval=0.001)

    def open_transactions(self, name: str) -> list[int]:
        """Backends in ``name`` holding a transaction open while idle: a migration would wait for their locks."""
        return [int(pid) for (pid,) in self._execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND state LIKE 'idle in transaction%%' ORDER BY pid", (name,))]

    def keep(self, name: str) -> None:
        """Mark one of our databases as kept for debugging: this run leaves it, the next run drops it."""
        self._mark(name, "kept")

    def drop(self, name: str) -> None:
        """Drop one of our databases, disconnecting whoever is still in it."""
        if not name.startswith(self.prefix):
            raise AssertionError(f"refusing to drop {name}: not a database of this plugin")
        self._wait_idle(name, timeout=0.5)
        self._execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
