"""The catalog queries of a snapshot, one per kind of object, for the server's version.

Each query returns rows ``(key, definition)``: the key is ``"<kind> <qualified name>"``, the definition
what PostgreSQL itself prints for the object (pg_get_*def where there is one) plus its properties, owner,
privileges and comment, one per line. Which properties count is decided by pg_dump: whatever
``pg_dump --schema-only --create`` prints differently must change a definition, and nothing else may
(tests/test_pgdump_oracle.py holds the proof). Objects that belong to an extension are left out (the
extension's entry stands for them); ``bookkeeping`` names the migration tool's tables, also left out.
The queries of relations and what hangs on them (``RELATION_KINDS``) return two more columns, the oid of
the relation the object belongs to and the object's own oid, and can be narrowed to some relations.
"""
from __future__ import annotations

import functools

from . import database, relations, routines, types
from .sql import USER_NS

__all__ = ["OTHERS", "RELATION_KINDS", "USER_NS", "narrowed", "queries"]

RELATION_KINDS = relations.SELF
OTHERS = "objects not hung on a relation"


@functools.lru_cache(maxsize=16)
def _all(bookkeeping: tuple[str, ...], version: int) -> dict[str, str]:
    skip = "(" + ", ".join(["''"] + ["'" + t.replace("'", "''") + "'" for t in bookkeeping]) + ")"
    found: dict[str, str] = {}
    for module in (database, relations, types, routines):
        found.update(module.queries(version))
    return {kind: query.replace("{_BOOKKEEPING}", skip) for kind, query in found.items()}


@functools.lru_cache(maxsize=16)
def queries(bookkeeping: tuple[str, ...] = (), version: int = 180000) -> dict[str, str]:
    """The catalog queries for a server of ``version`` (server_version_num), leaving out ``bookkeeping``."""
    return {kind: query.replace("{_ONLY}", "") for kind, query in _all(bookkeeping, version).items()}


@functools.lru_cache(maxsize=16)
def narrowed(bookkeeping: tuple[str, ...] = (), version: int = 180000) -> dict[str, str]:
    """The queries of ``RELATION_KINDS`` narrowed to the relations of the oid[] parameter $1, and the
    others whole, in one query (without parameters) under the kind ``OTHERS``."""
    found = _all(bookkeeping, version)
    picked = {kind: query.replace("{_ONLY}", relations.only(kind, "$1::oid[]")) for kind, query in found.items()
              if kind in RELATION_KINDS}
    # An incremental snapshot reads these ~25 kinds whole each time, most of them empty: one statement instead
    # of one each saves their round trips (2.5 ms a snapshot, three snapshots a migration).
    picked[OTHERS] = " UNION ALL ".join(f"SELECT k::text, d::text FROM ({query.replace('{_ONLY}', '')}) o{i}(k, d)"
                                        for i, (kind, query) in enumerate(found.items()) if kind not in RELATION_KINDS)
    return picked
