"""Code: functions, procedures, aggregates, languages, transforms, event triggers."""
from __future__ import annotations

from .sql import USER_NS, USER_OID, comment, not_ext, owner_acl_comment


def _proc(column: str) -> str:
    return f"nullif({column}::oid, 0)::regprocedure"


_AGGREGATE = f"""(SELECT concat_ws(' ', 'kind', ag.aggkind, 'direct', ag.aggnumdirectargs, 'sfunc', {_proc('ag.aggtransfn')},
        'stype', format_type(ag.aggtranstype, NULL), 'sspace', nullif(ag.aggtransspace, 0), 'final', {_proc('ag.aggfinalfn')},
        'finalextra', ag.aggfinalextra, 'finalmodify', ag.aggfinalmodify, 'combine', {_proc('ag.aggcombinefn')},
        'serial', {_proc('ag.aggserialfn')}, 'deserial', {_proc('ag.aggdeserialfn')}, 'msfunc', {_proc('ag.aggmtransfn')},
        'minvfunc', {_proc('ag.aggminvtransfn')}, 'mfinal', {_proc('ag.aggmfinalfn')}, 'mfinalextra', ag.aggmfinalextra,
        'mfinalmodify', ag.aggmfinalmodify, 'sortop', nullif(ag.aggsortop, 0)::regoperator,
        'mstype', nullif(ag.aggmtranstype, 0)::regtype, 'msspace', nullif(ag.aggmtransspace, 0),
        'initcond', quote_literal(ag.agginitval), 'minitcond', quote_literal(ag.aggminitval), 'parallel', p.proparallel)
    FROM pg_aggregate ag WHERE ag.aggfnoid = p.oid)"""


def queries(version: int) -> dict[str, str]:
    return {
        "function": f"""
        SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate ' WHEN 'w' THEN 'window function ' ELSE 'function ' END
               || quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               concat_ws(E'\\n', CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_get_functiondef(p.oid)
                                      ELSE 'returns ' || pg_get_function_result(p.oid) END,
                         CASE WHEN p.prokind = 'a' THEN {_AGGREGATE} END,
                         {owner_acl_comment('p.proowner', "coalesce(p.proacl, acldefault('f', p.proowner))", 'p.oid', 'pg_proc')})
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.oid >= 16384 AND {USER_NS} AND {not_ext('pg_proc', 'p.oid')}""",
        "language": f"""
        SELECT 'language ' || quote_ident(l.lanname),
               concat_ws(E'\\n', concat_ws(' ', 'trusted', l.lanpltrusted, 'handler', {_proc('l.lanplcallfoid')},
                                           'inline', {_proc('l.laninline')}, 'validator', {_proc('l.lanvalidator')}),
                         {owner_acl_comment('l.lanowner', "coalesce(l.lanacl, acldefault('l', l.lanowner))", 'l.oid', 'pg_language')})
        FROM pg_language l WHERE {USER_OID.format(oid='l.oid')} AND {not_ext('pg_language', 'l.oid')}""",
        "transform": f"""
        SELECT 'transform for ' || format_type(tr.trftype, NULL) || ' language ' || (SELECT l.lanname FROM pg_language l WHERE l.oid = tr.trflang),
               concat_ws(E'\\n', concat_ws(' ', 'from sql', {_proc('tr.trffromsql')}, 'to sql', {_proc('tr.trftosql')}),
                         'comment ' || {comment('tr.oid', 'pg_transform')})
        FROM pg_transform tr WHERE {not_ext('pg_transform', 'tr.oid')}""",
        "event trigger": f"""
        SELECT 'event trigger ' || quote_ident(e.evtname),
               concat_ws(E'\\n', concat_ws(' ', 'on', e.evtevent, 'function', e.evtfoid::regprocedure, 'enabled', e.evtenabled,
                                           'tags', array_to_string(e.evttags, ', ')),
                         'owner ' || pg_get_userbyid(e.evtowner), 'comment ' || {comment('e.oid', 'pg_event_trigger')})
        FROM pg_event_trigger e WHERE {not_ext('pg_event_trigger', 'e.oid')}""",
    }


