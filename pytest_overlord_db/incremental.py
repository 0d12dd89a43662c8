"""A snapshot taken after an earlier one of the same database, re-reading only what can have changed since
(``catalog.changed`` says which relations) and copying the rest: the round trip takes three snapshots per
migration, and a whole one costs time in proportion to the schema. The result equals ``schema.take``'s,
key for key and definition for definition (tests/test_incremental.py proves it against every change of the
pg_dump oracle); the kinds not hung on a relation are few and small, and are read whole every time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from . import catalog, schema, tabledata
from .catalog import changed, prepared

if TYPE_CHECKING:
    import psycopg2.extensions

    from .walwatch import WalWatch


def take(conn: "psycopg2.extensions.connection", before: schema.Snapshot | None, *, data: bool = True,
         bookkeeping: Iterable[str] = (), wal: "WalWatch | None" = None) -> schema.Snapshot:
    """What ``schema.take`` returns, reading again only what can differ from ``before`` (an earlier snapshot
    of the same database, taken with the same ``bookkeeping``); without ``before`` (or its marks), all.
    Given ``wal``, only the tables it names as written (and those whose definitions changed) are read."""
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
            written = wal.blocks(now.database, before.marks.lsn, now.lsn) if wal is not None else None
            # The catalog queries on their generic plans: a walker's connection runs each one three times,
            # and PostgreSQL plans the first five runs anew; planning the column query took 1.5 ms where
            # running its generic plan (index scans on the few relations) takes 0.14 ms.
            cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            relations = changed.dirty(cur, before.marks, now, written)
            if relations is None:
                schema.read_objects(cur, catalog.queries(skip, conn.server_version), objects, now)
            else:
                _copy_unchanged(cur, before, before.marks, relations, objects, now)
                schema.read_objects(cur, catalog.narrowed(skip, conn.server_version), objects, now, relations)
            cur.execute("SET LOCAL plan_cache_mode TO DEFAULT")
            table_data: dict[str, tuple[int, str]] = {}
            rows: dict[str, tabledata.Rows] = {}
            if data:
                names = schema.table_names(objects)
                again = _written(cur, before, before.marks, relations, names, written, now) if written is not None else None
                table_data, rows = tabledata.read(cur, names if again is None else sorted(again))
                if again is not None:
                    for name in names:
                        key = "data " + name
                        if name not in again:
                            table_data[key] = before.data[key]
                            if key in before.rows:
                                rows[key] = before.rows[key]
    finally:
        conn.rollback()
        conn.autocommit = previous_autocommit
    return schema.Snapshot(objects, table_data, rows, now)


_WRITTEN = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND (c.oid = ANY($1::oid[]) OR c.relfilenode = ANY($2::oid[]) OR c.relpersistence <> 'p')
UNION ALL SELECT NULL FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"""

# Tables whose rows print differently when another object changes (a composite type's new attribute shows
# in every row of a column of that type) are the one way rows change without a WAL record for them. Whether
# any table has such a column changes only with a table's own columns, so once none had, only the tables
# whose definitions changed are looked at again: looking at every column made each snapshot's cost grow
# with the schema.
_COMPOSITES = """
SELECT EXISTS (
    SELECT 1 FROM pg_attribute a JOIN pg_class r ON r.oid = a.attrelid AND r.relkind = 'r'
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
    LEFT JOIN pg_type b ON b.oid = t.typbasetype
    WHERE a.attnum > 0 AND NOT a.attisdropped AND r.oid >= 16384 AND {among}
      AND 'c' IN (t.typtype, e.typtype, b.typtype))"""
_COMPOSITES_ALL = _COMPOSITES.format(among="true")
_COMPOSITES_AMONG = _COMPOSITES.format(among="r.oid = ANY($1::oid[])")


def _written(cur: Any, before: schema.Snapshot, marks: changed.Marks, relations: set[int] | None, names: list[str],
             written: dict[tuple[int, int], set[int]], now: changed.Marks) -> set[str] | None:
    """The tables whose rows can differ from ``before``'s (its ``marks``); None when that cannot be told (read
    them all). Someone else writing in the database as the snapshot is taken is one such case: nobody should,
    in the databases the round trip walks."""
    if relations is None:
        return None
    if marks.composites is False:
        prepared.execute(cur, _COMPOSITES_AMONG, [prepared.oids(relations)])
    else:
        prepared.execute(cur, _COMPOSITES_ALL)
    now.composites = bool(cur.fetchone()[0])
    if now.composites:
        return None
    files = {node for database, node in written if database == now.database}
    prepared.execute(cur, _WRITTEN, [prepared.oids(relations), prepared.oids(files)])
    found = [name for (name,) in cur.fetchall()]
    if None in found:
        return None
    return (set(found) & set(names)) | {name for name in names if "data " + name not in before.data}


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
