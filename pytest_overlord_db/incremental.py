"""A snapshot taken after an earlier one of the same database, re-reading only what can have changed since
(``catalog.changed`` says which relations) and copying the rest: the round trip takes three snapshots per
migration, and a whole one costs time in proportion to the schema. The result equals ``schema.take``'s,
key for key and definition for definition (tests/test_incremental.py proves it against every change of the
pg_dump oracle); the kinds not hung on a relation are few and small, and are read whole every time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from . import catalog, schema, tabledata
from .catalog import USER_NS, changed

if TYPE_CHECKING:
    import psycopg2.extensions


def take(conn: "psycopg2.extensions.connection", before: schema.Snapshot | None, *, data: bool = True,
         bookkeeping: Iterable[str] = ()) -> schema.Snapshot:
    """What ``schema.take`` returns, reading again only what can differ from ``before`` (an earlier snapshot
    of the same database, taken with the same ``bookkeeping``); without ``before`` (or its marks), all."""
    if before is None or before.marks is None:
        return schema.take(conn, data=data, bookkeeping=bookkeeping)
    skip = tuple(sorted(bookkeeping))
    previous_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            now = changed.marks(cur)
            objects: dict[str, str] = {}
            relations = changed.dirty(cur, before.marks, now)
            if relations is None:
                schema.read_objects(cur, catalog.queries(skip, conn.server_version), objects, now)
            else:
                _copy_unchanged(cur, before, before.marks, relations, objects, now)
                schema.read_objects(cur, catalog.narrowed(skip, conn.server_version), objects, now, relations)
            table_data: dict[str, tuple[int, str]] = {}
            rows: dict[str, tabledata.Rows] = {}
            if data:
                table_data, rows = tabledata.read(cur, schema.table_names(objects), USER_NS)
    finally:
        conn.rollback()
        conn.autocommit = previous_autocommit
    return schema.Snapshot(objects, table_data, rows, now)


def _copy_unchanged(cur: object, before: schema.Snapshot, marks: changed.Marks, relations: set[int],
                    objects: dict[str, str], now: changed.Marks) -> None:
    """Into ``objects``, ``before``'s objects of relations not in ``relations`` (which gains the relations
    whose objects are gone); domain constraints, which belong to none, are always read again."""
    lost = changed.gone(cur, marks.selves)
    relations.update(marks.selves[catalog_name][oid] for catalog_name, oid in lost)
    relations.add(0)
    for key, owner in marks.owners.items():
        if owner not in relations:
            objects[key] = before.objects[key]
            now.owners[key] = owner
    for catalog_name, selves in marks.selves.items():
        now.selves[catalog_name] = {oid: owner for oid, owner in selves.items() if owner not in relations}
