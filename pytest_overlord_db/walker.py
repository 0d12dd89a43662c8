"""A throwaway database walked along the migration chain, and accepted exceptions taken off a diff: the
pieces the round trip and its seeded walk share."""
from __future__ import annotations

import contextlib

import psycopg2

from . import incremental, schema
from .migrators import Migration, Migrator
from .template import Templates
from .verdicts import Verdict
from .walwatch import WalWatch


class Walker:
    """One throwaway database walked up the migration chain."""

    def __init__(self, templates: Templates, migrator: Migrator) -> None:
        self.templates = templates
        self.migrator = migrator
        self.name: str | None = None
        self.conn: psycopg2.extensions.connection | None = None
        self.last: schema.Snapshot | None = None  # the database's latest snapshot: the next re-reads only what changed
        self.session = contextlib.ExitStack()  # the migrator's connections to the database, kept for the walk
        self.wal: WalWatch | None = None  # made at the first snapshot, kept across fresh databases

    @property
    def url(self) -> str:
        assert self.name
        return self.templates.url(self.name)

    def fresh(self, level: list[Migration]) -> None:
        """A clean database with exactly ``level`` applied."""
        self.close()
        self.name = self.templates.create_empty("roundtrip")
        self.session.enter_context(self.migrator.session(self.url))
        if level:
            self.migrator.apply(self.url, level, lock=False, quiet=True)

    def connection(self) -> psycopg2.extensions.connection:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg2.connect(self.url)
        return self.conn

    def snapshot(self, data: bool = True) -> schema.Snapshot:
        if self.wal is None:
            self.wal = WalWatch(self.templates)
        self.last = incremental.take(self.connection(), self.last, data=data, bookkeeping=self.migrator.bookkeeping,
                                     wal=self.wal)
        return self.last

    def close(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        self.conn = None
        self.last = None
        self.session.close()
        if self.name:
            self.templates.drop(self.name)
            self.name = None

    def end(self) -> None:
        """``close``, and drop what the walk kept across its databases."""
        self.close()
        if self.wal is not None:
            self.wal.close()
            self.wal = None


def accept(diff: schema.Diff, entries: list[dict[str, str]], used: set[int], verdict: Verdict) -> schema.Diff:
    """``diff`` without what ``entries`` accept; those that matched are marked ``used`` and shown in ``verdict``."""
    keys = diff.keys()
    for entry in entries:
        if entry["object"] in keys:
            used.add(id(entry))
            if not any(a["object"] == entry["object"] for a in verdict.accepted):
                verdict.accepted.append({"object": entry["object"], "reason": entry["reason"]})
    return diff.without(e["object"] for e in entries)
