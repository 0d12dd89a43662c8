"""The seed's second layout: ``versions/NNN_name.sql`` with ``rollbacks/NNN_name_rollback.sql``.

As the seed's ``MigrationRunner`` does it: migrations apply in version order,
each file in its own transaction, and are recorded in ``schema_migrations``
(version, name, applied_at, execution_time_ms); a rollback runs the matching
file of ``rollbacks/`` and deletes the record. Concurrent runs are kept apart
by a PostgreSQL advisory lock, which dies with its connection, so a killed run
never leaves a lock behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import re
import time
from datetime import timezone
from pathlib import Path
from typing import Iterator, Sequence

import psycopg2
import psycopg2.extensions

from .. import interrupts, sqltext
from ..errors import ConfigError, MigrationError
from ..servers.base import connect
from .base import Applied, AppliedInfo, Migration, Migrator, Progress, slug

TABLE = "schema_migrations"
_FILE = re.compile(r"^(\d+)_(.+)\.sql$")
_LOCK_ID = int.from_bytes(hashlib.sha256(b"pytest-overlord-db:schema_migrations").digest()[:8], "big", signed=True)
_CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    version INTEGER PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    applied_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    execution_time_ms INTEGER
)"""


def detect(folder: Path) -> bool:
    """Whether ``folder`` holds this layout."""
    return (folder / "versions").is_dir()


