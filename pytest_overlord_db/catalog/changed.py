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
# Where a part of a relation names the relation it belongs to.
_BELONGS = (("pg_class", "reltoastrelid", "oid"), ("pg_index", "indexrelid", "indrelid"),
            ("pg_constraint", "oid", "conrelid"), ("pg_trigger", "oid", "tgrelid"), ("pg_rewrite", "oid", "ev_class"),
            ("pg_policy", "oid", "polrelid"), ("pg_statistic_ext", "oid", "stxrelid"), ("pg_attrdef", "oid", "adrelid"),
            ("pg_type", "oid", "typrelid"))
_UNFOLLOWED = ("pg_namespace", "pg_authid", "pg_tablespace")


@dataclass(frozen=True)
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


_LISTS = {
    "comments": "SELECT classoid, objoid FROM pg_description WHERE objoid >= 16384",
    "owned": ("SELECT 'pg_class'::regclass::oid, d.objid FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
              "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')"),
    "inherits": "SELECT 'pg_class'::regclass::oid, inhrelid FROM pg_inherits",
}


def marks(cur: Any) -> Marks:
    """The marks of the snapshot being taken in ``cur``'s transaction (relation owners are added by the caller)."""
    prepared.execute(cur, "SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::numeric % 4294967296)::bigint, "
                     "current_schemas(false)::text[], (SELECT count(*) FROM pg_depend WHERE deptype = 'e'), "
                     "pg_current_wal_insert_lsn()::text, (SELECT oid FROM pg_database WHERE datname = current_database())")
    horizon, schemas, members, lsn, database = cur.fetchone()
    lists = {}
    for name, query in _LISTS.items():
        prepared.execute(cur, query)
        lists[name] = frozenset((int(a), int(b)) for a, b in cur.fetchall())
    return Marks(int(horizon), tuple(schemas), lists, int(members), lsn, int(database))


def gone(cur: Any, selves: dict[str, dict[int, int]]) -> set[tuple[str, int]]:
    """The (catalog, oid) of objects in ``selves`` that no longer exist."""
    catalogs = sorted(selves)
    if not catalogs:
        return set()
    prepared.execute(cur, " UNION ALL ".join(
        f"SELECT '{catalog}', o FROM unnest(${number}::oid[]) o WHERE NOT EXISTS (SELECT 1 FROM {catalog} x WHERE x.oid = o)"
        for number, catalog in enumerate(catalogs, 1)), [prepared.oids(selves[c]) for c in catalogs])
    return {(catalog, int(oid)) for catalog, oid in cur.fetchall()}


def dirty(cur: Any, before: Marks, now: Marks) -> set[int] | None:
    """The oids of the relations whose definitions can differ from ``before``'s; None when that cannot be told."""
    if now.schemas != before.schemas or len(now.schemas) > 1:
        return None
    new = "age(x.xmin) <= age($1::bigint::text::xid)"
    horizon = str(before.horizon)
    prepared.execute(cur, f"SELECT (SELECT count(*) FROM pg_depend x WHERE deptype = 'e' AND NOT {new}), "
                     + ", ".join(f"EXISTS (SELECT 1 FROM {catalog} x WHERE {new})" for catalog in _UNFOLLOWED), [horizon])
    old_members, *unfollowed = cur.fetchone()
    if old_members < before.members or any(unfollowed):
        return None
    vanished = set().union(*(before.lists[name] - now.lists[name] for name in before.lists))
    fresh = [f"SELECT '{c}'::regclass::oid, x.oid FROM {c} x WHERE {new}" for c in _OBJECTS]
    fresh += [f"SELECT {classid}, x.{column} FROM {c} x WHERE {new}" for c, classid, column in _PARTS]
    fresh.append("SELECT * FROM unnest($2::oid[], $3::oid[])")
    belongs = [f"SELECT x.{owner} FROM dirty d JOIN {c} x ON d.classid = '{'pg_class' if c == 'pg_index' else c}'::regclass "
               f"AND x.{column} = d.objid" for c, column, owner in _BELONGS]
    prepared.execute(cur, f"""
        WITH RECURSIVE fresh(classid, objid) AS ({' UNION '.join(fresh)}),
        dirty(classid, objid) AS (
            SELECT classid, objid FROM fresh
            UNION SELECT dep.classid, dep.objid FROM dirty d JOIN pg_depend dep ON dep.refclassid = d.classid AND dep.refobjid = d.objid)
        SELECT objid FROM dirty WHERE classid = 'pg_class'::regclass UNION {' UNION '.join(belongs)}""",
                     [horizon, "{" + ",".join(str(a) for a, _ in sorted(vanished)) + "}",
                      "{" + ",".join(str(b) for _, b in sorted(vanished)) + "}"])
    return {int(oid) for (oid,) in cur.fetchall() if oid}
