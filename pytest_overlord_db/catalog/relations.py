"""Relations and what hangs on them: tables, views, sequences, columns, constraints, indexes, triggers,
rules, policies, statistics objects. ``{_BOOKKEEPING}`` stands for the migration tool's tables.

Each row also names the relation the object belongs to and the object's own oid (in the catalog ``SELF``
names), and ``{_ONLY}`` is where a query is narrowed to some relations: an incremental snapshot re-reads
only the relations that can have changed (``changed``)."""
from __future__ import annotations

from .sql import USER_NS, acl, comment, not_ext, options

_REL_ACL = acl("coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner))")
_NOT_EXT_REL = not_ext("pg_class", "c.oid")

# kind -> (the column naming the relation an object belongs to, the catalog of the object's own oid)
SELF = {"relation": ("c.oid", "pg_class"), "column": ("a.attrelid", None), "constraint": ("con.conrelid", "pg_constraint"),
        "index": ("i.indrelid", "pg_class"), "trigger": ("tg.tgrelid", "pg_trigger"), "rule": ("r.ev_class", "pg_rewrite"),
        "policy": ("pol.polrelid", "pg_policy"), "statistics": ("s.stxrelid", "pg_statistic_ext")}


def only(kind: str, relations: str) -> str:
    """The condition narrowing ``kind``'s query to the relations in the oid[] expression ``relations``; a
    domain's constraints belong to no relation and are always read."""
    column = SELF[kind][0]
    return f"AND ({column} = ANY({relations}){' OR con.conrelid = 0' if kind == 'constraint' else ''})"


