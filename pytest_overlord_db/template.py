"""The template: migrations applied once into a database named by a content hash, then cloned.

The name carries the migrator's content hash (every migration file and the
tool's version), the seed files in use, the server's major version and the
plugin's version, and nothing else: runners whose checkouts live anywhere
share one template when their migrations are the same. It is built under a
PostgreSQL advisory lock (concurrent runs and xdist workers never race, and a
killed builder's lock dies with its connection) in a database with a
temporary name, renamed only when complete: a crash never leaves a
half-built template that looks ready.

Templates live by use, not by replacement: each run holds a shared advisory
lock on the template it clones for as long as it runs, and a collector drops
only a template whose lock it can take, so no branch ever drops another's
template under it. Unused ones go by count and age (``--overlord-keep-templates``,
``--overlord-template-max-age``). Clones and builds of dead runs, on any
host, are swept by their lease (leases.py). Every database we create carries a
COMMENT marking it as ours; nothing without our mark or our exact name shape is dropped.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psycopg2
from psycopg2 import sql

from . import __version__, interrupts, leases, seeds, urls
from .config import Settings
from .errors import OverlordError
from .leases import MARK, lock_id, project_id
from .migrators import Migrator, for_folder
from .polling import poll
from .servers.base import ServerFacts, connect
from .watch import watched

__all__ = ["MARK", "Template", "Templates", "cache_key", "project_id"]
_counter = itertools.count(1)


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
        # In every name this process makes, with its run token: a database a killed run left unmarked
        # (it died between CREATE DATABASE and COMMENT ON DATABASE) is still known by its name to be ours, and whose.
        self.host_id = leases.host_identity(settings.host_id)
        self.host = leases.host_tag(self.host_id)
        self._conn: psycopg2.extensions.connection | None = None
        self._held: list[int] = []  # shared "in use" locks on templates, taken again on a new connection

    # -- connection & bookkeeping -----------------------------------------------
    @property
    def conn(self) -> "psycopg2.extensions.connection":
        if self._conn is None or self._conn.closed:
            # The application name is this run's lease: other runs see it in pg_stat_activity.
            conn = connect(self.admin_url, application_name=leases.application_name())
            conn.autocommit = True
            interrupts.register(conn)  # a wait for the build lock ends on Ctrl-C too
            with conn.cursor() as cur:
                for name, value in leases.session_settings(self.settings.lease_timeout):
                    cur.execute("SELECT set_config(%s, %s, false)", (name, value))
                for lock in self._held:
                    cur.execute("SELECT pg_advisory_lock_shared(%s)", (lock,))
            self._conn = conn
        return self._conn

    def close(self) -> None:
        self._held = []  # the run is done with its template: a later connection takes no lock again
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

    def _mark(self, name: str, kind: str, **extra: object) -> None:
        note = json.dumps({"by": MARK, "kind": kind, "project": self.project, "host": self.host_id,
                           "run": leases.run_token(), "pid": os.getpid(), **extra})
        self._execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(note)))

    def _named_ovl(self) -> list[tuple[str, str | None]]:
        """(name, comment) of every database whose name starts like ours (any project's)."""
        return [(str(name), comment) for name, comment in self._execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname LIKE 'ovl\\_%%'")]

    def ours(self, rows: list[tuple[str, str | None]] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(name, mark) of every database of this project that we created."""
        found = []
        for name, comment in self._named_ovl() if rows is None else rows:
            mark = leases.read_mark(comment)
            if mark is not None and mark.get("project") == self.project:
                found.append((name, mark))
        return found

    def _now(self) -> float:
        """The server's clock: the one every runner's marks agree on."""
        return float(self._execute("SELECT extract(epoch FROM now())")[0][0])

    def exists(self, name: str) -> bool:
        return bool(self._execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)))

    # -- the template ---------------------------------------------------------------
    def key(self) -> str:
        return cache_key(self.migrator, self.settings.seed_files(), self.facts.major)

    def template_name(self, key: str) -> str:
        return f"ovl_t_{key}"  # no project, no path: the same migrations anywhere share it

    def ensure(self) -> Template:
        key = self.key()
        name = self.template_name(key)
        self._hold(lock_id("use", key))  # from here until this connection closes, no collector drops it
        seconds = None
        if not self.exists(name):  # the rename is the last step, so existing means complete
            build_lock = lock_id("build", key)
            self._execute("SELECT pg_advisory_lock(%s)", (build_lock,))
            try:
                if not self.exists(name):  # another process may have built it while we waited
                    started = time.perf_counter()
                    self._build(name, key)
                    seconds = time.perf_counter() - started
            finally:
                self._execute("SELECT pg_advisory_unlock(%s)", (build_lock,))
        if seconds is None:
            self._touch(name)
        self.collect(keep=name)
        return Template(name, key, self.url(name), reused=seconds is None, build_seconds=seconds or 0.0)

    def _hold(self, lock: int) -> None:
        if lock not in self._held:
            self._execute("SELECT pg_advisory_lock_shared(%s)", (lock,))
            self._held.append(lock)

    def _build(self, name: str, key: str) -> None:
        building = self._new_name("build")
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
        self._mark(name, "template", key=key, used=self._now())

    def _touch(self, name: str) -> None:
        """Note on the template when it was last used, for collection by age."""
        rows = self._execute("SELECT shobj_description(oid, 'pg_database'), extract(epoch FROM now()) FROM pg_database "
                             "WHERE datname = %s", (name,))
        mark = leases.read_mark(rows[0][0]) if rows else None
        if mark is None:
            return  # not marked by us (made by hand, or by an old version): not ours to annotate
        note = json.dumps({**mark, "used": float(rows[0][1])})
        try:
            self._execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(note)))
        except psycopg2.Error:
            pass  # another role owns it, or another run touches it this very moment: either way it is fresh

    def collect(self, keep: str) -> list[str]:
        """Drop this project's templates that no live run uses and the settings do not keep; the names dropped."""
        mine = set(self._held)
        unused: dict[str, tuple[int, float]] = {}
        try:
            for name, mark in self.ours():
                lock = lock_id("use", name.rsplit("_", 1)[-1])
                if mark.get("kind") != "template" or name == keep or lock in mine:
                    continue
                if self._execute("SELECT pg_try_advisory_lock(%s)", (lock,))[0][0]:  # no run holds it shared
                    unused[name] = (lock, float(mark.get("used") or 0.0))
            if not unused:
                return []
            doomed = leases.to_collect([(name, used) for name, (_, used) in unused.items()],
                                       self.settings.keep_templates, self.settings.template_max_age, self._now())
            dropped = []
            for name in doomed:
                try:
                    self._execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                    dropped.append(name)
                except psycopg2.Error:
                    pass  # someone sits in it (psql, an older plugin): the next run tries again
            return dropped
        finally:
            for lock, _ in unused.values():
                self._execute("SELECT pg_advisory_unlock(%s)", (lock,))

    def drop_stale(self) -> None:
        """Drop clones and builds of dead runs, on any host (their run holds no lease on this server), and the
        databases an ended run kept for debugging (``--overlord-keep-failed``)."""
        rows = self._named_ovl()  # before the sessions: a database made after this read cannot be mistaken for dead
        live = {str(r[0]) for r in self._execute(
            "SELECT DISTINCT substr(application_name, %s) FROM pg_stat_activity WHERE application_name LIKE %s",
            (len(leases.APP_PREFIX) + 1, leases.APP_PREFIX + "%"))}
        kept = {name for name, mark in self.ours(rows) if mark.get("kind") == "kept"}
        for name in leases.dead_leftovers(rows, live | {leases.run_token()}):
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
        return f"{self.prefix}{kind[0]}_{self.host}_{leases.run_token()}_{next(_counter)}"

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
        if not name.startswith("ovl_"):
            raise AssertionError(f"refusing to drop {name}: not a database of this plugin")
        self._wait_idle(name, timeout=0.5)
        self._execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
