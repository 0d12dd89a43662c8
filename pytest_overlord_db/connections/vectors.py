"""pgvector's types on the fixtures' connections: a ``vector`` column reads back as a ``pgvector.Vector``
(``.to_list()``, ``.to_numpy()``), not as the text ``'[0.5,0.25,0]'``, and lists or arrays are sent as vectors.

Only when the ``pgvector`` package is installed (the ``pgvector`` extra), and only where the database has
the ``vector`` extension: a database without it gets no registration, silently, while any other failure
is raised. The schema the type lives in is looked up, not assumed to be ``public``.
"""
from __future__ import annotations

import importlib.util
from functools import cache
from typing import Any

# The type's schema, or NULL: the one query each driver runs before registering.
VECTOR_SCHEMA = ("SELECT n.nspname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
                 "WHERE t.oid = to_regtype('vector')")


@cache
def available() -> bool:
    return importlib.util.find_spec("pgvector") is not None


def asyncpg_class() -> type:
    """An ``asyncpg.Connection`` subclass (asyncpg's ``connection_class``) whose type lookups are shared.

    Registering pgvector's codecs looks its three types up by name, one query each: 1.7 ms on every
    new connection, and under function-scoped loops every test has one. The connections of one
    process all reach clones of one template, whose types have the same oids, so each name is looked
    up once. ``_introspect_type`` is asyncpg's own (private) lookup, unchanged since 0.2x; with an
    asyncpg lacking it the subclass changes nothing and the lookups are merely repeated.
    """
    import asyncpg

    class SharedTypeLookups(asyncpg.Connection):  # type: ignore[misc]  # asyncpg has no type information
        _known: dict[tuple[str, str], Any] = {}

        async def _introspect_type(self, typename: str, schema: str) -> Any:
            found = self._known.get((typename, schema))
            if found is None:
                found = await super()._introspect_type(typename, schema)
                self._known[(typename, schema)] = found
            return found

    return SharedTypeLookups


async def register_asyncpg(conn: Any, schema: str | None) -> None:
    """``schema``: what ``vector_schema_asyncpg`` found on a database cloned from the same template."""
    if schema is None or not available():
        return
    from pgvector.asyncpg import register_vector

    await register_vector(conn, schema=schema)


async def vector_schema_asyncpg(conn: Any) -> str | None:
    return None if not available() else await conn.fetchval(VECTOR_SCHEMA)


def register_psycopg2(conn: Any) -> None:
    """On a psycopg2 connection outside a test (the lookup's transaction is rolled back here)."""
    if not available():
        return
    from pgvector.psycopg2 import register_vector

    try:
        with conn.cursor() as cur:
            cur.execute(VECTOR_SCHEMA)
            if cur.fetchone() is not None:
                register_vector(conn)
    finally:
        conn.rollback()


def register_psycopg(conn: Any) -> None:
    """On a psycopg 3 connection outside a test."""
    if not available():
        return
    from pgvector.psycopg import register_vector

    try:
        if conn.execute(VECTOR_SCHEMA).fetchone() is not None:
            register_vector(conn)
    finally:
        conn.rollback()


async def register_psycopg_async(conn: Any) -> None:
    if not available():
        return
    from pgvector.psycopg import register_vector_async

    try:
        if await (await conn.execute(VECTOR_SCHEMA)).fetchone() is not None:
            await register_vector_async(conn)
    finally:
        await conn.rollback()
