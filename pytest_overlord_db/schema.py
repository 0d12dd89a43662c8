"""A normalised catalog snapshot of one database, and a diff a person reads at a glance.

Every object is one entry ``"<kind> <qualified name>" -> definition text``;
the definition is what PostgreSQL itself prints for it (pg_get_*def) plus
owner, privileges and comment, so two snapshots compare with ``==`` and a
difference shows as a unified diff of one object. Objects that belong to an
extension are folded into the extension's entry, and the migration tool's
bookkeeping tables are left out.
"""
from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from . import tabledata

if TYPE_CHECKING:
    import psycopg2.extensions

_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"
_USER_NS = f"n.nspname NOT IN {_SYSTEM_SCHEMAS} AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'"
_NOT_EXT = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {cat}::regclass AND d.objid = {oid} AND d.deptype = 'e')"

# Sorted privileges: aclitem[] order depends on grant history, not meaning; and a
# NULL acl means the defaults, which is what a GRANT then REVOKE leaves spelled out.
_ACL = "(SELECT string_agg(a::text, ' ' ORDER BY a::text) FROM unnest({col}) a)"
def _comment(oid: str, catalog: str, subid: str = "0") -> str:
    # What obj_description()/col_description() return, as a subquery: those are SQL functions the planner
    # does not inline, and calling one per row was a third of a snapshot's time.
    return (f"(SELECT ds.description FROM pg_description ds WHERE ds.objoid = {oid} "
            f"AND ds.classoid = '{catalog}'::regclass AND ds.objsubid = {subid})")


_REL_ACL = _ACL.format(col="""coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))""")


@functools.lru_cache(maxsize=8)
def queries(bookkeeping: tuple[str, ...] = ()) -> dict[str, str]:
    """The catalog queries, leaving out the migration tool's ``bookkeeping`` tables."""
    skip = "(" + ", ".join(["''"] + ["'" + t.replace("'", "''") + "'" for t in bookkeeping]) + ")"
    return {k: v.replace("{_BOOKKEEPING}", skip) for k, v in _QUERIES.items()}


