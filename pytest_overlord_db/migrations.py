"""A thin layer over yoyo: read migrations with clear errors, apply and roll back with timings.

yoyo does the work (ordering, bookkeeping, its lock, per-migration
transactions); this module turns its failures into one paragraph naming the
file, migration, statement and PostgreSQL message, and records how long each
migration took, which yoyo does not.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import psutil
import psycopg2
import sqlparse
from yoyo import get_backend, read_migrations
from yoyo import exceptions as yoyo_exceptions
from yoyo.migrations import Migration, MigrationList, MigrationStep, StepGroup, TransactionWrapper, Transactionless

from . import urls
from .errors import ConfigError, MigrationError, ServerError

# yoyo logs import failures with a full traceback through logging.exception;
# we report them ourselves in one paragraph.
logging.getLogger("yoyo").addHandler(logging.NullHandler())
logging.getLogger("yoyo").propagate = False

TIMING_TABLE = "_overlord_migration_timing"
BOOKKEEPING_TABLES = ("_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock", TIMING_TABLE)


@dataclass(frozen=True)
class Applied:
    id: str
    seconds: float


def read(migrations_dir: Path) -> MigrationList:
    """All migrations in yoyo's order, each loaded, so a broken file fails here by name and line."""
    if not migrations_dir.is_dir():
        raise ConfigError(f"Migrations folder {migrations_dir} does not exist.")
    try:
        migrations = read_migrations(str(migrations_dir))
    except yoyo_exceptions.BadMigration as exc:
        raise MigrationError(f"Cannot read migrations in {migrations_dir}: {exc}") from None
    for migration in migrations:
        load(migration)
    return migrations


def load(migration: Migration) -> None:
    try:
        migration.load()
    except yoyo_exceptions.BadMigration as exc:
        cause = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], BaseException) else exc.__context__
        raise MigrationError(_describe_load_failure(migration, cause or exc)) from None


def _describe_load_failure(migration: Migration, cause: BaseException) -> str:
    path = Path(migration.path)
    line = None
    if isinstance(cause, SyntaxError) and cause.lineno:
        line = cause.lineno
    else:
        for frame in traceback.extract_tb(cause.__traceback__):
            if Path(frame.filename) == path:
                line = frame.lineno
    where = f"{path}:{line}" if line else str(path)
    detail = cause.msg if isinstance(cause, SyntaxError) else str(cause)
    return f"Migration file {where} does not import: {type(cause).__name__}: {detail}. Fix the file; nothing was applied."


def steps(migration: Migration) -> list[MigrationStep]:
    """The migration's steps in apply order, unwrapped from yoyo's transaction wrappers and groups."""
    load(migration)

    def walk(items: Iterable[object]) -> Iterator[MigrationStep]:
        for item in items:
            if isinstance(item, (TransactionWrapper, Transactionless)):
                yield from walk([item.step])
            elif isinstance(item, StepGroup):
                yield from walk(item.steps)
            elif isinstance(item, MigrationStep):
                yield item

    return list(walk(migration.steps or []))


def has_rollback(migration: Migration) -> bool:
    """False when any step lacks a rollback: yoyo would silently 'roll it back' as a no-op."""
    found = steps(migration)
    with_rollback = [step._rollback not in (None, "") for step in found]
    if migration.is_raw_sql():
        # yoyo pairs a .rollback.sql file's statements with the apply statements
        # one by one, so unpaired steps are normal: what matters is the file.
        return any(with_rollback)
    return bool(found) and all(with_rollback)


