"""A normalised catalog snapshot of one database, and a diff a person reads at a glance.

Every object is one entry ``"<kind> <qualified name>" -> definition text`` (the queries are in
``catalog``), so two snapshots compare with ``==`` and a difference shows as a unified diff of one
object. Table contents are read by ``tabledata``.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from . import catalog, tabledata
from .catalog import prepared
from .catalog.changed import Marks, marks, read_lists

if TYPE_CHECKING:
    import psycopg2.extensions


@dataclass(frozen=True)
class Snapshot:
    objects: dict[str, str]
    data: dict[str, tuple[int, str]] = field(default_factory=dict)
    rows: dict[str, tabledata.Rows] = field(default_factory=dict)  # small tables' rows, by primary key
    # What the next snapshot of the same database needs to re-read only what changed (``incremental``).
    marks: Marks | None = field(default=None, compare=False, repr=False)

    def without(self, keys: Iterable[str]) -> "Snapshot":
        drop = set(keys)
        return Snapshot(
            {k: v for k, v in self.objects.items() if k not in drop},
            {k: v for k, v in self.data.items() if k not in drop},
            {k: v for k, v in self.rows.items() if k not in drop},
        )


def take(conn: "psycopg2.extensions.connection", *, data: bool = True, bookkeeping: Iterable[str] = ()) -> Snapshot:
    """Snapshot the database ``conn`` (psycopg2) is connected to, in one read-only transaction,
    leaving out the ``bookkeeping`` tables of the migration tool."""
    previous_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            found = marks(cur)
            read_lists(cur, found)
            objects: dict[str, str] = {}
            read_objects(cur, catalog.queries(tuple(sorted(bookkeeping)), conn.server_version), objects, found)
            found.tables = frozenset(table_names(objects))
            table_data: dict[str, tuple[int, str]] = {}
            rows: dict[str, tabledata.Rows] = {}
            if data:
                table_data, rows = tabledata.read(cur, sorted(found.tables))
    finally:
        conn.rollback()
        conn.autocommit = previous_autocommit
    return Snapshot(objects, table_data, rows, found)


def read_objects(cur: Any, queries: dict[str, str], objects: dict[str, str], found: Marks,
                 relations: set[int] | None = None) -> None:
    """Run the catalog ``queries`` into ``objects``, noting in ``found`` which relation each object of a
    relation kind belongs to; given ``relations``, the queries are ``catalog.narrowed``'s, prepared."""
    keys_of: dict[int, list[str]] = {}
    selves_of: dict[int, list[tuple[str, int]]] = {}
    others: list[str] = []
    for kind, query in queries.items():
        if relations is None:
            cur.execute(query)
        else:
            prepared.execute(cur, query, [prepared.oids(relations)] if kind in catalog.RELATION_KINDS else [])
        own_catalog = catalog.RELATION_KINDS[kind][1] if kind in catalog.RELATION_KINDS else None
        for row in cur.fetchall():
            key = row[0]
            if key is None:
                continue
            objects[key] = row[1] or ""
            if len(row) > 2:
                owner = int(row[2])
                keys_of.setdefault(owner, []).append(key)
                if own_catalog is not None:
                    self = (own_catalog, int(row[3]))
                    found.selves[self] = owner
                    selves_of.setdefault(owner, []).append(self)
            else:
                others.append(key)
    # A narrowed read reads the relations the caller took out of ``found``: nothing here extends a copied entry.
    for owner, keys in keys_of.items():
        found.keys_of[owner] = found.keys_of.get(owner, ()) + tuple(keys)
    for owner, selves in selves_of.items():
        found.selves_of[owner] = found.selves_of.get(owner, ()) + tuple(selves)
    found.others = tuple(others)


def table_names(objects: dict[str, str]) -> list[str]:
    return sorted(k[len("table "):] for k in objects if k.startswith("table "))