_QUERIES: dict[str, str] = {
    "schema": f"""
        SELECT 'schema ' || quote_ident(n.nspname),
               concat_ws(E'\\n', 'owner ' || pg_get_userbyid(n.nspowner), 'acl ' || {_ACL.format(col="coalesce(n.nspacl, acldefault('n', n.nspowner))")},
                         'comment ' || {_comment('n.oid', 'pg_namespace')})
        FROM pg_namespace n WHERE {_USER_NS} AND {_NOT_EXT.format(cat="'pg_namespace'", oid='n.oid')}""",
    "relation": f"""
        SELECT CASE c.relkind WHEN 'r' THEN 'table ' WHEN 'p' THEN 'table ' WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view '
                    WHEN 'S' THEN 'sequence ' WHEN 'f' THEN 'foreign table ' WHEN 'c' THEN 'type ' END
               || quote_ident(n.nspname) || '.' || quote_ident(c.relname),
               concat_ws(E'\\n',
                 'owner ' || pg_get_userbyid(c.relowner),
                 'acl ' || {_REL_ACL},
                 CASE WHEN c.relkind IN ('r','p') THEN 'persistence ' || c.relpersistence::text END,
                 CASE WHEN c.relrowsecurity THEN 'row level security enabled' END,
                 CASE WHEN c.relforcerowsecurity THEN 'row level security forced' END,
                 CASE WHEN c.relkind IN ('v','m') THEN 'definition ' || pg_get_viewdef(c.oid) END,
                 CASE WHEN c.relkind = 'p' THEN 'partition key ' || pg_get_partkeydef(c.oid) END,
                 CASE WHEN c.relispartition THEN 'partition of ' || (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid) || ' ' || pg_get_expr(c.relpartbound, c.oid) END,
                 CASE WHEN c.relkind = 'S' THEN (
                    SELECT format('sequence %s start %s increment %s min %s max %s cache %s%s', format_type(s.seqtypid, NULL),
                                  s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END)
                    FROM pg_sequence s WHERE s.seqrelid = c.oid) END,
                 CASE WHEN c.relkind = 'S' THEN (
                    SELECT 'owned by ' || dep.refobjid::regclass::text || '.' || quote_ident(a.attname)
                    FROM pg_depend dep JOIN pg_attribute a ON a.attrelid = dep.refobjid AND a.attnum = dep.refobjsubid
                    WHERE dep.classid = 'pg_class'::regclass AND dep.objid = c.oid AND dep.deptype IN ('a', 'i')
                      AND dep.refclassid = 'pg_class'::regclass LIMIT 1) END,
                 'comment ' || {_comment('c.oid', 'pg_class')})
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r','p','v','m','S','f','c') AND {_USER_NS}
          AND c.relname NOT IN {{_BOOKKEEPING}}
          AND NOT (c.relkind = 'c' AND EXISTS (SELECT 1 FROM pg_type t WHERE t.typrelid = c.oid AND {_NOT_EXT.format(cat="'pg_type'", oid='t.oid').replace('NOT EXISTS', 'EXISTS')}))
          AND {_NOT_EXT.format(cat="'pg_class'", oid='c.oid')}""",
    "column": f"""
        SELECT 'column ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || '.' || quote_ident(a.attname),
               concat_ws(E'\\n',
                 'type ' || format_type(a.atttypid, a.atttypmod),
                 CASE WHEN a.attnotnull THEN 'not null' END,
                 CASE WHEN a.attgenerated = '' THEN 'default ' || pg_get_expr(ad.adbin, ad.adrelid) END,
                 CASE WHEN a.attgenerated <> '' THEN 'generated always as ' || pg_get_expr(ad.adbin, ad.adrelid) END,
                 CASE a.attidentity WHEN 'a' THEN 'identity always' WHEN 'd' THEN 'identity by default' END,
                 CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN 'collate ' || co.collname END,
                 'position ' || row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
                 'acl ' || {_ACL.format(col='a.attacl')},
                 'comment ' || {_comment('c.oid', 'pg_class', 'a.attnum')})
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r','p','v','m','f','c') AND {_USER_NS}
          AND c.relname NOT IN {{_BOOKKEEPING}}
          AND {_NOT_EXT.format(cat="'pg_class'", oid='c.oid')}
          AND NOT (c.relkind = 'c' AND EXISTS (SELECT 1 FROM pg_type t2 JOIN pg_depend d ON d.objid = t2.oid AND d.classid = 'pg_type'::regclass AND d.deptype = 'e' WHERE t2.typrelid = c.oid))""",
    "constraint": f"""
        SELECT 'constraint ' || quote_ident(n.nspname) || '.' || COALESCE(quote_ident(c.relname), format_type(con.contypid, NULL)) || '.' || quote_ident(con.conname),
               concat_ws(E'\\n', pg_get_constraintdef(con.oid, true),
                         CASE WHEN con.condeferrable THEN 'deferrable' END, CASE WHEN con.condeferred THEN 'initially deferred' END,
                         CASE WHEN NOT con.convalidated THEN 'not valid' END,
                         'comment ' || {_comment('con.oid', 'pg_constraint')})
        FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
        LEFT JOIN pg_class c ON c.oid = con.conrelid
        WHERE {_USER_NS} AND (c.relname IS NULL OR (c.relname NOT IN {{_BOOKKEEPING}}))
          AND (con.contypid = 0 OR {_NOT_EXT.format(cat="'pg_type'", oid='con.contypid')})
          AND (con.conrelid = 0 OR {_NOT_EXT.format(cat="'pg_class'", oid='con.conrelid')})""",
    "index": f"""
        SELECT 'index ' || quote_ident(n.nspname) || '.' || quote_ident(ic.relname),
               concat_ws(E'\\n', pg_get_indexdef(i.indexrelid), CASE WHEN i.indisclustered THEN 'clustered' END,
                         CASE WHEN NOT i.indisvalid THEN 'invalid' END, 'comment ' || {_comment('ic.oid', 'pg_class')})
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE {_USER_NS} AND c.relname NOT IN {{_BOOKKEEPING}}
          AND {_NOT_EXT.format(cat="'pg_class'", oid='c.oid')}""",
    "function": f"""
        SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate ' WHEN 'w' THEN 'window function ' ELSE 'function ' END
               || quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               concat_ws(E'\\n', CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_get_functiondef(p.oid)
                                      ELSE 'returns ' || pg_get_function_result(p.oid) END,
                         'owner ' || pg_get_userbyid(p.proowner), 'acl ' || {_ACL.format(col="coalesce(p.proacl, acldefault('f', p.proowner))")},
                         'comment ' || {_comment('p.oid', 'pg_proc')})
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {_USER_NS} AND {_NOT_EXT.format(cat="'pg_proc'", oid='p.oid')}""",
    "trigger": f"""
        SELECT 'trigger ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || '.' || quote_ident(tg.tgname),
               concat_ws(E'\\n', pg_get_triggerdef(tg.oid, true), 'enabled ' || tg.tgenabled::text,
                         'comment ' || {_comment('tg.oid', 'pg_trigger')})
        FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT tg.tgisinternal AND {_USER_NS} AND {_NOT_EXT.format(cat="'pg_class'", oid='c.oid')}""",
    "type": f"""
        SELECT CASE t.typtype WHEN 'e' THEN 'enum ' WHEN 'd' THEN 'domain ' WHEN 'r' THEN 'range ' WHEN 'b' THEN 'base type ' END
               || quote_ident(n.nspname) || '.' || quote_ident(t.typname),
               concat_ws(E'\\n',
                 CASE WHEN t.typtype = 'e' THEN 'labels ' || (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid) END,
                 CASE WHEN t.typtype = 'd' THEN 'over ' || format_type(t.typbasetype, t.typtypmod) END,
                 CASE WHEN t.typtype = 'd' AND t.typnotnull THEN 'not null' END,
                 CASE WHEN t.typtype = 'd' THEN 'default ' || t.typdefault END,
                 CASE WHEN t.typtype = 'r' THEN 'subtype ' || (SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = t.oid) END,
                 'owner ' || pg_get_userbyid(t.typowner), 'acl ' || {_ACL.format(col="coalesce(t.typacl, acldefault('T', t.typowner))")},
                 'comment ' || {_comment('t.oid', 'pg_type')})
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype IN ('e', 'd', 'r', 'b') AND t.typelem = 0 AND {_USER_NS}
          AND {_NOT_EXT.format(cat="'pg_type'", oid='t.oid')}
          AND NOT EXISTS (SELECT 1 FROM pg_type arr WHERE arr.typarray = t.oid)""",
    "extension": f"""
        SELECT 'extension ' || e.extname,
               concat_ws(E'\\n', 'version ' || e.extversion, 'schema ' || n.nspname, 'comment ' || {_comment('e.oid', 'pg_extension')})
        FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql'""",
    "policy": f"""
        SELECT 'policy ' || quote_ident(p.schemaname) || '.' || quote_ident(p.tablename) || '.' || quote_ident(p.policyname),
               concat_ws(E'\\n', p.permissive || ' for ' || p.cmd || ' to ' || array_to_string(p.roles, ','),
                         'using ' || p.qual, 'with check ' || p.with_check)
        FROM pg_policies p WHERE p.schemaname NOT IN {_SYSTEM_SCHEMAS}""",
}


