"""Rows for every user table, generated from the catalog, so the round trip sees what a rollback does to data.

Each column gets a hypothesis strategy from its type (precision, length,
enum labels, domain base, array element, ``vector(n)``, ranges, json); NOT
NULL is honoured, foreign keys take values from the parent's rows (parents
are filled first), unique and CHECK constraints are met by drawing more
candidates than needed and keeping those the server accepts. Identity,
generated and sequence-default columns are left to the server. The draw is
deterministic for a given seed. A table whose rows cannot be made is named,
with the reason, never skipped in silence.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator

import psycopg2
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from . import sqltext


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")  # PostgreSQL text has no NUL
_TEXT = st.text(_CHARS, max_size=12)
_FLOATS = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
_DAY = st.dates(dt.date(1990, 1, 1), dt.date(2040, 12, 31))
_MOMENT = st.datetimes(dt.datetime(1990, 1, 1), dt.datetime(2040, 12, 31)).map(lambda d: d.replace(microsecond=0))
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-1000, 1000) | _TEXT,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=6)
_INTS = {"int2": 2**15 - 1, "int4": 2**31 - 1, "int8": 2**63 - 1}
_SMALL = 10_000  # real ids, counts and scores are small; triggers that compute with them must not overflow
_LITERAL = re.compile(r"'((?:[^']|'')*)'::")
_BOUND = re.compile(r"\((\w+) (>=|>|<=|<) \(?'?(-?\d+)")
_RANGE_OF: dict[str, st.SearchStrategy[Any]] = {"int4range": st.integers(-1000, 1000), "int8range": st.integers(-1000, 1000),
             "numrange": st.integers(-1000, 1000), "daterange": _DAY, "tsrange": _MOMENT, "tstzrange": _MOMENT}
_COLUMNS = """
    SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname, format_type(a.atttypid, a.atttypmod),
           a.attnotnull,
           a.attidentity <> '' OR a.attgenerated <> '' OR coalesce(pg_get_expr(ad.adbin, ad.adrelid) LIKE 'nextval(%%', false),
           coalesce(bt.typname, t.typname), CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END, et.typname, et.typtype,
           CASE WHEN coalesce(et.typtype, bt.typtype) = 'e' THEN (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
                FROM pg_enum e WHERE e.enumtypid = coalesce(et.oid, bt.oid)) END, coalesce(bt.typtype, t.typtype)
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
    LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped AND NOT c.relispartition
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
      AND c.relname <> ALL(%(skip)s) {only}
      AND (NOT %(empty)s OR pg_relation_size(c.oid) = 0)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY c.oid, a.attnum"""
# A table's qualified name as the column query spells it (regclass::text leaves out schemas on the search path).
_NAME = ("(SELECT quote_ident(rn.nspname) || '.' || quote_ident(rc.relname) FROM pg_class rc "
         "JOIN pg_namespace rn ON rn.oid = rc.relnamespace WHERE rc.oid = {})")
_CHECKS = f"""
    SELECT {_NAME.format('con.conrelid')},
           a.attname, pg_get_constraintdef(con.oid)
    FROM pg_constraint con JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
    WHERE con.contype = 'c' AND array_length(con.conkey, 1) = 1 {{only}}"""
_FKEYS = f"""
    SELECT {_NAME.format('con.conrelid')},
           {_NAME.format('con.confrelid')},
           (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
              JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n),
           (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
              JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n)
    FROM pg_constraint con WHERE con.contype = 'f' {{only}}"""


@dataclass
class Column:
    name: str
    sql_type: str  # as format_type prints it: the cast each value gets
    not_null: bool
    by_server: bool  # identity, generated, or a sequence's default
    base: str  # the type (a domain's base type) by name: int4, numeric, vector, _text ...
    typmod: int
    element: str | None  # an array's element type
    element_kind: str | None
    labels: list[str] | None  # enum labels
    kind: str  # typtype of the base: b, e, r, ...
    choices: list[str] | None = None  # from a CHECK (col IN (...)): only these values pass
    low: int | None = None  # from CHECK (col >= n) and the like
    high: int | None = None


@dataclass
class Table:
    name: str
    columns: list[Column] = field(default_factory=list)
    parents: list[tuple[list[str], str, list[str]]] = field(default_factory=list)  # (columns, parent, its columns)


def _strategy(base: str, typmod: int, labels: list[str] | None, kind: str, low: int | None = None,
              high: int | None = None) -> st.SearchStrategy[Any] | None:
    """Values of one (non-array) type, or None when this module cannot make them."""
    if labels is not None:
        return st.sampled_from(labels)
    if base in _INTS:
        return st.integers(max(-_INTS[base] - 1, -_SMALL if low is None else low), min(_INTS[base], _SMALL if high is None else high))
    if base == "numeric":
        precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        if typmod < 0:
            precision, scale = 12, 4
        bound = Decimal(10) ** (precision - scale) - Decimal(1).scaleb(-scale)
        return st.decimals(-bound, bound, places=scale, allow_nan=False, allow_infinity=False)
    if base in ("float4", "float8"):
        return _FLOATS
    if base in ("text", "citext", "name"):
        return _TEXT
    if base in ("varchar", "bpchar"):
        return st.text(_CHARS, max_size=max(typmod - 4, 1) if typmod > 0 else 12)
    strategies: dict[str, st.SearchStrategy[Any]] = {
        "bool": st.booleans(), "uuid": st.uuids().map(str), "date": _DAY, "timestamp": _MOMENT,
        "timestamptz": _MOMENT.map(lambda d: d.replace(tzinfo=dt.timezone.utc)), "time": st.times().map(lambda t: t.replace(microsecond=0)),
        "interval": st.integers(0, 10**6).map(lambda s: f"{s} seconds"), "bytea": st.binary(max_size=16).map(psycopg2.Binary),
        "json": _JSON.map(json.dumps), "jsonb": _JSON.map(json.dumps),
        "inet": st.ip_addresses(v=4).map(str), "cidr": st.ip_addresses(v=4).map(lambda a: f"{a}/32"),
    }
    if base in strategies:
        return strategies[base]
    if base in ("vector", "halfvec") and typmod > 0:
        return st.lists(st.floats(-100, 100, allow_nan=False, width=16), min_size=typmod, max_size=typmod).map(
            lambda v: "[" + ",".join(repr(float(x)) for x in v) + "]")
    if base in _RANGE_OF:
        return st.lists(_RANGE_OF[base], min_size=2, max_size=2, unique=True).map(lambda p: f"[{min(p)},{max(p)})")
    return None


def strategy_for(column: Column) -> st.SearchStrategy[Any] | None:
    if column.choices:
        return st.sampled_from(column.choices)
    if column.element is not None:
        inner = _strategy(column.element, -1, column.labels, column.element_kind or "b")
        return None if inner is None else st.lists(inner, max_size=3)
    return _strategy(column.base, column.typmod, column.labels, column.kind, column.low, column.high)


def _narrow(column: Column, check: str) -> None:
    """What a one-column CHECK says about the values that pass: a list of them, or integer bounds."""
    if re.search(r"= ANY \(+ARRAY\[", check):
        column.choices = [literal.replace("''", "'") for literal in _LITERAL.findall(check)] or None
        return
    for name, op, number in _BOUND.findall(check):
        if name == column.name and column.base in _INTS:
            value = int(number)
            if op in (">=", ">"):
                column.low = value + (op == ">")
            else:
                column.high = value - (op == "<")


def read_tables(conn: Any, bookkeeping: Iterable[str] = (), *, empty_only: bool = False,
                only: Iterable[str] | None = None) -> list[Table]:
    """The user tables, parents before children (foreign keys), with what generating their rows needs.
    ``empty_only``: only tables whose file has no page yet (the round trip fills each table once); ``only``:
    of these qualified names (reading every table's columns grew with the schema)."""
    tables: dict[str, Table] = {}
    params = {"skip": list(bookkeeping), "empty": empty_only, "only": None if only is None else sorted(only)}
    # The condition on ``only`` is written in only when given: as "%(only)s IS NULL OR ..." the planner could not
    # use the catalogs' indexes, and read every column of every table (2 ms a migration at 500 tables).
    def among(column: str) -> str:
        return "" if only is None else f"AND {column} = ANY(%(only)s::text[]::regclass[])"

    with conn.cursor() as cur:
        cur.execute(_COLUMNS.format(only=among("c.oid")), params)
        for name, col, sql_type, not_null, by_server, base, typmod, element, element_kind, labels, kind in cur.fetchall():
            tables.setdefault(name, Table(name)).columns.append(
                Column(col, sql_type, not_null, by_server, base, typmod, element, element_kind, labels, kind))
        cur.execute(_CHECKS.format(only=among("con.conrelid")), params)
        for name, col, definition in cur.fetchall():
            column = next((c for c in tables[name].columns if c.name == col), None) if name in tables else None
            if column is not None:
                _narrow(column, definition)
        cur.execute(_FKEYS.format(only=among("con.conrelid")), params)
        for child, parent, columns, parent_columns in cur.fetchall():
            if child in tables:
                tables[child].parents.append((columns, parent, parent_columns))
    ordered: list[Table] = []
    pending = dict(tables)
    while pending:  # parents first; a cycle (or a self-reference) is broken where it is
        ready = [t for t in pending.values() if all(p not in pending or p == t.name for _, p, _ in t.parents)]
        for table in ready or [next(iter(pending.values()))]:
            ordered.append(pending.pop(table.name))
    return ordered


@contextlib.contextmanager
def _without_local_constants() -> Iterator[None]:
    """Hypothesis also draws constants it finds in the source of "local" modules (whatever was imported from
    outside site-packages: this package installed editable, the user's own code), so which modules happen to
    be loaded would change the rows; the same seed must draw the same rows in pytest and in the CLI. It has
    no public switch for this: the one private name is used here only, and only if it is there
    (tests/test_roundtrip_data.py checks the draws do not move when a module full of constants is imported)."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - a Hypothesis without the feature
        yield
        return
    get, cache = getattr(providers, "_get_local_constants", None), getattr(providers, "CONSTANTS_CACHE", None)
    if get is None or cache is None or not hasattr(providers, "Constants"):
        yield
        return
    empty = providers.Constants()
    providers._get_local_constants = lambda: empty
    cache.cache.clear()  # filtered choices already cached hold the local constants
    try:
        yield
    finally:
        providers._get_local_constants = get
        cache.cache.clear()


def _draw(strategy: st.SearchStrategy[Any], at: int) -> Any:
    """One deterministic draw. Hypothesis makes its simplest example first (zeros, empty strings): the
    second example of a two-example run is a random one, the same for the same seed. The first example
    draws one boolean (simplest: False) and stops there, so that its rows, thrown away, are never drawn
    (half the cost); the second, which Hypothesis makes different from the first, has True and draws."""
    drawn: list[Any] = []

    @seed(at)
    @settings(max_examples=2, database=None, phases=[Phase.generate], deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data: st.DataObject) -> None:
        if data.draw(st.booleans()):
            drawn.append(data.draw(strategy))

    # Hypothesis names a test's examples in its database by a digest of the test's source, tokenized anew
    # for every new function: 1.6 ms of a 2.2 ms draw. There is no database here; a name it takes as given
    # where it finds one (a private one: without it, the digest is made, as before) saves that work.
    run._hypothesis_internal_database_key = b"overlord-db rows"  # type: ignore[attr-defined]
    with _without_local_constants():
        run()
    return drawn[-1]


def fill(conn: Any, tables: list[Table], rows: int, data_seed: int = 0,
         report: Callable[[str, str], None] | None = None) -> dict[str, int]:
    """Give each table at least ``rows`` rows (those it has count); ``report(table, why)`` for a table that
    cannot get them. Commits. Returns the rows inserted, by table."""
    inserted: dict[str, int] = {}
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(f"SELECT count(*) FROM ONLY {table.name}")
            need = rows - cur.fetchone()[0]
            if need > 0:
                added, why = _fill_one(cur, table, need, data_seed)
                if added:
                    inserted[table.name] = added
                if why and report is not None:
                    report(table.name, why)
    conn.commit()
    return inserted


def _fill_one(cur: Any, table: Table, need: int, data_seed: int) -> tuple[int, str]:
    keys: dict[str, list[tuple[Any, ...]]] = {}
    for columns, parent, parent_columns in table.parents:
        cur.execute(f"SELECT DISTINCT {', '.join(map(_ident, parent_columns))} FROM {parent} LIMIT 50")
        keys[",".join(columns)] = cur.fetchall()
    in_fk = {c for columns, _, _ in table.parents for c in columns}
    values: dict[str, st.SearchStrategy[Any]] = {}
    for column in table.columns:
        if column.by_server or column.name in in_fk:
            continue
        strategy = strategy_for(column)
        if strategy is None and column.not_null:
            return 0, f"column {column.name} is of type {column.sql_type}, for which no values can be generated"
        values[column.name] = (strategy if column.not_null else st.none() | strategy) if strategy is not None else st.none()
    for fk, found in keys.items():
        required = any(c.not_null and c.name in fk.split(",") for c in table.columns)
        if not found and required:
            return 0, f"its foreign key ({fk}) needs rows in the parent table, which has none"
        # An optional reference is sometimes left empty: "exactly one of these" CHECKs need that.
        values["\0" + fk] = (st.sampled_from(found) if required else st.none() | st.sampled_from(found)) if found else st.none()
    types = {c.name: c.sql_type for c in table.columns}
    added, error, tried = 0, "", 0
    # Drawing is most of the cost (hypothesis, ~2 ms a row): one spare first, many more only when rows are
    # turned away (a CHECK, a UNIQUE), each round with a seed of its own.
    for size, salt in ((need + 1, 0), (need * 4, 1)):
        candidates = _draw(st.lists(st.fixed_dictionaries(values), min_size=size, max_size=size),
                           data_seed ^ zlib.crc32(table.name.encode()) ^ salt)
        tried += len(candidates)
        added, error = _insert(cur, table, types, candidates, need, added, error)
        if added == need:
            return added, ""
    if added:
        return added, ""
    return 0, f"none of {tried} generated rows was accepted: {error}"


def _insert(cur: Any, table: Table, types: dict[str, str], candidates: list[dict[str, Any]], need: int, added: int,
            error: str) -> tuple[int, str]:
    """Insert ``candidates`` until ``need`` rows are in, each on its own (a row turned away is skipped); the rows
    in so far, and the last refusal's message."""
    for candidate in candidates:
        row: dict[str, Any] = {}
        for key, value in candidate.items():
            if key.startswith("\0"):
                names = key[1:].split(",")
                row.update(zip(names, value or [None] * len(names), strict=True))
            else:
                row[key] = value
        columns = list(row)
        sql = (f"INSERT INTO {table.name} ({', '.join(map(_ident, columns))}) "
               f"VALUES ({', '.join(f'%s::{types[c]}' for c in columns)})" if columns else f"INSERT INTO {table.name} DEFAULT VALUES")
        cur.execute("SAVEPOINT overlord_row")
        try:
            cur.execute(sql, [row[c] for c in columns])
        except psycopg2.Error as exc:
            cur.execute("ROLLBACK TO SAVEPOINT overlord_row")
            error = sqltext.primary_message(exc)
            continue
        cur.execute("RELEASE SAVEPOINT overlord_row")
        added += 1
        if added == need:
            break
    return added, error
