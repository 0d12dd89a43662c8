"""Which blocks of which files were written between two snapshots of a database, told by the server's WAL: the
data half of an incremental snapshot re-reads the tables written only, where reading every table made each
snapshot's cost grow with the schema (100 ms a snapshot at 500 small tables, measured here); its catalog half
reads only the catalog blocks written (``catalog.changed``).

Every change to a table's rows (insert, update, delete, by whatever statement, trigger or function) writes a
WAL record naming the block and the file it changed, so the files named between the two snapshots' WAL
positions hold every table whose rows can differ. pg_walinspect (PostgreSQL 16+, contrib, superuser) reads
them; it lives in a small database of our own, since the WAL is the whole server's. Whatever cannot be told
this way (no pg_walinspect, no right to it, too much WAL, WAL already recycled, not yet flushed) answers
None and the caller reads every table. Files that are not WAL-logged (unlogged tables, a table's file made
in the same transaction at wal_level minimal) belong to tables the caller re-reads anyway.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg2

if TYPE_CHECKING:
    from .template import Templates

MAX_WAL = 64 * 1024 * 1024  # past this much WAL between two snapshots, reading the tables is cheaper


class WalWatch:
    """pg_walinspect in a database of its own; ``blocks`` answers for any database of the server."""

    def __init__(self, templates: "Templates") -> None:
        self.templates = templates
        self.name: str | None = None
        self.conn: psycopg2.extensions.connection | None = None
        self.fallbacks = 0  # answers of None since opened: what a test looks at
        self.answers = 0
        if templates.facts.major < 16:
            return
        try:
            self.name = templates.create_empty("walwatch")
            self.conn = psycopg2.connect(templates.url(self.name))
            self.conn.autocommit = True
            with self.conn.cursor() as cur:
                cur.execute("CREATE EXTENSION pg_walinspect")
                # A row to write: a commit that wrote WAL, made synchronously, flushes all WAL before it.
                cur.execute("CREATE TABLE flush (n int); INSERT INTO flush VALUES (0)")
        except psycopg2.Error:
            self.close()

    @property
    def usable(self) -> bool:
        return self.conn is not None

    def blocks(self, database: int, start: str, end: str) -> dict[tuple[int, int], set[int]] | None:
        """The blocks of the main forks written between WAL positions ``start`` and ``end``, by file: (database,
        file number, relfilenode) for database ``database`` and the shared catalogs (database 0); None when
        that cannot be told."""
        if self.conn is None:
            return None
        self.answers += 1
        try:
            size = _position(end) - _position(start)
            if size < 0 or size > MAX_WAL:
                self.fallbacks += 1
                return None
            with self.conn.cursor() as cur:
                cur.execute("BEGIN; SET LOCAL synchronous_commit = on; UPDATE flush SET n = n + 1; COMMIT")
                cur.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (end,))
                if not _one(cur):
                    self.fallbacks += 1
                    return None
                cur.execute("SELECT reldatabase, relfilenode, array_agg(DISTINCT relblocknumber) "
                            "FROM pg_get_wal_block_info(%s, %s) WHERE reldatabase IN (%s, 0) AND relforknumber = 0 "
                            "GROUP BY 1, 2", (start, end, database))
                return {(int(db), int(node)): {int(b) for b in blocks} for db, node, blocks in cur.fetchall()}
        except psycopg2.Error:
            self.fallbacks += 1
            try:
                with self.conn.cursor() as cur:
                    cur.execute("ROLLBACK")  # the multi-statement flush may have left a failed transaction open
            except psycopg2.Error:
                self.close()
            return None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.name:
            self.templates.drop(self.name)
            self.name = None


def _position(lsn: str) -> int:
    """A WAL position as PostgreSQL prints it (``16/B374D848``), in bytes."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _one(cur: "psycopg2.extensions.cursor") -> Any:
    row = cur.fetchone()
    assert row is not None
    return row[0]