@dataclass(frozen=True)
class Snapshot:
    objects: dict[str, str]
    data: dict[str, tuple[int, str]] = field(default_factory=dict)
    rows: dict[str, tabledata.Rows] = field(default_factory=dict)  # small tables' rows, by primary key

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
    objects: dict[str, str] = {}
    previous_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            for query in queries(tuple(sorted(bookkeeping))).values():
                cur.execute(query)
                for key, definition in cur.fetchall():
                    if key is not None:
                        objects[key] = definition or ""
            table_data: dict[str, tuple[int, str]] = {}
            rows: dict[str, tabledata.Rows] = {}
            if data:
                table_data, rows = tabledata.read(cur, _tables(objects), _USER_NS)
    finally:
        conn.rollback()
        conn.autocommit = previous_autocommit
    return Snapshot(objects, table_data, rows)


def _tables(objects: dict[str, str]) -> list[str]:
    return sorted(k[len("table "):] for k in objects if k.startswith("table "))


def with_data(conn: "psycopg2.extensions.connection", snapshot: Snapshot, tables: Iterable[str]) -> Snapshot:
    """``snapshot`` with the data of ``tables`` as it is now: for rows added since, without reading the catalog
    (or the other tables) again."""
    previous_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            table_data, rows = tabledata.read(cur, sorted(set(tables) & set(_tables(snapshot.objects))), _USER_NS)
    finally:
        conn.rollback()
        conn.autocommit = previous_autocommit
    return Snapshot(snapshot.objects, {**snapshot.data, **table_data}, {**snapshot.rows, **rows})


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
    for key in after.objects.keys() - before.objects.keys():
        left[key] = after.objects[key]
    for key in before.objects.keys() - after.objects.keys():
        missing[key] = before.objects[key]
    for key in before.objects.keys() & after.objects.keys():
        if before.objects[key] != after.objects[key]:
            changed[key] = (before.objects[key], after.objects[key])
    row_changes = {}
    for key in before.data.keys() & after.data.keys():
        old, new = _data_text(before.data[key], counts_only), _data_text(after.data[key], counts_only)
        if old != new:
            changed[key] = (old, new)
            # Row by row when both sides' rows are known (an empty table's are: none).
            if not counts_only and all(key in snap.rows or snap.data[key][0] == 0 for snap in (before, after)):
                row_changes[key] = tabledata.describe(key[len("data "):], before.rows.get(key, ()), after.rows.get(key, ()))
    return Diff(left, missing, changed, row_changes)
