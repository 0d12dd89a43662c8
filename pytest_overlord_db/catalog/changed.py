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
from .relations import SELF

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
_SELVES = tuple(sorted({c for _, c in SELF.values() if c}))  # the catalogs a relation kind's objects are rows of

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
    members: int  # rows tying objects to extensions
    lsn: str  # the WAL's insert position as the snapshot was taken (``walwatch``)
    database: int  # the database's oid
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # catalog -> (its database or 0, file number)
    # What can vanish alone (``_LISTS``): name -> catalog block -> the (classid, objid) its rows name
    lists: dict[str, dict[int, frozenset[tuple[int, int]]]] = field(default_factory=dict)
    looked: dict[str, frozenset[int]] | None = None  # the blocks of each list read again (None: all of them)
    # Kept as the objects are read (``schema.read_objects``), so that copying a snapshot's unchanged part
    # costs no Python loop over all of its objects:
    keys_of: dict[int, tuple[str, ...]] = field(default_factory=dict)  # relation oid -> keys of its objects
    selves: dict[tuple[str, int], int] = field(default_factory=dict)  # (catalog, object oid) -> relation oid
    selves_of: dict[int, tuple[tuple[str, int], ...]] = field(default_factory=dict)  # relation oid -> its selves
    others: tuple[str, ...] = ()  # keys of the kinds not hung on a relation (always read again)
    tables: frozenset[str] = frozenset()  # the tables' qualified names
    composites: bool | None = None  # a table has a column of a composite type (None: not looked at)
    special: frozenset[int] | None = None  # tables whose writes the WAL may not name (None: not looked at)


# What can vanish without its owner's rows changing, each drawn from one catalog's rows: name -> (catalog, the
# (classid, objid) a row names, which rows count). Comments, sequence ownership and inheritance, and the
# objects themselves (``gone``), of each catalog a relation kind's objects live in.
_LISTS = {
    "comments": ("pg_description", "x.classoid, x.objoid", "x.objoid >= 16384"),
    "owned": ("pg_depend", "'pg_class'::regclass::oid, x.objid",
              "x.classid = 'pg_class'::regclass AND x.refclassid = 'pg_class'::regclass AND x.deptype IN ('a', 'i') "
              "AND EXISTS (SELECT 1 FROM pg_class s WHERE s.oid = x.objid AND s.relkind = 'S')"),
    "inherits": ("pg_inherits", "'pg_class'::regclass::oid, x.inhrelid", "true"),
    **{"rows of " + c: (c, f"'{c}'::regclass::oid, x.oid", "x.oid >= 16384") for c in _SELVES},
}
_BLOCK = "(x.ctid::text::point)[0]::int"
_WHOLE_LISTS = " UNION ALL ".join(f"SELECT {i}, {_BLOCK}, {items} FROM {c} x WHERE {cond}"
                                  for i, (c, items, cond) in enumerate(_LISTS.values()))
# Given the blocks of each list's catalog written since the snapshot before (``walwatch``), only those are read
# again: every insert, update or delete of a catalog row writes a WAL record naming its block.
_LISTS_IN_BLOCKS = " UNION ALL ".join(
    f"SELECT {i}, b, y.* FROM unnest(${i + 1}::int[]) b CROSS JOIN LATERAL "
    f"(SELECT {items} FROM {c} x WHERE {_IN_BLOCK} AND {cond} OFFSET 0) y" for i, (c, items, cond) in enumerate(_LISTS.values()))


def marks(cur: Any) -> Marks:
    """The marks of the snapshot being taken in ``cur``'s transaction, without its lists (``read_lists``) and
    objects (``schema.read_objects``)."""
    prepared.execute(cur, "SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::numeric % 4294967296)::bigint, "
                     f"current_schemas(false)::text[], (SELECT count(*) FROM pg_depend x WHERE {_MEMBERS}), "
                     "pg_current_wal_insert_lsn()::text, d.oid, (SELECT json_object_agg(relname, ARRAY[CASE WHEN "
                     "relisshared THEN 0 ELSE d.oid END, pg_relation_filenode(oid)]) FROM pg_class WHERE relnamespace = "
                     f"'pg_catalog'::regnamespace AND relname IN ({', '.join(repr(c) for c in _SCANNED)})) "
                     "FROM pg_database d WHERE d.datname = current_database()")
    horizon, schemas, members, lsn, database, files = cur.fetchone()
    return Marks(int(horizon), tuple(schemas), int(members), lsn, int(database),
                 files={name: (int(db), int(node)) for name, (db, node) in (files or {}).items()})


