"""SQL fragments every catalog query shares: which schemas are the user's, extension members, privileges,
comments, option lists."""
from __future__ import annotations

SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"
USER_NS = (f"n.nspname NOT IN {SYSTEM_SCHEMAS} AND n.nspname NOT LIKE 'pg\\_temp\\_%' "
           "AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'")
# Objects made by initdb have oids below FirstNormalObjectId; kinds without a schema are the user's above it.
# Every object in a user's schema is above it too: kinds of catalogs full of built-in rows (pg_proc's 3,300,
# pg_operator's, pg_collation's) say so as well, and the scan starts at the first user object (the OTHERS
# statement of an incremental snapshot went from 2.4 to 1.8 ms at 500 migrations).
USER_OID = "{oid} >= 16384"


def not_ext(catalog: str, oid: str) -> str:
    """The object is not a member of an extension (members are folded into the extension's entry)."""
    return (f"NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass AND d.objid = {oid} "
            "AND d.deptype = 'e')")


def acl(column: str) -> str:
    """Sorted privileges: aclitem[] order depends on grant history, not meaning; and a NULL acl means the
    defaults, which is what a GRANT then REVOKE leaves spelled out (hence the callers' coalesce)."""
    return f"(SELECT string_agg(a::text, ' ' ORDER BY a::text) FROM unnest({column}) a)"


def comment(oid: str, catalog: str, subid: str = "0") -> str:
    # What obj_description()/col_description() return, as a subquery: those are SQL functions the planner
    # does not inline, and calling one per row was a third of a snapshot's time.
    return (f"(SELECT ds.description FROM pg_description ds WHERE ds.objoid = {oid} "
            f"AND ds.classoid = '{catalog}'::regclass AND ds.objsubid = {subid})")


def options(column: str) -> str:
    """A text[] of name=value options, sorted (their order is the order they were set in)."""
    return f"(SELECT string_agg(o, ', ' ORDER BY o) FROM unnest({column}) o)"


def hidden_options(column: str) -> str:
    """Options that may hold a password: their names in clear, their values only as a digest."""
    return (f"(SELECT string_agg(split_part(o, '=', 1), ', ' ORDER BY o) || ' (values md5 ' "
            f"|| md5(string_agg(o, ',' ORDER BY o)) || ')' FROM unnest({column}) o)")


def owner_acl_comment(owner: str, acl_column: str | None, oid: str, catalog: str) -> str:
    parts = [f"'owner ' || pg_get_userbyid({owner})"]
    if acl_column is not None:
        parts.append(f"'acl ' || {acl(acl_column)}")
    parts.append(f"'comment ' || {comment(oid, catalog)}")
    return ", ".join(parts)