def with_data(conn: "psycopg2.extensions.connection", snapshot: Snapshot, tables: Iterable[str]) -> Snapshot:
    """``snapshot`` with the data of ``tables`` as it is now: for rows added since, without reading the catalog
    (or the other tables) again."""
    previous_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            known = snapshot.marks.tables if snapshot.marks is not None else frozenset(table_names(snapshot.objects))
            table_data, rows = tabledata.read(cur, sorted(known.intersection(tables)))
    finally:
        conn.rollback()
        conn.autocommit = previous_autocommit
    return Snapshot(snapshot.objects, {**snapshot.data, **table_data}, {**snapshot.rows, **rows}, snapshot.marks)


@dataclass(frozen=True)
class Diff:
    left_behind: dict[str, str]  # in the after-snapshot only
    missing: dict[str, str]  # in the before-snapshot only
    changed: dict[str, tuple[str, str]]  # before, after
    row_changes: dict[str, list[str]] = field(default_factory=dict)  # data key -> one line per row that differs

    def __bool__(self) -> bool:
        return bool(self.left_behind or self.missing or self.changed)

    def keys(self) -> set[str]:
        return set(self.left_behind) | set(self.missing) | set(self.changed)

    def without(self, keys: Iterable[str]) -> "Diff":
        drop = set(keys)
        return Diff(
            {k: v for k, v in self.left_behind.items() if k not in drop},
            {k: v for k, v in self.missing.items() if k not in drop},
            {k: v for k, v in self.changed.items() if k not in drop},
            {k: v for k, v in self.row_changes.items() if k not in drop},
        )

    def render(self, before: str = "before", after: str = "after") -> str:
        """Per object: what was left behind, what is missing, and a unified diff of what changed."""
        lines: list[str] = []
        for key in sorted(self.left_behind):
            lines.append(f"+ left behind: {key}")
        for key in sorted(self.missing):
            lines.append(f"- missing:     {key}")
        for key in sorted(self.changed):
            old, new = self.changed[key]
            lines.append(f"~ changed:     {key}")
            if key in self.row_changes:
                lines.extend("      " + line for line in self.row_changes[key])
                continue
            body = difflib.unified_diff(old.splitlines(), new.splitlines(), before, after, lineterm="", n=1)
            lines.extend("      " + line for line in body)
        return "\n".join(lines)


def _data_text(value: tuple[int, str], counts_only: bool) -> str:
    return f"{value[0]} rows" if counts_only else f"{value[0]} rows, content md5 {value[1] or '-'}"


def compare(before: Snapshot, after: Snapshot, *, counts_only: bool = False) -> Diff:
    """What differs between two snapshots; data by row count (and content unless ``counts_only``)."""
    left, missing, changed = {}, {}, {}
    row_changes: dict[str, list[str]] = {}
    # Equal dicts compare at C speed (an incremental snapshot shares most definition strings with the one before,
    # and a string compares equal to itself at once); only when they differ are the keys gone through.
    if before.objects != after.objects:
        for key in after.objects.keys() - before.objects.keys():
            left[key] = after.objects[key]
        for key in before.objects.keys() - after.objects.keys():
            missing[key] = before.objects[key]
        for key, old in before.objects.items() - after.objects.items():
            if key in after.objects:
                changed[key] = (old, after.objects[key])
    if before.data == after.data:
        return Diff(left, missing, changed, row_changes)
    for key in before.data.keys() & after.data.keys():
        old, new = _data_text(before.data[key], counts_only), _data_text(after.data[key], counts_only)
        if old != new:
            changed[key] = (old, new)
            # Row by row when both sides' rows are known (an empty table's are: none).
            if not counts_only and all(key in snap.rows or snap.data[key][0] == 0 for snap in (before, after)):
                row_changes[key] = tabledata.describe(key[len("data "):], before.rows.get(key, ()), after.rows.get(key, ()))
    return Diff(left, missing, changed, row_changes)