def by_block(before: Marks, now: Marks, written: dict[tuple[int, int], set[int]] | None) -> bool:
    """Whether the WAL's ``written`` blocks tell what changed in every catalog since ``before``: a catalog whose file
    changed (VACUUM FULL) has all its blocks in the WAL, but is simpler read whole."""
    return written is not None and len(now.files) == len(_SCANNED) and now.files == before.files


def read_lists(cur: Any, now: Marks, before: Marks | None = None,
               written: dict[tuple[int, int], set[int]] | None = None) -> None:
    """Fill ``now.lists``: whole, or, when ``by_block``, ``before``'s with the written blocks read again."""
    names = list(_LISTS)
    if before is None or not by_block(before, now, written):
        prepared.execute(cur, _WHOLE_LISTS)
        now.lists, now.looked = {name: {} for name in names}, None
        looked: dict[str, frozenset[int]] = {}
    else:
        assert written is not None
        looked = {name: frozenset(written.get(now.files[c], ())) for name, (c, _, _) in _LISTS.items()}
        prepared.execute(cur, _LISTS_IN_BLOCKS, [_blocks(written, now.files[c]) for c, _, _ in _LISTS.values()])
        now.lists = {name: {b: items for b, items in before.lists[name].items() if b not in looked[name]} for name in names}
        now.looked = looked
    found: dict[tuple[int, int], set[tuple[int, int]]] = {}
    for number, block, classid, objid in cur.fetchall():
        found.setdefault((number, block), set()).add((int(classid), int(objid)))
    for (number, block), items in found.items():
        now.lists[names[number]][block] = frozenset(items)


def vanished(before: Marks, now: Marks, name: str) -> set[tuple[int, int]]:
    """What list ``name`` held at ``before`` and holds no more at ``now``."""
    looked = None if now.looked is None else now.looked[name]
    old = before.lists[name].values() if looked is None else [before.lists[name].get(b, frozenset()) for b in looked]
    new = now.lists[name].values() if looked is None else [now.lists[name].get(b, frozenset()) for b in looked]
    return set().union(*old) - set().union(*new)


def gone(before: Marks, now: Marks) -> set[tuple[str, int]]:
    """The (catalog, oid) of the objects of ``before.selves`` that no longer exist at ``now``."""
    lost: set[tuple[str, int]] = set()
    for catalog in _SELVES:
        lost.update((catalog, oid) for _, oid in vanished(before, now, "rows of " + catalog))
    return lost & before.selves.keys()


def dirty(cur: Any, before: Marks, now: Marks, written: dict[tuple[int, int], set[int]] | None = None) -> set[int] | None:
    """The oids of the relations whose definitions can differ from ``before``'s; None when that cannot be told.
    ``written``: the blocks of each file ((database or 0, file number)) the WAL says were written since
    ``before``, when known."""
    if now.schemas != before.schemas or len(now.schemas) > 1:
        return None
    horizon = str(before.horizon)
    block_mode = by_block(before, now, written)
    param = {c: 2 + i for i, c in enumerate(_UNFOLLOWED)} if block_mode else {}
    blocks = [_blocks(written, now.files[c]) for c in _UNFOLLOWED] if written is not None and block_mode else []
    prepared.execute(cur, f"SELECT (SELECT count(*) FROM pg_depend x WHERE {_MEMBERS} AND NOT {_NEW}), "
                     + ", ".join(f"EXISTS ({_new_rows(c, '1', param.get(c))})" for c in _UNFOLLOWED), [horizon, *blocks])
    old_members, *unfollowed = cur.fetchone()
    if old_members < before.members or any(unfollowed):
        return None
    lost = set().union(*(vanished(before, now, name) for name in _LISTS if not name.startswith("rows of ")))
    param = {c: 4 + i for i, c in enumerate(_FOLLOWED)} if block_mode else {}
    blocks = [_blocks(written, now.files[c]) for c in _FOLLOWED] if written is not None and block_mode else []
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
                     [horizon, "{" + ",".join(str(a) for a, _ in sorted(lost)) + "}",
                      "{" + ",".join(str(b) for _, b in sorted(lost)) + "}", *blocks])
    return {int(oid) for (oid,) in cur.fetchall() if oid}


def _blocks(written: dict[tuple[int, int], set[int]], file: tuple[int, int]) -> str:
    return "{" + ",".join(str(b) for b in sorted(written.get(file, ()))) + "}"