def pinpoint_statement(url: str, migration: Migration, direction: str = "apply") -> str | None:
    """Replay a failed transactional migration statement by statement, inside a transaction that is
    rolled back, to find the statement PostgreSQL rejected when its error carries no position."""
    if not migration.use_transactions:
        return None  # replaying non-transactional statements could change the database
    conn = psycopg2.connect(urls.normalize(url))
    try:
        ordered = steps(migration) if direction == "apply" else list(reversed(steps(migration)))
        with conn.cursor() as cur:
            for step in ordered:
                body = step._apply if direction == "apply" else step._rollback
                if not body:
                    continue
                if callable(body):
                    try:
                        body(conn)
                    except psycopg2.Error:
                        return None
                    continue
                for statement in sqlparse.split(body):
                    if not statement.strip():
                        continue
                    try:
                        cur.execute(statement)
                    except psycopg2.Error:
                        return statement
    except psycopg2.Error:
        return None
    finally:
        conn.rollback()
        conn.close()
    return None


def backend(url: str):  # type: ignore[no-untyped-def]
    """A yoyo backend for ``url`` (the scheme normalised: yoyo rejects +psycopg2)."""
    try:
        return get_backend(urls.normalize(url))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except psycopg2.Error as exc:
        message = urls.mask_text(str(exc).strip(), url)
        raise ServerError(f"Cannot connect to PostgreSQL at {urls.mask(url)}: {message}") from None


def position(chain: list[Migration], target: str) -> int:
    """Index of ``target`` in the chain: an id, or its number ('3' and '0003' both mean 0003.*)."""
    for index, migration in enumerate(chain):
        if migration.id == target:
            return index
    if target.isdigit():
        matches = [i for i, m in enumerate(chain) if m.id.split(".", 1)[0].isdigit() and int(m.id.split(".", 1)[0]) == int(target)]
        if len(matches) == 1:
            return matches[0]
    known = ", ".join(m.id for m in chain) or "none"
    raise ConfigError(f"Unknown migration {target!r}: give an id or its number. Migrations: {known}.")


@dataclass(frozen=True)
class AppliedInfo:
    id: str
    applied_at: object  # datetime (UTC) from yoyo's own table
    duration_ms: float | None  # from ours; None for migrations applied by plain yoyo


def applied_info(url: str) -> list[AppliedInfo]:
    """The applied migrations, in the order yoyo applied them, with their recorded durations."""
    be = backend(url)
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


def _find_statement(sql: str, position: int | None) -> str:
    """The statement of a multi-statement string holding 1-based ``position`` (comments dropped)."""
    statements = [s for s in sqlparse.split(sql) if s.strip()]
    found = ""
    if position is None or not statements:
        found = statements[0] if len(statements) == 1 else ""
    else:
        offset = 0
        for statement in statements:
            start = sql.find(statement, offset)
            end = start + len(statement)
            if start <= position - 1 < end:
                found = statement
                break
            offset = end
    return "\n".join(line for line in found.splitlines() if not line.strip().startswith("--")).strip()


def _source_line(migration: Migration, statement: str) -> int | None:
    source = migration.source or ""
    probe = statement.strip().splitlines()[0].strip() if statement.strip() else ""
    if not probe:
        return None
    index = source.find(probe)
    return source.count("\n", 0, index) + 1 if index >= 0 else None


def describe_db_error(migration: Migration, exc: Exception, action: str, url: str | None = None) -> str:
    """One paragraph: migration, PostgreSQL message, failing statement and its line in the file."""
    message = getattr(exc, "pgerror", None) or str(exc)
    primary = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    if primary.startswith("ERROR:"):
        primary = primary[len("ERROR:"):].strip()
    sqlstate = getattr(exc, "pgcode", None)
    cursor = getattr(exc, "cursor", None)
    query = cursor.query if cursor is not None and cursor.query else None
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    diag = getattr(exc, "diag", None)
    position = getattr(diag, "statement_position", None)
    statement = _find_statement(query, int(position) if position else None) if query else ""
    if not statement and url:
        replayed = pinpoint_statement(url, migration, "apply" if action == "apply" else "rollback")
        statement = _find_statement(replayed, None) if replayed else ""
    parts = [f"Migration {migration.id} failed to {action}: {primary}" + (f" (SQLSTATE {sqlstate})" if sqlstate else "") + "."]
    if statement:
        line = _source_line(migration, statement)
        shown = " ".join(statement.split())
        if len(shown) > 300:
            shown = shown[:297] + "..."
        parts.append(f"Failing statement{f' (line {line} of {migration.path})' if line else ''}: {shown}")
    if migration.use_transactions:
        parts.append("The migration's transaction was rolled back.")
    return " ".join(parts)