class SqlFoldersMigrator(Migrator):
    name = "sqlfolders"
    bookkeeping = (TABLE,)

    @property
    def versions(self) -> Path:
        return self.folder / "versions"

    @property
    def rollbacks(self) -> Path:
        return self.folder / "rollbacks"

    def rollback_file(self, migration: Migration) -> Path:
        return self.rollbacks / f"{migration.id}_rollback.sql"

    # -- reading ------------------------------------------------------------------
    def chain(self) -> list[Migration]:
        if not self.versions.is_dir():
            raise ConfigError(f"Migrations folder {self.versions} does not exist.")
        by_version: dict[int, Path] = {}
        for path in sorted(self.versions.iterdir()):
            if path.suffix != ".sql" or not path.is_file():
                continue
            match = _FILE.match(path.name)
            if not match:
                raise MigrationError(
                    f"Migration file {path} is not named NNN_name.sql (a version number, an underscore, a name); "
                    "rename it. Nothing was applied.")
            version = int(match.group(1))
            if version in by_version:
                raise MigrationError(
                    f"Migration files {by_version[version]} and {path} both have version {version}; "
                    "renumber one. Nothing was applied.")
            by_version[version] = path
        chain = []
        for version in sorted(by_version):
            path = by_version[version]
            migration = Migration(path.stem, path, reversible=False)
            rollback = self.rollback_file(migration)
            reversible = rollback.is_file() and bool(_without_comments(rollback.read_text(encoding="utf-8")))
            chain.append(Migration(path.stem, path, reversible))
        return chain

    def show(self, migration: Migration, direction: str) -> list[str]:
        path = migration.path if direction == "apply" else self.rollback_file(migration)
        if not path.is_file():
            return [f"(no rollback file {path}: nothing would run)"]
        return [f"-- {path}", *path.read_text(encoding="utf-8").strip().splitlines()]

    def new(self, message: str) -> list[Path]:
        self.versions.mkdir(parents=True, exist_ok=True)
        self.rollbacks.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for p in self.versions.iterdir() if (m := _FILE.match(p.name))]
        stem = f"{max(numbers, default=0) + 1:03d}_{slug(message).replace('-', '_')}"
        up = self.versions / f"{stem}.sql"
        down = self.rollbacks / f"{stem}_rollback.sql"
        up.write_text(f"-- {message}\n")
        down.write_text(f"-- Rollback: {message}\n-- undo exactly what {up.name} does\n")
        return [up, down]

    def break_lock(self, url: str) -> str:
        return ("The SQL-folder migrator locks with a PostgreSQL advisory lock, which ends with its connection: "
                "a killed run leaves nothing to break.")

    # -- changing a database ---------------------------------------------------------
    def applied(self, url: str) -> list[AppliedInfo]:
        conn = connect(url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))
                exists = cur.fetchone()
                if not exists or not exists[0]:
                    return []
                cur.execute(f"SELECT version, name, applied_at, execution_time_ms FROM {TABLE} ORDER BY version")
                rows = cur.fetchall()
        finally:
            conn.close()
        names = {m.number: m.id for m in self.chain()}
        # UTC without an offset, as yoyo records it, so every migrator's times read the same.
        return [AppliedInfo(names.get(version, f"{version:03d}_{name}"),
                            applied_at.astimezone(timezone.utc).replace(tzinfo=None) if applied_at else None,
                            float(ms) if ms is not None else None) for version, name, applied_at, ms in rows]

    def apply(self, url: str, migrations: Sequence[Migration], *, lock: bool = True,
              on_progress: Progress | None = None, quiet: bool = False) -> list[Applied]:
        return self._run(url, list(migrations), "apply", lock, on_progress)

    def rollback(self, url: str, migrations: Sequence[Migration], *, lock: bool = True,
                 on_progress: Progress | None = None, quiet: bool = False) -> list[Applied]:
        newest_first = sorted(migrations, key=lambda m: m.number or 0, reverse=True)
        return self._run(url, newest_first, "rollback", lock, on_progress)

    def _run(self, url: str, migrations: list[Migration], direction: str, lock: bool,
             on_progress: Progress | None) -> list[Applied]:
        conn = connect(url)
        interrupts.register(conn)
        done: list[Applied] = []
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(_CREATE)
            with _advisory_lock(conn) if lock else contextlib.nullcontext():
                with conn.cursor() as cur:
                    cur.execute(f"SELECT version FROM {TABLE}")
                    applied = {row[0] for row in cur.fetchall()}
                for migration in migrations:
                    if (migration.number in applied) != (direction == "rollback"):
                        continue  # already applied (or, rolling back, not applied)
                    if on_progress:
                        on_progress(migration, direction)
                    done.append(self._one(conn, migration, direction))
        finally:
            interrupts.close(conn)
        return done

    def _one(self, conn: "psycopg2.extensions.connection", migration: Migration, direction: str) -> Applied:
        path = migration.path if direction == "apply" else self.rollback_file(migration)
        if direction == "rollback" and not path.is_file():
            raise MigrationError(f"Migration {migration.id} cannot be rolled back: there is no {path}.")
        source = path.read_text(encoding="utf-8")
        if direction == "rollback" and not _without_comments(source):
            # Running nothing and deleting the record would be the silent no-op the round trip warns about.
            raise MigrationError(f"Migration {migration.id} cannot be rolled back: {path} holds only comments.")
        assert migration.number is not None
        name = migration.id.split("_", 1)[1]
        started = time.perf_counter()
        conn.autocommit = False
        try:
            with conn.cursor() as cur:
                if _without_comments(source):
                    cur.execute(source)
                elapsed_ms = int((time.perf_counter() - started) * 1000)
                if direction == "apply":
                    cur.execute(f"INSERT INTO {TABLE} (version, name, execution_time_ms) VALUES (%s, %s, %s)",
                                (migration.number, name, elapsed_ms))
                else:
                    cur.execute(f"DELETE FROM {TABLE} WHERE version = %s", (migration.number,))
            conn.commit()
        except psycopg2.Error as exc:
            conn.rollback()
            statement = sqltext.failing_statement(exc)
            if not statement and not isinstance(exc, psycopg2.errors.QueryCanceled):
                statement = sqltext.replay(conn, [source]) or ""
            action = "apply" if direction == "apply" else "roll back"
            raise MigrationError(sqltext.describe_failure(migration.id, path, source, exc, action, statement)) from None
        finally:
            conn.autocommit = True
        return Applied(migration.id, time.perf_counter() - started)


def _without_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if line.strip() and not line.strip().startswith("--")).strip()


@contextlib.contextmanager
def _advisory_lock(conn: "psycopg2.extensions.connection") -> Iterator[None]:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
    try:
        yield
    finally:
        if not conn.closed:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
