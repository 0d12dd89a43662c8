"""SQLAlchemy 2.x engines and sessions over a test's connection, joined to its transaction.

The sync engine's one DBAPI connection is ``overlord_db_sync``'s psycopg2 connection, whose
``commit()``/``rollback()`` act on a savepoint; the async engine's is ``overlord_db``'s asyncpg
connection, on which every SQLAlchemy transaction is a nested asyncpg transaction, a savepoint.
Either way application code that commits its sessions keeps working, and everything is rolled
back after the test, with the fixtures' own commit detection. Usable without pytest; SQLAlchemy is
an optional dependency (the ``sqlalchemy`` extra).
"""
from __future__ import annotations

import asyncio
import weakref
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool


def sync_engine(dbapi_conn: Any) -> Engine:
    """An Engine whose every connection is ``dbapi_conn`` (a SavepointConnection), made once per connection.

    The psycopg2 connection serves every test of the process, and a new Engine reads the server's
    settings again on its first connect (1.5 ms a test): the engine is kept on the connection.
    """
    engine: Engine | None = getattr(dbapi_conn, "_overlord_sqla_engine", None)
    if engine is not None:
        return engine
    # The pool's reset on return would roll the test back to its last commit() each time application
    # code closes a Connection: nothing to reset here, the fixture rolls back after the test.
    engine = create_engine("postgresql+psycopg2://", creator=lambda: dbapi_conn, poolclass=StaticPool,
                           pool_reset_on_return=None)
    # SQLAlchemy rolls back after reading the server's settings on the first connect. Made a
    # commit() first (a new savepoint), so that rollback undoes nothing the test did before.
    dbapi_conn.commit()
    engine.connect().close()
    dbapi_conn._overlord_sqla_engine = engine
    return engine


def sync_session(engine: Engine) -> tuple[Session, Any]:
    """A Session joined to a Connection's transaction: its commits release savepoints of its own.

    Returns the session and the Connection, which the caller closes after the session.
    """
    connection = engine.connect()
    connection.begin()
    return Session(bind=connection, join_transaction_mode="create_savepoint"), connection


# The loop each async engine's connection is used in, seen when SQLAlchemy first asks for it.
_LOOPS: weakref.WeakKeyDictionary[Engine, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()


def async_engine(asyncpg_conn: Any) -> AsyncEngine:
    """An AsyncEngine whose every connection is ``asyncpg_conn``; made without awaiting anything."""
    engine: AsyncEngine | None = None

    async def creator() -> Any:
        assert engine is not None
        _LOOPS[engine.sync_engine] = asyncio.get_running_loop()
        return asyncpg_conn

    engine = create_async_engine("postgresql+asyncpg://", async_creator=creator, poolclass=StaticPool,
                                 pool_reset_on_return=None)
    return engine


def async_session(engine: AsyncEngine) -> AsyncSession:
    """Each of its transactions is a nested asyncpg transaction on the test's connection, so a savepoint."""
    return AsyncSession(bind=engine, join_transaction_mode="create_savepoint")


def close_async_session(session: AsyncSession, engine: AsyncEngine) -> None:
    """Close ``session`` after the test, from outside its loop (idle by then).

    A session the test left open keeps its connection checked out, and SQLAlchemy's garbage
    collection would terminate it: under a wider loop scope, the connection of the next tests.
    """
    loop = _LOOPS.get(engine.sync_engine)
    if loop is not None and not loop.is_closed() and not loop.is_running():
        loop.run_until_complete(session.close())
