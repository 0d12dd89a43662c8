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
            prepared.planned_for(cur, len(before.objects))
            now = changed.marks(cur)
            written = wal.blocks(now.database, before.marks.lsn, now.lsn) if wal is not None else None
            changed.read_lists(cur, now, before.marks, written)
            # The catalog queries on their generic plans: a walker's connection runs each one three times,
            # and PostgreSQL plans the first five runs anew; planning the column query took 1.5 ms where
            # running its generic plan (index scans on the few relations) takes 0.14 ms.
            cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            relations = changed.dirty(cur, before.marks, now, written)
            objects: dict[str, str] = {}
            if relations is None:
                schema.read_objects(cur, catalog.queries(skip, conn.server_version), objects, now)
                now.tables = frozenset(schema.table_names(objects))
            else:
                objects, dropped = _copy_unchanged(before, before.marks, relations, now)
                fresh: dict[str, str] = {}
                schema.read_objects(cur, catalog.narrowed(skip, conn.server_version), fresh, now, relations)
                objects.update(fresh)
                now.tables = (before.marks.tables - {k[len("table "):] for k in dropped if k.startswith("table ")}) | {
                    k[len("table "):] for k in fresh if k.startswith("table ")}
            cur.execute("SET LOCAL plan_cache_mode TO DEFAULT")
            table_data: dict[str, tuple[int, str]] = {}
            rows: dict[str, tabledata.Rows] = {}
            if data:
                # Copied only from a snapshot that read every table's data.
                again = (_written(cur, before.marks, relations, now.tables, written, now)
                         if written is not None and len(before.data) == len(before.marks.tables) else None)
                if again is None:
                    table_data, rows = tabledata.read(cur, sorted(now.tables))
                else:
                    table_data, rows = dict(before.data), dict(before.rows)
                    for name in (before.marks.tables - now.tables) | again:
                        table_data.pop("data " + name, None)
                        rows.pop("data " + name, None)
                    fresh_data, fresh_rows = tabledata.read(cur, sorted(again))
                    table_data.update(fresh_data)
                    rows.update(fresh_rows)
    finally:
        conn.rollback()
        conn.autocommit = previous_autocommit
    return schema.Snapshot(objects, table_data, rows, now)


# The tables the WAL names ($2: file numbers) and those whose definitions changed ($1), each found through an
# index (scanning pg_class made each snapshot's cost grow with the schema), and the tables that can change
# without their files showing in the WAL ($3): unlogged ones, and those in a tablespace of their own (a file
# number alone names a file in the database's tablespace).
_WRITTEN = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.oid, c.relpersistence <> 'p' OR c.reltablespace <> 0
FROM (SELECT unnest($1::oid[]) UNION SELECT pg_filenode_relation(0, f) FROM unnest($2::oid[]) f
      UNION SELECT unnest($3::oid[])) o(oid)
CROSS JOIN LATERAL (SELECT * FROM pg_class c WHERE c.oid = o.oid AND c.relkind = 'r' OFFSET 0) c
JOIN pg_namespace n ON n.oid = c.relnamespace
UNION ALL SELECT NULL, NULL, NULL FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"""
_SPECIAL = ("SELECT coalesce(array_agg(oid), '{}') FROM pg_class "
            "WHERE oid >= 16384 AND relkind = 'r' AND (relpersistence <> 'p' OR reltablespace <> 0)")

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


def _written(cur: Any, marks: changed.Marks, relations: set[int] | None, names: frozenset[str],
             written: dict[tuple[int, int], set[int]], now: changed.Marks) -> frozenset[str] | None:
    """The tables whose rows can differ from those of the snapshot before (its ``marks``); None when that cannot be told (read
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
    special = marks.special
    if special is None:  # once a walk, on its first incremental snapshot
        prepared.execute(cur, _SPECIAL)
        special = frozenset(int(oid) for oid in cur.fetchone()[0])
    files = {node for database, node in written if database == now.database}
    prepared.execute(cur, _WRITTEN, [prepared.oids(relations), prepared.oids(files), prepared.oids(special)])
    found = cur.fetchall()
    if any(name is None for name, _, _ in found):
        return None
    # A table turns unlogged or moves only by a change of its definition: it is then among ``relations``.
    now.special = (special - relations) | {int(oid) for _, oid, always in found if always}
    return names.intersection(name for name, _, _ in found) | (names - marks.tables)


def _copy_unchanged(before: schema.Snapshot, marks: changed.Marks, relations: set[int],
                    now: changed.Marks) -> tuple[dict[str, str], list[str]]:
    """``before``'s objects of relations not in ``relations`` (which gains the relations whose objects are
    gone), with their marks into ``now``, and the keys of ``before``'s that were left out. Domain constraints,
    which belong to none, are always read again."""
    relations.update(marks.selves[self] for self in changed.gone(marks, now))
    relations.add(0)
    objects = before.objects.copy()  # copy() clones a dict's table whole; update() into an empty one inserts key by key
    for key in marks.others:
        objects.pop(key, None)
    now.keys_of, now.selves, now.selves_of = marks.keys_of.copy(), marks.selves.copy(), marks.selves_of.copy()
    dropped: list[str] = []
    for owner in relations:
        keys = now.keys_of.pop(owner, ())
        for key in keys:
            objects.pop(key, None)
        dropped.extend(keys)
        for self in now.selves_of.pop(owner, ()):
            now.selves.pop(self, None)
    return objects, dropped