def queries(version: int) -> dict[str, str]:
    compression = "CASE WHEN a.attcompression <> '' THEN 'compression ' || a.attcompression::text END," if version >= 140000 else ""
    return {
        "relation": f"""
        SELECT CASE c.relkind WHEN 'r' THEN 'table ' WHEN 'p' THEN 'table ' WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view '
                    WHEN 'S' THEN 'sequence ' WHEN 'f' THEN 'foreign table ' WHEN 'c' THEN 'type ' END
               || quote_ident(n.nspname) || '.' || quote_ident(c.relname),
               concat_ws(E'\\n',
                 'owner ' || pg_get_userbyid(c.relowner),
                 'acl ' || {_REL_ACL},
                 CASE WHEN c.relkind IN ('r','p','S') THEN 'persistence ' || c.relpersistence::text END,
                 CASE WHEN c.relrowsecurity THEN 'row level security enabled' END,
                 CASE WHEN c.relforcerowsecurity THEN 'row level security forced' END,
                 CASE WHEN c.relkind IN ('r','p','m') AND c.relreplident <> 'd' THEN 'replica identity ' || c.relreplident::text END,
                 CASE WHEN c.relkind IN ('r','p','m') AND c.relam <> 0 THEN 'access method ' || (SELECT am.amname FROM pg_am am WHERE am.oid = c.relam) END,
                 CASE WHEN c.reltablespace <> 0 THEN 'tablespace ' || (SELECT sp.spcname FROM pg_tablespace sp WHERE sp.oid = c.reltablespace) END,
                 'options ' || {options('c.reloptions')},
                 (SELECT 'toast options ' || {options('tc.reloptions')} FROM pg_class tc WHERE tc.oid = c.reltoastrelid),
                 CASE WHEN c.reloftype <> 0 THEN 'of type ' || format_type(c.reloftype, NULL) END,
                 CASE WHEN NOT c.relispartition THEN (SELECT 'inherits ' || string_agg(i.inhparent::regclass::text, ', ' ORDER BY i.inhseqno)
                                                      FROM pg_inherits i WHERE i.inhrelid = c.oid) END,
                 CASE WHEN c.relkind IN ('v','m') THEN 'definition ' || pg_get_viewdef(c.oid) END,
                 CASE WHEN c.relkind = 'p' THEN 'partition key ' || pg_get_partkeydef(c.oid) END,
                 CASE WHEN c.relispartition THEN 'partition of ' || (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid) || ' ' || pg_get_expr(c.relpartbound, c.oid) END,
                 CASE WHEN c.relkind = 'f' THEN (
                    SELECT 'server ' || quote_ident(s.srvname) || coalesce(' options ' || {options('ft.ftoptions')}, '')
                    FROM pg_foreign_table ft JOIN pg_foreign_server s ON s.oid = ft.ftserver WHERE ft.ftrelid = c.oid) END,
                 CASE WHEN c.relkind = 'S' THEN (
                    SELECT format('sequence %s start %s increment %s min %s max %s cache %s%s', format_type(s.seqtypid, NULL),
                                  s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END)
                    FROM pg_sequence s WHERE s.seqrelid = c.oid) END,
                 CASE WHEN c.relkind = 'S' THEN (
                    SELECT 'owned by ' || dep.refobjid::regclass::text || '.' || quote_ident(a.attname)
                    FROM pg_depend dep JOIN pg_attribute a ON a.attrelid = dep.refobjid AND a.attnum = dep.refobjsubid
                    WHERE dep.classid = 'pg_class'::regclass AND dep.objid = c.oid AND dep.deptype IN ('a', 'i')
                      AND dep.refclassid = 'pg_class'::regclass LIMIT 1) END,
                 'comment ' || {comment('c.oid', 'pg_class')}),
               c.oid, c.oid
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r','p','v','m','S','f','c') AND {USER_NS}
          AND c.relname NOT IN {{_BOOKKEEPING}}
          AND NOT (c.relkind = 'c' AND EXISTS (SELECT 1 FROM pg_type t WHERE t.typrelid = c.oid AND {not_ext('pg_type', 't.oid').replace('NOT EXISTS', 'EXISTS')}))
          AND {_NOT_EXT_REL}
          {{_ONLY}}""",
        "column": f"""
        SELECT 'column ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || '.' || quote_ident(a.attname),
               concat_ws(E'\\n',
                 'type ' || format_type(a.atttypid, a.atttypmod),
                 CASE WHEN a.attnotnull THEN 'not null' END,
                 CASE WHEN a.attgenerated = '' THEN 'default ' || pg_get_expr(ad.adbin, ad.adrelid) END,
                 CASE WHEN a.attgenerated <> '' THEN 'generated always as ' || pg_get_expr(ad.adbin, ad.adrelid) END,
                 CASE a.attidentity WHEN 'a' THEN 'identity always' WHEN 'd' THEN 'identity by default' END,
                 CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN 'collate ' || co.collname END,
                 CASE WHEN a.attstorage <> t.typstorage THEN 'storage ' || a.attstorage::text END,
                 {compression}
                 CASE WHEN a.attstattarget >= 0 THEN 'statistics ' || a.attstattarget END,
                 'options ' || {options('a.attoptions')},
                 'fdw options ' || {options('a.attfdwoptions')},
                 CASE WHEN NOT a.attislocal THEN 'inherited' END,
                 'position ' || row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
                 'acl ' || {acl('a.attacl')},
                 'comment ' || {comment('c.oid', 'pg_class', 'a.attnum')}),
               a.attrelid, NULL::oid
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r','p','v','m','f','c') AND {USER_NS}
          AND c.relname NOT IN {{_BOOKKEEPING}}
          AND {_NOT_EXT_REL}
          AND NOT (c.relkind = 'c' AND EXISTS (SELECT 1 FROM pg_type t2 JOIN pg_depend d ON d.objid = t2.oid AND d.classid = 'pg_type'::regclass AND d.deptype = 'e' WHERE t2.typrelid = c.oid))
          {{_ONLY}}""",
        "constraint": f"""
        SELECT 'constraint ' || quote_ident(n.nspname) || '.' || COALESCE(quote_ident(c.relname), format_type(con.contypid, NULL)) || '.' || quote_ident(con.conname),
               concat_ws(E'\\n', pg_get_constraintdef(con.oid, true),
                         CASE WHEN con.condeferrable THEN 'deferrable' END, CASE WHEN con.condeferred THEN 'initially deferred' END,
                         CASE WHEN NOT con.convalidated THEN 'not valid' END,
                         CASE WHEN NOT con.conislocal THEN 'inherited' END,
                         'comment ' || {comment('con.oid', 'pg_constraint')}),
               con.conrelid, con.oid
        FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
        LEFT JOIN pg_class c ON c.oid = con.conrelid
        WHERE {USER_NS} AND (c.relname IS NULL OR (c.relname NOT IN {{_BOOKKEEPING}}))
          AND (con.contypid = 0 OR {not_ext('pg_type', 'con.contypid')})
          AND (con.conrelid = 0 OR {not_ext('pg_class', 'con.conrelid')})
          {{_ONLY}}""",
        "index": f"""
        SELECT 'index ' || quote_ident(n.nspname) || '.' || quote_ident(ic.relname),
               concat_ws(E'\\n', pg_get_indexdef(i.indexrelid), CASE WHEN i.indisclustered THEN 'clustered' END,
                         CASE WHEN NOT i.indisvalid THEN 'invalid' END, CASE WHEN i.indisreplident THEN 'replica identity' END,
                         (SELECT 'statistics ' || string_agg(ia.attnum || ' ' || ia.attstattarget, ', ' ORDER BY ia.attnum)
                          FROM pg_attribute ia WHERE ia.attrelid = i.indexrelid AND ia.attstattarget >= 0),
                         CASE WHEN ic.reltablespace <> 0 THEN 'tablespace ' || (SELECT sp.spcname FROM pg_tablespace sp WHERE sp.oid = ic.reltablespace) END,
                         'comment ' || {comment('ic.oid', 'pg_class')}),
               i.indrelid, i.indexrelid
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE {USER_NS} AND c.relname NOT IN {{_BOOKKEEPING}}
          AND {_NOT_EXT_REL}
          {{_ONLY}}""",
        "trigger": f"""
        SELECT 'trigger ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || '.' || quote_ident(tg.tgname),
               concat_ws(E'\\n', pg_get_triggerdef(tg.oid, true), 'enabled ' || tg.tgenabled::text,
                         'comment ' || {comment('tg.oid', 'pg_trigger')}),
               tg.tgrelid, tg.oid
        FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT tg.tgisinternal AND {USER_NS} AND {_NOT_EXT_REL}
          {{_ONLY}}""",
        "rule": f"""
        SELECT 'rule ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || '.' || quote_ident(r.rulename),
               concat_ws(E'\\n', pg_get_ruledef(r.oid, true), 'enabled ' || r.ev_enabled::text,
                         'comment ' || {comment('r.oid', 'pg_rewrite')}),
               r.ev_class, r.oid
        FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE r.rulename <> '_RETURN' AND {USER_NS} AND {_NOT_EXT_REL}
          {{_ONLY}}""",
        "policy": f"""
        SELECT 'policy ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || '.' || quote_ident(pol.polname),
               concat_ws(E'\\n',
                 CASE WHEN pol.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END || ' for '
                   || CASE pol.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END || ' to '
                   || (SELECT string_agg(CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r) END, ',' ORDER BY 1) FROM unnest(pol.polroles) r),
                 'using ' || pg_get_expr(pol.polqual, pol.polrelid), 'with check ' || pg_get_expr(pol.polwithcheck, pol.polrelid),
                 'comment ' || {comment('pol.oid', 'pg_policy')}),
               pol.polrelid, pol.oid
        FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_NS}
          {{_ONLY}}""",
        "statistics": f"""
        SELECT 'statistics ' || quote_ident(n.nspname) || '.' || quote_ident(s.stxname),
               concat_ws(E'\\n', pg_get_statisticsobjdef(s.oid), 'target ' || nullif(s.stxstattarget, -1),
                         'owner ' || pg_get_userbyid(s.stxowner), 'comment ' || {comment('s.oid', 'pg_statistic_ext')}),
               s.stxrelid, s.oid
        FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
        WHERE {USER_NS} AND {not_ext('pg_statistic_ext', 's.oid')}
          {{_ONLY}}""",
    }
