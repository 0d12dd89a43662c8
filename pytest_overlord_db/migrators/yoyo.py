"""yoyo-migrations behind the Migrator interface (the default).

yoyo does the work (ordering, bookkeeping, its lock, per-migration
transactions); this adapter turns its failures into one paragraph naming the
file, migration, statement and PostgreSQL message, and records how long each
migration took, which yoyo does not. With ``yoyo_files`` (reading) and
``yoyo_timing``, it is the only code that touches yoyo.
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import psutil
import psycopg2
from yoyo import exceptions as yoyo_exceptions
from yoyo import read_migrations
from yoyo.backends.base import get_backend_class
from yoyo.connections import BadConnectionURI, parse_uri
from yoyo.migrations import Migration as YoyoMigration
from yoyo.migrations import MigrationList, default_migration_table

from .. import interrupts, sqltext, urls
from ..errors import ConfigError, MigrationError, ServerError
from ..servers.private import reachable_only_here
from . import yoyo_files
from .base import Applied, AppliedInfo, Migration, Migrator, Progress, slug
from .yoyo_session import Sessions, cancellable_copies
from .yoyo_timing import TIMING_TABLE, ensure_timing_table, record_timing

# yoyo logs import failures with a full traceback through logging.exception;
# we report them ourselves in one paragraph.
logging.getLogger("yoyo").addHandler(logging.NullHandler())
logging.getLogger("yoyo").propagate = False



def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


class YoyoMigrator(Migrator):
    name = "yoyo"
    bookkeeping = ("_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock", TIMING_TABLE)

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self._loaded: dict[str, YoyoMigration] = {}
        self._sessions = Sessions(_backend)

    # -- reading ------------------------------------------------------------------

    def tool_version(self) -> str:
        return f"yoyo {_version('yoyo-migrations')} sqlparse {_version('sqlparse')}"

    def _read(self) -> MigrationList:
        if not self.folder.is_dir():
            raise ConfigError(f"Migrations folder {self.folder} does not exist.")
        try:
            found = read_migrations(str(self.folder))
        except yoyo_exceptions.BadMigration as exc:
            raise MigrationError(f"Cannot read migrations in {self.folder}: {exc}") from None
        for migration in found:
            yoyo_files.load(migration, found)
        ordered = yoyo_files.in_yoyo_order(found, self.folder)
        self._loaded = {m.id: m for m in ordered}
        return ordered

    def chain(self) -> list[Migration]:
        return [Migration(m.id, Path(m.path), yoyo_files.has_rollback(m)) for m in self._read()]

    def _yoyo(self, migrations: Iterable[Migration]) -> list[YoyoMigration]:
        if not self._loaded or any(m.id not in self._loaded for m in migrations):
            self._read()
        return [self._loaded[m.id] for m in migrations]

    def show(self, migration: Migration, direction: str) -> list[str]:
        ordered = yoyo_files.steps(self._yoyo([migration])[0])
        if direction == "rollback":
            ordered = list(reversed(ordered))
        lines = []
        for number, step in enumerate(ordered, 1):
            body = step._apply if direction == "apply" else step._rollback
            lines.append(f"-- step {number}:")
            if callable(body):
                lines.append(f"Python function {getattr(body, '__name__', body)!r}")
            elif not body:
                lines.append("(no rollback: yoyo runs nothing)")
            else:
                lines.extend(str(body).strip().splitlines())
        return lines

    def new(self, message: str) -> list[Path]:
        self.folder.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.name.split(".", 1)[0]) for p in self.folder.iterdir() if p.name.split(".", 1)[0].isdigit()]
        path = self.folder / f"{max(numbers, default=0) + 1:04d}.{slug(message)}.py"
        path.write_text(
            f'"""\n{message}\n"""\nfrom yoyo import step\n\n'
            'step(\n    """\n    -- apply\n    """,\n    """\n    -- rollback: undo exactly what the apply did\n    """,\n)\n'
        )
        return [path]

    def break_lock(self, url: str) -> str:
        be = _backend(url)
        try:
            with be.connection.cursor() as cur:
                cur.execute(f"DELETE FROM {be.lock_table_quoted} RETURNING pid")
                pids = [row[0] for row in cur.fetchall()]
            be.connection.commit()
        finally:
            be.connection.close()
        if not pids:
            return f"{urls.mask(url)} was not locked."
        return f"Removed yoyo's lock on {urls.mask(url)} (held by process {', '.join(map(str, pids))})."

    # -- changing a database ---------------------------------------------------------
    def applied(self, url: str) -> list[AppliedInfo]:
        be = _backend(url)
        conn = be.connection
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL", (be.migration_table, TIMING_TABLE))
                has_yoyo, has_timing = cur.fetchone()
                if not has_yoyo:
                    return []
                timing = f"LEFT JOIN {TIMING_TABLE} t ON t.migration_id = m.migration_id" if has_timing else ""
                duration = "t.duration_ms" if has_timing else "NULL::float8"
                cur.execute(
                    f"SELECT m.migration_id, m.applied_at_utc, {duration} FROM {be.migration_table_quoted} m {timing}"
                    " ORDER BY m.applied_at_utc, m.migration_id"
                )
                return [AppliedInfo(*row) for row in cur.fetchall()]
        finally:
            conn.close()

    def apply(self, url: str, migrations: Sequence[Migration], *, lock: bool = True,
              on_progress: Progress | None = None, quiet: bool = False) -> list[Applied]:
        return self._run(url, migrations, "apply", lock=lock, on_progress=on_progress, quiet=quiet)

    def rollback(self, url: str, migrations: Sequence[Migration], *, lock: bool = True,
                 on_progress: Progress | None = None, quiet: bool = False) -> list[Applied]:
        # yoyo rolls back in the reverse of the order it is given: give it apply order, whatever the caller's.
        if not self._loaded or any(m.id not in self._loaded for m in migrations):
            self._read()
        position = {mid: i for i, mid in enumerate(self._loaded)}  # the chain's order, read once
        in_order = sorted(migrations, key=lambda m: position[m.id])
        return self._run(url, in_order, "rollback", lock=lock, on_progress=on_progress, quiet=quiet)

    def _run(self, url: str, migrations: Sequence[Migration], direction: str, *, lock: bool,
             on_progress: Progress | None, quiet: bool) -> list[Applied]:
        chosen = MigrationList(self._yoyo(migrations))
        ours = {m.id: m for m in migrations}
        kept = self._sessions.backend(url)
        be = kept if kept is not None else _backend(url)
        copies = cancellable_copies(be, functools.partial(self._sessions.spare, url))  # none outside a session
        done: list[Applied] = []
        try:
            with (_yoyo_lock(be, url) if lock else contextlib.nullcontext()), _rows_output(quiet):
                _schema_checked(be)
                todo = be.to_apply(chosen) if direction == "apply" else be.to_rollback(chosen)
                conn = be.connection
                interrupts.register(conn)
                ensure_timing_table(conn)
                for migration in todo:
                    if on_progress:
                        on_progress(ours[migration.id], direction)
                    started = time.perf_counter()
                    try:
                        (be.apply_one if direction == "apply" else be.rollback_one)(migration)
                    except yoyo_exceptions.BadMigration as exc:
                        raise MigrationError(f"Migration {migration.id}: {exc}") from None
                    except psycopg2.Error as exc:
                        raise MigrationError(_describe(migration, exc, direction, url)) from None
                    seconds = time.perf_counter() - started
                    record_timing(conn, migration.id, seconds if direction == "apply" else None)
                    done.append(Applied(migration.id, seconds))
                    self._sessions.prepare(url)  # the next migration's connection (or the post-apply steps')
                if direction == "apply" and todo:
                    be.run_post_apply(todo)
                    self._sessions.prepare(url)
        except BaseException:
            if kept is not None:
                self._sessions.give_up(url)
            raise
        finally:
            for conn in [be.connection, *copies]:
                interrupts.unregister(conn)
            if kept is None:
                be.connection.close()
        return done

    def session(self, url: str) -> contextlib.AbstractContextManager[None]:
        """Runs on ``url`` share one backend and one connection for the steps until the session ends
        (``yoyo_session``): for a walk on a throwaway database, where most of a run was connecting."""
        return self._sessions.session(url)


# -- yoyo's objects ------------------------------------------------------------------------


def _describe(migration: YoyoMigration, exc: psycopg2.Error, direction: str, url: str) -> str:
    statement = sqltext.failing_statement(exc)
    canceled = isinstance(exc, psycopg2.errors.QueryCanceled)  # an interrupt or the timeout: never replay it
    if not statement and migration.use_transactions and not canceled:
        # No position in the error: replay inside a rolled-back transaction to find it. Never for
        # non-transactional migrations, whose statements would stay applied.
        ordered = yoyo_files.steps(migration) if direction == "apply" else list(reversed(yoyo_files.steps(migration)))
        bodies = [s._apply if direction == "apply" else s._rollback for s in ordered]
        try:
            conn = psycopg2.connect(urls.normalize(url))
        except psycopg2.Error:
            conn = None
        if conn is not None:
            try:
                statement = sqltext.replay(conn, [b for b in bodies if b]) or ""
            finally:
                conn.close()
    action = "apply" if direction == "apply" else "roll back"
    return sqltext.describe_failure(migration.id, Path(migration.path), migration.source or "", exc, action,
                                    statement, rolled_back=bool(migration.use_transactions))


@functools.lru_cache(maxsize=None)
def _backend_class(scheme: str) -> Any:
    # yoyo looks its backend class up among all installed entry points on every get_backend: ~12 ms each,
    # three times per migration in a round trip. The answer does not change within a process.
    return get_backend_class(scheme)


def _backend(url: str) -> Any:
    """A yoyo backend for ``url`` (the scheme normalised: yoyo rejects +psycopg2), as yoyo's get_backend
    makes it, with the class looked up once."""
    try:
        parsed = parse_uri(urls.normalize(url))
        scheme = parsed.scheme.lower()
        try:
            backend_class = _backend_class(scheme)
        except KeyError:
            raise ConfigError(f"Unrecognised database connection scheme {scheme!r} in {urls.mask(url)}.") from None
        be = backend_class(parsed, default_migration_table)
        be.init_database()
    except (ValueError, BadConnectionURI) as exc:
        raise ConfigError(str(exc)) from None
    except psycopg2.Error as exc:
        message = urls.mask_text(str(exc).strip(), url)
        raise ServerError(f"Cannot connect to PostgreSQL at {urls.mask(url)}: {message}") from None
    return be


def _schema_checked(be: Any) -> None:
    """Bring yoyo's own tables up to date once per backend. yoyo caches "done" only when it had to
    upgrade, so otherwise it lists the database's tables again before every migration it marks."""
    be.ensure_internal_schema_updated()
    be._internal_schema_updated = True


