"""Which relations can have changed since an earlier snapshot of the same database: what an incremental
snapshot re-reads (everything else it copies).

A catalog row written since the earlier snapshot carries an xmin at or after that snapshot's horizon (the
oldest transaction still running then; everything older had finished). Such rows, in every catalog a
relation's definitions read, name objects; everything that depends on those (pg_depend, transitively: a
view prints the names of the columns it reads, a foreign key its referenced table) is dirty too, and each
dirty object maps to the relation it belongs to. A deleted row leaves no xmin behind, so what can vanish
without its owner's rows changing is compared as a list: comments, sequence ownership, inheritance, and
the objects themselves (``gone``). What this cannot follow, the answer is None and the caller reads all:
roles and tablespaces (shared catalogs, named in owners and privileges), schemas (a new one can hide a name
in the search path, which changes how names print) and objects leaving an extension.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import prepared

# Catalogs whose rows are objects of their own (classid = the catalog, objid = the row's oid).
_OBJECTS = ("pg_class", "pg_attrdef", "pg_constraint", "pg_trigger", "pg_rewrite", "pg_policy", "pg_statistic_ext",
            "pg_type", "pg_proc", "pg_collation", "pg_opclass", "pg_opfamily", "pg_operator", "pg_am",
            "pg_foreign_server", "pg_foreign_data_wrapper", "pg_ts_config", "pg_ts_dict", "pg_ts_parser",
            "pg_ts_template", "pg_language", "pg_extension", "pg_conversion", "pg_cast", "pg_transform")
# Catalogs whose rows are part of another object: (catalog, classid of that object, its oid column).
_PARTS = (("pg_attribute", "'pg_class'::regclass", "attrelid"), ("pg_index", "'pg_class'::regclass", "indexrelid"),
          ("pg_index", "'pg_class'::regclass", "indrelid"), ("pg_inherits", "'pg_class'::regclass", "inhrelid"),
          ("pg_sequence", "'pg_class'::regclass", "seqrelid"), ("pg_foreign_table", "'pg_class'::regclass", "ftrelid"),
          ("pg_enum", "'pg_type'::regclass", "enumtypid"), ("pg_range", "'pg_type'::regclass", "rngtypid"),
          ("pg_aggregate", "'pg_proc'::regclass", "aggfnoid"), ("pg_amop", "'pg_opfamily'::regclass", "amopfamily"),
          ("pg_amproc", "'pg_opfamily'::regclass", "amprocfamily"), ("pg_ts_config_map", "'pg_ts_config'::regclass", "mapcfg"),
          ("pg_description", "classoid", "objoid"), ("pg_depend", "classid", "objid"))
# Where a part of a relation names the relation it belongs to: (the part's catalog, the catalog to look in, which
# of its rows name the part ``d``, the column there naming the relation). A TOAST table's owner is found through
# its dependency on it (pg_class.reltoastrelid has no index).
_BELONGS = (("pg_class", "pg_depend", "x.classid = d.classid AND x.objid = d.objid AND x.refclassid = d.classid AND x.deptype = 'i' "
             "AND EXISTS (SELECT 1 FROM pg_class t WHERE t.oid = d.objid AND t.relkind = 't')", "refobjid"),
            ("pg_class", "pg_index", "x.indexrelid = d.objid", "indrelid"),
            *((c, c, "x.oid = d.objid", owner) for c, owner in (
                ("pg_constraint", "conrelid"), ("pg_trigger", "tgrelid"), ("pg_rewrite", "ev_class"), ("pg_policy", "polrelid"),
                ("pg_statistic_ext", "stxrelid"), ("pg_attrdef", "adrelid"), ("pg_type", "typrelid"))))
_UNFOLLOWED = ("pg_namespace", "pg_authid", "pg_tablespace")
_FOLLOWED = tuple(sorted(set(_OBJECTS) | {c for c, _, _ in _PARTS}))
_SCANNED = _FOLLOWED + _UNFOLLOWED

# A row is new when its xmin is at or after the horizon ($1). Given the blocks of a catalog the WAL says were
# written since (``walwatch``), only those are read, one TID range scan each: every insert or update of a
# catalog row writes a WAL record naming its block, and scanning whole catalogs (thousands of built-in rows)
# was most of an incremental snapshot's cost, growing with the schema.
_NEW = "age(x.xmin) <= age($1::bigint::text::xid)"
_IN_BLOCK = "x.ctid >= ('(' || b || ',0)')::tid AND x.ctid < ('(' || (b + 1) || ',0)')::tid"
# Extension members, through pg_depend's index on what is referenced (a member's is always its extension).
_MEMBERS = "x.refclassid = 'pg_extension'::regclass AND x.deptype = 'e'"


def _new_rows(catalog: str, columns: str, blocks: int | None) -> str:
    """A query for ``columns`` of ``catalog``'s new rows (``x``); ``blocks``: the number of the parameter that
    holds the blocks to read (int[]), or None to read the whole catalog."""
    if blocks is None:
        return f"SELECT {columns} FROM {catalog} x WHERE {_NEW}"
    return (f"SELECT y.* FROM unnest(${blocks}::int[]) b CROSS JOIN LATERAL "
            f"(SELECT {columns} FROM {catalog} x WHERE {_IN_BLOCK} AND {_NEW} OFFSET 0) y")


@dataclass
class Marks:
    """What an incremental snapshot needs of the snapshot before it."""

    horizon: int  # 32-bit xid: rows written at or after it are new
    schemas: tuple[str, ...]  # current_schemas(false)
    lists: dict[str, frozenset[tuple[int, int]]]  # what can vanish alone: name -> (classid, objid)
    members: int  # rows tying objects to extensions
    lsn: str  # the WAL's insert position as the snapshot was taken (``walwatch``)
    database: int  # the database's oid
    owners: dict[str, int] = field(default_factory=dict)  # key of a relation kind -> the relation's oid
    selves: dict[str, dict[int, int]] = field(default_factory=dict)  # catalog -> object oid -> relation's oid
    composites: bool | None = None  # a table has a column of a composite type (None: not looked at)
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # catalog -> (its database or 0, file number)


_LISTS = {
    "comments": "SELECT classoid, objoid FROM pg_description WHERE objoid >= 16384",
    "owned": ("SELECT 'pg_class'::regclass::oid, d.objid FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
              "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')"),
    "inherits": "SELECT 'pg_class'::regclass::oid, inhrelid FROM pg_inherits",
}


def marks(cur: Any) -> Marks:
    """The marks of the snapshot being taken in ``cur``'s transaction (relation owners are added by the caller)."""
    prepared.execute(cur, "SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::numeric % 4294967296)::bigint, "
                     f"current_schemas(false)::text[], (SELECT count(*) FROM pg_depend x WHERE {_MEMBERS}), "
                     "pg_current_wal_insert_lsn()::text, d.oid, (SELECT json_object_agg(relname, ARRAY[CASE WHEN "
                     "relisshared THEN 0 ELSE d.oid END, pg_relation_filenode(oid)]) FROM pg_class WHERE relnamespace = "
                     f"'pg_catalog'::regnamespace AND relname IN ({', '.join(repr(c) for c in _SCANNED)})) "
                     "FROM pg_database d WHERE d.datname = current_database()")
    horizon, schemas, members, lsn, database, files = cur.fetchone()
    lists = {}
    for name, query in _LISTS.items():
        prepared.execute(cur, query)
        lists[name] = frozenset((int(a), int(b)) for a, b in cur.fetchall())
    return Marks(int(horizon), tuple(schemas), lists, int(members), lsn, int(database),
                 files={name: (int(db), int(node)) for name, (db, node) in (files or {}).items()})