def ensure_timing_table(conn: "psycopg2.extensions.connection") -> None:
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {TIMING_TABLE} ("
            " migration_id text PRIMARY KEY, duration_ms double precision NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )


@contextlib.contextmanager
def _yoyo_lock(be, url: str):  # type: ignore[no-untyped-def]
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
            raise MigrationError(
                f"{urls.mask(url)} is locked by yoyo for process {pid} (since {ctime} UTC), which is not running on "
                "this machine: a migration run was killed. If no other machine is migrating this database, remove "
                "the lock with `yoyo break-lock --database URL` and run again."
            )
    try:
        with be.lock():
            yield
    except yoyo_exceptions.LockTimeout as exc:
        raise MigrationError(f"{urls.mask(url)}: {exc}") from None


def _rows_output(quiet: bool):  # type: ignore[no-untyped-def]
    # yoyo prints the rows of any SELECT a step runs to stdout; keep stdout for
    # our own output (JSON, reports): rows go to stderr, or nowhere when quiet.
    return contextlib.redirect_stdout(io.StringIO() if quiet else sys.stderr)


def apply(url: str, migrations: Iterable[Migration], *, lock: bool = True, on_progress=None, quiet: bool = False) -> list[Applied]:  # type: ignore[no-untyped-def]
    """Apply the given migrations that are pending, in order, recording each one's duration."""
    return _run(url, migrations, "apply", lock=lock, on_progress=on_progress, quiet=quiet)


def rollback(url: str, migrations: Iterable[Migration], *, lock: bool = True, on_progress=None, quiet: bool = False) -> list[Applied]:  # type: ignore[no-untyped-def]
    """Roll back the given migrations that are applied, newest first."""
    return _run(url, migrations, "rollback", lock=lock, on_progress=on_progress, quiet=quiet)


def _run(url: str, migrations: Iterable[Migration], direction: str, *, lock: bool, on_progress, quiet: bool) -> list[Applied]:  # type: ignore[no-untyped-def]
    be = backend(url)
    done: list[Applied] = []
    try:
        with (_yoyo_lock(be, url) if lock else contextlib.nullcontext()), _rows_output(quiet):
            chosen = MigrationList(list(migrations))
            todo = be.to_apply(chosen) if direction == "apply" else be.to_rollback(chosen)
            conn = be.connection
            ensure_timing_table(conn)
            for migration in todo:
                if on_progress:
                    on_progress(migration, direction)
                started = time.perf_counter()
                try:
                    (be.apply_one if direction == "apply" else be.rollback_one)(migration)
                except yoyo_exceptions.BadMigration as exc:
                    raise MigrationError(f"Migration {migration.id}: {exc}") from None
                except psycopg2.Error as exc:
                    action = "apply" if direction == "apply" else "roll back"
                    raise MigrationError(describe_db_error(migration, exc, action, url)) from None
                seconds = time.perf_counter() - started
                with conn.cursor() as cur:
                    if direction == "apply":
                        cur.execute(
                            f"INSERT INTO {TIMING_TABLE} (migration_id, duration_ms) VALUES (%s, %s) ON CONFLICT"
                            " (migration_id) DO UPDATE SET duration_ms = EXCLUDED.duration_ms, applied_at = now()",
                            (migration.id, seconds * 1000),
                        )
                    else:
                        cur.execute(f"DELETE FROM {TIMING_TABLE} WHERE migration_id = %s", (migration.id,))
                done.append(Applied(migration.id, seconds))
            if direction == "apply" and todo:
                be.run_post_apply(todo)
    finally:
        be.connection.close()
    return done
