"""Types and what works on them: enums, domains, ranges, base types, collations, conversions, casts,
operators with their classes and families, access methods, text search objects."""
from __future__ import annotations

from .sql import USER_NS, USER_OID, comment, not_ext, owner_acl_comment


def _named(kind: str, catalog: str, alias: str, name: str, namespace: str, details: str, extra_where: str = "") -> str:
    """The query for objects of one catalog that live in a schema."""
    return f"""
        SELECT '{kind} ' || quote_ident(n.nspname) || '.' || {name},
               concat_ws(E'\\n', {details})
        FROM {catalog} {alias} JOIN pg_namespace n ON n.oid = {alias}.{namespace}
        WHERE {alias}.oid >= 16384 AND {USER_NS} AND {not_ext(catalog, alias + '.oid')} {extra_where}"""


def queries(version: int) -> dict[str, str]:
    multirange = ("'multirange ' || (SELECT format_type(r.rngmultitypid, NULL) FROM pg_range r WHERE r.rngtypid = t.oid)"
                  if version >= 140000 else "NULL")
    subscript = "'subscript', t.typsubscript" if version >= 140000 else "NULL"
    locale = ("coalesce(co.colllocale, '')" if version >= 170000
              else "coalesce(co.colliculocale, '')" if version >= 150000 else "''")
    return {
        "type": f"""
        SELECT CASE t.typtype WHEN 'e' THEN 'enum ' WHEN 'd' THEN 'domain ' WHEN 'r' THEN 'range ' WHEN 'b' THEN 'base type ' END
               || quote_ident(n.nspname) || '.' || quote_ident(t.typname),
               concat_ws(E'\\n',
                 CASE WHEN t.typtype = 'e' THEN 'labels ' || (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid) END,
                 CASE WHEN t.typtype = 'd' THEN 'over ' || format_type(t.typbasetype, t.typtypmod) END,
                 CASE WHEN t.typtype = 'd' AND t.typnotnull THEN 'not null' END,
                 CASE WHEN t.typtype = 'd' AND t.typcollation <> (SELECT bt.typcollation FROM pg_type bt WHERE bt.oid = t.typbasetype)
                      THEN 'collate ' || (SELECT quote_ident(c.collname) FROM pg_collation c WHERE c.oid = t.typcollation) END,
                 CASE WHEN t.typtype = 'd' THEN 'default ' || t.typdefault END,
                 CASE WHEN t.typtype = 'r' THEN (
                    SELECT concat_ws(' ', 'subtype', format_type(r.rngsubtype, NULL), 'opclass', opc.opcname,
                                     'collation', (SELECT c.collname FROM pg_collation c WHERE c.oid = r.rngcollation),
                                     'canonical', nullif(r.rngcanonical::oid, 0)::regprocedure, 'diff', nullif(r.rngsubdiff::oid, 0)::regprocedure)
                    FROM pg_range r JOIN pg_opclass opc ON opc.oid = r.rngsubopc WHERE r.rngtypid = t.oid) END,
                 CASE WHEN t.typtype = 'r' THEN {multirange} END,
                 CASE WHEN t.typtype = 'b' THEN concat_ws(' ', 'input', t.typinput, 'output', t.typoutput, 'receive', t.typreceive,
                      'send', t.typsend, 'modin', t.typmodin, 'modout', t.typmodout, 'analyze', t.typanalyze, {subscript},
                      'length', t.typlen, 'byval', t.typbyval, 'align', t.typalign, 'storage', t.typstorage, 'category', t.typcategory,
                      'preferred', t.typispreferred, 'delimiter', t.typdelim, 'element', nullif(t.typelem, 0)::regtype,
                      'collatable', t.typcollation <> 0, 'default', t.typdefault) END,
                 {owner_acl_comment('t.typowner', "coalesce(t.typacl, acldefault('T', t.typowner))", 't.oid', 'pg_type')})
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.oid >= 16384 AND t.typtype IN ('e', 'd', 'r', 'b') AND {USER_NS}
          AND {not_ext('pg_type', 't.oid')}
          AND NOT EXISTS (SELECT 1 FROM pg_type arr WHERE arr.typarray = t.oid)""",
        "collation": _named("collation", "pg_collation", "co", "quote_ident(co.collname)", "collnamespace", f"""
                 concat_ws(' ', 'provider', co.collprovider, 'deterministic', co.collisdeterministic, 'collate', co.collcollate,
                           'ctype', co.collctype, 'locale', {locale}, 'encoding', co.collencoding),
                 'owner ' || pg_get_userbyid(co.collowner), 'comment ' || {comment('co.oid', 'pg_collation')}"""),
        "conversion": _named("conversion", "pg_conversion", "cv", "quote_ident(cv.conname)", "connamespace", f"""
                 concat_ws(' ', 'from', pg_encoding_to_char(cv.conforencoding), 'to', pg_encoding_to_char(cv.contoencoding),
                           'function', cv.conproc::regprocedure, 'default', cv.condefault),
                 'owner ' || pg_get_userbyid(cv.conowner), 'comment ' || {comment('cv.oid', 'pg_conversion')}"""),
        "cast": f"""
        SELECT 'cast (' || format_type(ca.castsource, NULL) || ' AS ' || format_type(ca.casttarget, NULL) || ')',
               concat_ws(E'\\n', concat_ws(' ', 'method', ca.castmethod, 'context', ca.castcontext,
                                           'function', nullif(ca.castfunc, 0)::regprocedure),
                         'comment ' || {comment('ca.oid', 'pg_cast')})
        FROM pg_cast ca WHERE {USER_OID.format(oid='ca.oid')} AND {not_ext('pg_cast', 'ca.oid')}""",
        "operator": _named("operator", "pg_operator", "o", "o.oid::regoperator::text", "oprnamespace", f"""
                 concat_ws(' ', 'function', o.oprcode, 'result', format_type(o.oprresult, NULL), 'commutator', nullif(o.oprcom, 0)::regoperator,
                           'negator', nullif(o.oprnegate, 0)::regoperator, 'restrict', nullif(o.oprrest::oid, 0)::regproc,
                           'join', nullif(o.oprjoin::oid, 0)::regproc, 'merges', o.oprcanmerge, 'hashes', o.oprcanhash),
                 'owner ' || pg_get_userbyid(o.oprowner), 'comment ' || {comment('o.oid', 'pg_operator')}"""),
        "operator family": _named("operator family", "pg_opfamily", "f",
                                  "quote_ident(f.opfname) || ' using ' || (SELECT am.amname FROM pg_am am WHERE am.oid = f.opfmethod)",
                                  "opfnamespace", f"""
                 (SELECT 'operators ' || string_agg(concat_ws(' ', ao.amopstrategy, ao.amopopr::regoperator, ao.amoppurpose,
                                                              nullif(ao.amopsortfamily, 0)::regclass), ', ' ORDER BY ao.amopstrategy, ao.amopopr::regoperator::text)
                  FROM pg_amop ao WHERE ao.amopfamily = f.oid),
                 (SELECT 'functions ' || string_agg(concat_ws(' ', ap.amprocnum, format_type(ap.amproclefttype, NULL), format_type(ap.amprocrighttype, NULL),
                                                              ap.amproc::regprocedure), ', ' ORDER BY ap.amprocnum, ap.amproc::regprocedure::text)
                  FROM pg_amproc ap WHERE ap.amprocfamily = f.oid),
                 'owner ' || pg_get_userbyid(f.opfowner), 'comment ' || {comment('f.oid', 'pg_opfamily')}"""),
        "operator class": _named("operator class", "pg_opclass", "oc",
                                 "quote_ident(oc.opcname) || ' using ' || (SELECT am.amname FROM pg_am am WHERE am.oid = oc.opcmethod)",
                                 "opcnamespace", f"""
                 concat_ws(' ', 'for', format_type(oc.opcintype, NULL), 'default', oc.opcdefault,
                           'family', (SELECT quote_ident(f.opfname) FROM pg_opfamily f WHERE f.oid = oc.opcfamily),
                           'storage', nullif(oc.opckeytype, 0)::regtype),
                 'owner ' || pg_get_userbyid(oc.opcowner), 'comment ' || {comment('oc.oid', 'pg_opclass')}"""),
        "access method": f"""
        SELECT 'access method ' || quote_ident(am.amname),
               concat_ws(E'\\n', 'type ' || am.amtype::text || ' handler ' || am.amhandler::text, 'comment ' || {comment('am.oid', 'pg_am')})
        FROM pg_am am WHERE {USER_OID.format(oid='am.oid')} AND {not_ext('pg_am', 'am.oid')}""",
        "text search configuration": _named("text search configuration", "pg_ts_config", "cfg", "quote_ident(cfg.cfgname)", "cfgnamespace", f"""
                 'parser ' || (SELECT p.prsname FROM pg_ts_parser p WHERE p.oid = cfg.cfgparser),
                 (SELECT 'mapping ' || string_agg(m.maptokentype || ' ' || m.mapseqno || ' ' || m.mapdict::regdictionary::text, ', '
                                                  ORDER BY m.maptokentype, m.mapseqno) FROM pg_ts_config_map m WHERE m.mapcfg = cfg.oid),
                 'owner ' || pg_get_userbyid(cfg.cfgowner), 'comment ' || {comment('cfg.oid', 'pg_ts_config')}"""),
        "text search dictionary": _named("text search dictionary", "pg_ts_dict", "dct", "quote_ident(dct.dictname)", "dictnamespace", f"""
                 'template ' || (SELECT tm.tmplname FROM pg_ts_template tm WHERE tm.oid = dct.dicttemplate),
                 'options ' || dct.dictinitoption,
                 'owner ' || pg_get_userbyid(dct.dictowner), 'comment ' || {comment('dct.oid', 'pg_ts_dict')}"""),
        "text search parser": _named("text search parser", "pg_ts_parser", "prs", "quote_ident(prs.prsname)", "prsnamespace", f"""
                 concat_ws(' ', 'start', prs.prsstart, 'token', prs.prstoken, 'end', prs.prsend, 'headline', nullif(prs.prsheadline::oid, 0)::regproc,
                           'lextypes', prs.prslextype),
                 'comment ' || {comment('prs.oid', 'pg_ts_parser')}"""),
        "text search template": _named("text search template", "pg_ts_template", "tmp", "quote_ident(tmp.tmplname)", "tmplnamespace", f"""
                 concat_ws(' ', 'init', nullif(tmp.tmplinit::oid, 0)::regproc, 'lexize', tmp.tmpllexize),
                 'comment ' || {comment('tmp.oid', 'pg_ts_template')}"""),
    }

