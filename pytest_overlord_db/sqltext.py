"""Finding the statement PostgreSQL rejected, and saying so in one paragraph.

Shared by every migrator and the seed loader: a failure names the file, the
migration, PostgreSQL's message, the failing statement and its line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import psycopg2
import sqlparse


def statements(sql: str) -> list[str]:
    return [s for s in sqlparse.split(sql) if s.strip()]


def find_statement(sql: str, position: int | None) -> str:
    """The statement of a multi-statement string holding 1-based ``position`` (comments dropped)."""
    found_list = statements(sql)
    found = ""
    if position is None or not found_list:
        found = found_list[0] if len(found_list) == 1 else ""
    else:
        offset = 0
        for statement in found_list:
            start = sql.find(statement, offset)
            end = start + len(statement)
            if start <= position - 1 < end:
                found = statement
                break
            offset = end
    return "\n".join(line for line in found.splitlines() if not line.strip().startswith("--")).strip()


def source_line(source: str, statement: str) -> int | None:
    """The 1-based line of ``source`` where ``statement`` starts, if it can be found."""
    probe = statement.strip().splitlines()[0].strip() if statement.strip() else ""
    if not probe:
        return None
    index = source.find(probe)
    return source.count("\n", 0, index) + 1 if index >= 0 else None


def primary_message(exc: BaseException) -> str:
    """PostgreSQL's first message line, without the ``ERROR:`` prefix."""
    message = getattr(exc, "pgerror", None) or str(exc)
    primary = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    return primary.removeprefix("ERROR:").strip()


def failing_statement(exc: BaseException) -> str:
    """The statement the error's position points into, when the driver kept the query."""
    cursor = getattr(exc, "cursor", None)
    query = cursor.query if cursor is not None and cursor.query else None
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    if not query:
        return ""
    position = getattr(getattr(exc, "diag", None), "statement_position", None)
    return find_statement(query, int(position) if position else None)


def replay(conn: "psycopg2.extensions.connection", sql_bodies: list[str | Callable[..., object]]) -> str | None:
    """Run the bodies statement by statement in a transaction that is rolled back; return the first statement
    PostgreSQL rejects. For errors that carry no position (a missing table in a later statement, say)."""
    try:
        with conn.cursor() as cur:
            for body in sql_bodies:
                if callable(body):
                    try:
                        body(conn)
                    except psycopg2.Error:
                        return None
                    continue
                for statement in statements(body):
                    try:
                        cur.execute(statement)
                    except psycopg2.Error:
                        return find_statement(statement, None)
    except psycopg2.Error:
        return None
    finally:
        conn.rollback()
    return None


def describe_failure(migration_id: str, path: Path, source: str, exc: BaseException, action: str,
                     statement: str = "", rolled_back: bool = True) -> str:
    """One paragraph: migration, PostgreSQL message, failing statement and its line in the file."""
    sqlstate = getattr(exc, "pgcode", None)
    parts = [f"Migration {migration_id} failed to {action}: {primary_message(exc)}"
             + (f" (SQLSTATE {sqlstate})" if sqlstate else "") + "."]
    if statement:
        line = source_line(source, statement)
        shown = " ".join(statement.split())
        if len(shown) > 300:
            shown = shown[:297] + "..."
        parts.append(f"Failing statement{f' (line {line} of {path})' if line else ''}: {shown}")
    if rolled_back:
        parts.append("The migration's transaction was rolled back.")
    return " ".join(parts)