@contextlib.contextmanager
def _yoyo_lock(be: Any, url: str) -> Iterator[None]:
    """yoyo's lock, which is a row in yoyo_lock keyed by pid: a killed run leaves it behind and
    every later run would wait, then fail. Say so at once when the holder is dead on this host."""
    try:
        with be.connection.cursor() as cur:
            cur.execute(f"SELECT pid, ctime FROM {be.lock_table_quoted}")
            holders = cur.fetchall()
    except psycopg2.Error:
        holders = []
    for pid, ctime in holders:
        if pid != os.getpid() and not psutil.pid_exists(pid):
            if reachable_only_here(url):
                # Only this machine can reach that server, so the holder was one of its processes, and it is gone.
                with be.connection.cursor() as cur:
                    cur.execute(f"DELETE FROM {be.lock_table_quoted} WHERE pid = %s", (pid,))
                be.connection.commit()
                print(f"overlord-db: removed yoyo's lock on {urls.mask(url)} left by process {pid} (since {ctime} UTC), "
                      "which is no longer running.", file=sys.stderr)
                continue
            raise MigrationError(
                f"{urls.mask(url)} is locked by yoyo for process {pid} (since {ctime} UTC), which is not running on "
                "this machine: a migration run was killed. If no other machine is migrating this database, remove "
                "the lock with `overlord-db break-lock --database-url URL` (or `yoyo break-lock`) and run again."
            )
    try:
        with be.lock():
            yield
    except yoyo_exceptions.LockTimeout as exc:
        raise MigrationError(f"{urls.mask(url)}: {exc}") from None


def _rows_output(quiet: bool) -> contextlib.AbstractContextManager[object]:
    # yoyo prints the rows of any SELECT a step runs (a migration's sanity check, say) to stdout: noise on
    # a terminal, and it would corrupt our own output (JSON, reports). They go nowhere.
    return contextlib.redirect_stdout(io.StringIO())
