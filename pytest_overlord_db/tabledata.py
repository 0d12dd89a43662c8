"""The data half of a snapshot: every table's row count and content digest, and, for small tables, the rows
themselves keyed by primary key, so a diff can say ``public.products id=2: price 7.50 → 7.00``.

A table whose file has no page has no row, so only the others are read, many
tables per statement: a statement per table made the snapshot's cost grow
with the schema. ``ONLY``: an inheritance child's rows are its own entry.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

ROW_LIMIT = 50  # tables with more rows are compared by count and digest only
_PER_STATEMENT = 100
Rows = tuple[tuple[str, str], ...]  # (row key, the row as JSON), sorted


_GONE = object()


class _Raw(str):
    """A JSON number, kept as PostgreSQL printed it (7.50 stays 7.50)."""


def read(cur: Any, tables: list[str]) -> tuple[dict[str, tuple[int, str]], dict[str, Rows]]:
    """Counts and digests of ``tables`` (qualified names, as quote_ident prints them), and the rows of the
    small ones. The catalog is asked about these tables only: asking about all (the size of every table's
    file) made a snapshot that re-reads a few tables cost time in proportion to the schema."""
    data = {"data " + name: (0, "") for name in tables}
    rows: dict[str, Rows] = {}
    if not tables:
        return data, rows
    cur.execute("SELECT t.name FROM unnest(%s::text[]) t(name) JOIN pg_class c ON c.oid = to_regclass(t.name) "
                "WHERE pg_relation_size(c.oid) > 0", (tables,))
    filled = sorted({row[0] for row in cur.fetchall()})
    # One statement reads the first rows of many tables: a small table is then known whole (its digest taken
    # here), and only the big ones are read again, by count and digest on the server.
    found: dict[str, list[str]] = {name: [] for name in filled}
    for start in range(0, len(filled), _PER_STATEMENT):
        cur.execute(" UNION ALL ".join(
            f"SELECT {number}, row_to_json(t)::text FROM (SELECT * FROM ONLY {name} LIMIT {ROW_LIMIT + 1}) t"
            for number, name in enumerate(filled[start:start + _PER_STATEMENT], start)))
        for number, text in cur.fetchall():
            found[filled[number]].append(text)
    big = [name for name in filled if len(found[name]) > ROW_LIMIT]
    for start in range(0, len(big), _PER_STATEMENT):
        cur.execute(" UNION ALL ".join(
            f"SELECT {number}, count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') "
            f"FROM ONLY {name} t" for number, name in enumerate(big[start:start + _PER_STATEMENT], start)))
        for number, count, digest in cur.fetchall():
            data["data " + big[number]] = (count, digest)
    small = [name for name in filled if len(found[name]) <= ROW_LIMIT]
    if not small:
        return data, rows
    cur.execute("SELECT t.name, array_agg(a.attname::text ORDER BY k.i) FROM unnest(%s::text[]) t(name) "
                "JOIN pg_index i ON i.indrelid = to_regclass(t.name) AND i.indisprimary "
                "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, i) "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum GROUP BY 1", (small,))
    keys = {name: list(columns) for name, columns in cur.fetchall()}
    for name in small:
        texts = sorted(found[name])
        data["data " + name] = (len(texts), hashlib.md5("\n".join(texts).encode()).hexdigest() if texts else "")
        rows["data " + name] = tuple(sorted((_key(_parse(text), keys.get(name), text), text) for text in texts))
    return data, rows


def _parse(text: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(text, parse_float=_Raw, parse_int=_Raw)
    return parsed


def _key(row: dict[str, Any], primary: list[str] | None, text: str) -> str:
    if not primary:
        return text  # no primary key: the row is its own key (a change shows as one row gone, one new)
    return ", ".join(f"{column}={_shown(row.get(column))}" for column in primary)


def _shown(value: Any, limit: int = 40) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _values(row: dict[str, Any], skip: list[str]) -> str:
    return ", ".join(f"{column} {_shown(value)}" for column, value in row.items() if column not in skip)


def describe(table: str, before: Rows, after: Rows) -> list[str]:
    """One line per row that differs: the columns that changed (old → new), or the row gone or new."""
    old, new = dict(before), dict(after)
    lines = []
    for key in sorted(old.keys() | new.keys()):
        if key in old and key in new:
            if old[key] == new[key]:
                continue
            was, now = _parse(old[key]), _parse(new[key])
            changes = [f"{column} {_shown(was[column]) if column in was else '(no column)'} → "
                       f"{_shown(now[column]) if column in now else '(no column)'}"
                       for column in dict.fromkeys([*was, *now]) if was.get(column, _GONE) != now.get(column, _GONE)]
            lines.append(f"{table} {key}: {', '.join(changes)}")
        else:
            text = old.get(key) or new[key]
            keyed = key != text
            shown = _values(_parse(text), [part.split("=", 1)[0] for part in key.split(", ")] if keyed else [])
            what = f"gone (was {shown})" if key in old else f"new ({shown})"
            lines.append(f"{table} {key if keyed else '(no primary key)'}: {what}")
    return lines
