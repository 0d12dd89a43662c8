"""The database itself and what lives beside the schemas: its settings, ACL and comment; schemas,
extensions, default privileges, publications, subscriptions, foreign data wrappers, servers, user mappings."""
from __future__ import annotations

from .sql import USER_NS, USER_OID, acl, comment, hidden_options, not_ext, options, owner_acl_comment

_THIS_DB = "(SELECT d.oid FROM pg_database d WHERE d.datname = current_database())"


def queries(version: int) -> dict[str, str]:
    pub_schemas = ("(SELECT 'schemas ' || string_agg(quote_ident(pn.nspname), ', ' ORDER BY pn.nspname) FROM pg_publication_namespace pns "
                   "JOIN pg_namespace pn ON pn.oid = pns.pnnspid WHERE pns.pnpubid = pub.oid)," if version >= 150000 else "")
    pub_columns = ("|| coalesce(' (' || (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a "
                   "WHERE a.attrelid = pr.prrelid AND a.attnum = ANY(pr.prattrs)) || ')', '') "
                   "|| coalesce(' where ' || pg_get_expr(pr.prqual, pr.prrelid), '')" if version >= 150000 else "")
    # Only the columns everyone may read (not the connection string, which may hold a password), as this
    # version has them.
    sub_columns = ["subenabled", "subslotname", "subsynccommit", "subpublications"]
    for since, more in ((140000, ["subbinary", "substream"]), (150000, ["subtwophasestate", "subdisableonerr"]),
                        (160000, ["subpasswordrequired", "subrunasowner", "suborigin"]), (170000, ["subfailover"])):
        if version >= since:
            sub_columns += more
    sub_fields = ", ".join(f"'{column[3:]}', sub.{column}" for column in sub_columns)
    return {
        "database": f"""
        SELECT 'database',
               concat_ws(E'\\n', 'owner ' || pg_get_userbyid(d.datdba),
                 'acl ' || {acl("coalesce(d.datacl, acldefault('d', d.datdba))")},
                 'connection limit ' || nullif(d.datconnlimit, -1),
                 CASE WHEN d.datistemplate THEN 'template' END, CASE WHEN NOT d.datallowconn THEN 'no connections' END,
                 (SELECT string_agg('settings for ' || CASE WHEN s.setrole = 0 THEN 'everyone' ELSE pg_get_userbyid(s.setrole) END
                                    || ': ' || {options('s.setconfig')}, E'\\n' ORDER BY s.setrole)
                  FROM pg_db_role_setting s WHERE s.setdatabase = d.oid),
                 'comment ' || (SELECT ds.description FROM pg_shdescription ds WHERE ds.objoid = d.oid AND ds.classoid = 'pg_database'::regclass))
        FROM pg_database d WHERE d.datname = current_database()""",
        "schema": f"""
        SELECT 'schema ' || quote_ident(n.nspname),
               concat_ws(E'\\n', {owner_acl_comment('n.nspowner', "coalesce(n.nspacl, acldefault('n', n.nspowner))", 'n.oid', 'pg_namespace')})
        FROM pg_namespace n WHERE {USER_NS} AND {not_ext('pg_namespace', 'n.oid')}""",
        "extension": f"""
        SELECT 'extension ' || e.extname,
               concat_ws(E'\\n', 'version ' || e.extversion, 'schema ' || n.nspname, 'comment ' || {comment('e.oid', 'pg_extension')})
        FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql'""",
        "default privileges": f"""
        SELECT 'default privileges of ' || pg_get_userbyid(da.defaclrole)
               || coalesce(' in schema ' || (SELECT quote_ident(dn.nspname) FROM pg_namespace dn WHERE dn.oid = da.defaclnamespace), '')
               || ' on ' || CASE da.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions'
                                                  WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' ELSE da.defaclobjtype::text END,
               'acl ' || {acl('da.defaclacl')}
        FROM pg_default_acl da""",
        "publication": f"""
        SELECT 'publication ' || quote_ident(pub.pubname),
               concat_ws(E'\\n', (to_jsonb(pub) - 'oid' - 'pubname' - 'pubowner')::text,
                 {pub_schemas}
                 (SELECT 'tables ' || string_agg(pr.prrelid::regclass::text {pub_columns}, ', ' ORDER BY pr.prrelid::regclass::text)
                  FROM pg_publication_rel pr WHERE pr.prpubid = pub.oid),
                 'owner ' || pg_get_userbyid(pub.pubowner), 'comment ' || {comment('pub.oid', 'pg_publication')})
        FROM pg_publication pub""",
        "subscription": f"""
        SELECT 'subscription ' || quote_ident(sub.subname),
               concat_ws(E'\\n', concat_ws(' ', {sub_fields}),
                 'owner ' || pg_get_userbyid(sub.subowner),
                 'comment ' || (SELECT ds.description FROM pg_shdescription ds WHERE ds.objoid = sub.oid AND ds.classoid = 'pg_subscription'::regclass))
        FROM pg_subscription sub WHERE sub.subdbid = {_THIS_DB}""",
        "foreign data wrapper": f"""
        SELECT 'foreign data wrapper ' || quote_ident(w.fdwname),
               concat_ws(E'\\n', concat_ws(' ', 'handler', nullif(w.fdwhandler, 0)::regproc, 'validator', nullif(w.fdwvalidator, 0)::regproc),
                 'options ' || {options('w.fdwoptions')},
                 {owner_acl_comment('w.fdwowner', "coalesce(w.fdwacl, acldefault('F', w.fdwowner))", 'w.oid', 'pg_foreign_data_wrapper')})
        FROM pg_foreign_data_wrapper w WHERE {USER_OID.format(oid='w.oid')} AND {not_ext('pg_foreign_data_wrapper', 'w.oid')}""",
        "server": f"""
        SELECT 'server ' || quote_ident(s.srvname),
               concat_ws(E'\\n', concat_ws(' ', 'wrapper', (SELECT w.fdwname FROM pg_foreign_data_wrapper w WHERE w.oid = s.srvfdw),
                                           'type', s.srvtype, 'version', s.srvversion),
                 'options ' || {hidden_options('s.srvoptions')},
                 {owner_acl_comment('s.srvowner', "coalesce(s.srvacl, acldefault('S', s.srvowner))", 's.oid', 'pg_foreign_server')})
        FROM pg_foreign_server s WHERE {not_ext('pg_foreign_server', 's.oid')}""",
        "user mapping": f"""
        SELECT 'user mapping for ' || um.usename || ' server ' || quote_ident(um.srvname),
               'options ' || {hidden_options('um.umoptions')}
        FROM pg_user_mappings um""",
    }