def gone(cur: Any, selves: dict[str, dict[int, int]]) -> set[tuple[str, int]]:
    """The (catalog, oid) of objects in ``selves`` that no longer exist."""
    catalogs = sorted(selves)
    if not catalogs:
        return set()
    prepared.execute(cur, " UNION ALL ".join(
        f"SELECT '{catalog}', o FROM unnest(${number}::oid[]) o WHERE NOT EXISTS (SELECT 1 FROM {catalog} x WHERE x.oid = o)"
        for number, catalog in enumerate(catalogs, 1)), [prepared.oids(selves[c]) for c in catalogs])
    return {(catalog, int(oid)) for catalog, oid in cur.fetchall()}


def dirty(cur: Any, before: Marks, now: Marks, written: dict[tuple[int, int], set[int]] | None = None) -> set[int] | None:
    """The oids of the relations whose definitions can differ from ``before``'s; None when that cannot be told.
    ``written``: the blocks of each file ((database or 0, file number)) the WAL says were written since
    ``before``, when known."""
    if now.schemas != before.schemas or len(now.schemas) > 1:
        return None
    horizon = str(before.horizon)
    # The blocks of a catalog whose file changed (VACUUM FULL) are all in the WAL, but simpler read whole.
    by_block = written is not None and len(now.files) == len(_SCANNED) and now.files == before.files
    param = {c: 2 + i for i, c in enumerate(_UNFOLLOWED)} if by_block else {}
    blocks = [_blocks(written, now.files[c]) for c in _UNFOLLOWED] if written is not None and by_block else []
    prepared.execute(cur, f"SELECT (SELECT count(*) FROM pg_depend x WHERE {_MEMBERS} AND NOT {_NEW}), "
                     + ", ".join(f"EXISTS ({_new_rows(c, '1', param.get(c))})" for c in _UNFOLLOWED), [horizon, *blocks])
    old_members, *unfollowed = cur.fetchone()
    if old_members < before.members or any(unfollowed):
        return None
    vanished = set().union(*(before.lists[name] - now.lists[name] for name in before.lists))
    param = {c: 4 + i for i, c in enumerate(_FOLLOWED)} if by_block else {}
    blocks = [_blocks(written, now.files[c]) for c in _FOLLOWED] if written is not None and by_block else []
    fresh = [_new_rows(c, f"'{c}'::regclass::oid, x.oid", param.get(c)) for c in _OBJECTS]
    fresh += [_new_rows(c, f"{classid}, x.{column}", param.get(c)) for c, classid, column in _PARTS]
    fresh.append("SELECT * FROM unnest($2::oid[], $3::oid[])")
    # Each step an index lookup per dirty object (LATERAL ... OFFSET 0): a generic plan's estimates made them
    # merge and hash joins over whole catalogs, whose cost grew with the schema.
    belongs = [f"SELECT y.* FROM dirty d CROSS JOIN LATERAL (SELECT x.{owner} FROM {c} x WHERE {names} OFFSET 0) y "
               f"WHERE d.classid = '{part}'::regclass" for part, c, names, owner in _BELONGS]
    prepared.execute(cur, f"""
        WITH RECURSIVE fresh(classid, objid) AS ({' UNION '.join(fresh)}),
        dirty(classid, objid) AS (
            SELECT classid, objid FROM fresh
            UNION SELECT dep.* FROM dirty d CROSS JOIN LATERAL (
                SELECT x.classid, x.objid FROM pg_depend x WHERE x.refclassid = d.classid AND x.refobjid = d.objid OFFSET 0) dep)
        SELECT objid FROM dirty WHERE classid = 'pg_class'::regclass UNION {' UNION '.join(belongs)}""",
                     [horizon, "{" + ",".join(str(a) for a, _ in sorted(vanished)) + "}",
                      "{" + ",".join(str(b) for _, b in sorted(vanished)) + "}", *blocks])
    return {int(oid) for (oid,) in cur.fetchall() if oid}


def _blocks(written: dict[tuple[int, int], set[int]], file: tuple[int, int]) -> str:
    return "{" + ",".join(str(b) for b in sorted(written.get(file, ()))) + "}"
