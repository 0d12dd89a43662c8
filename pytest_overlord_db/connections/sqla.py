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


class AsyncEngines:
    """One AsyncEngine for a process's test connections, each test's asyncpg connection its only one in turn.

    A new AsyncEngine costs more than the test's own database work: it is built (0.4 ms) and, on its first
    connect, reads the server's settings (several round trips). Kept, its dialect stays initialized; each
    test gets a new pool (``dispose(close=False)``: the old one, whose connection was the last test's, is
    let go untouched), so every test's connection is set up as a new one (SQLAlchemy's ``on_connect``) and
    no state of its driver adapter reaches the next test.
    """

    def __init__(self) -> None:
        self._engine: AsyncEngine | None = None
        self._conn: Any = None

    def engine_for(self, asyncpg_conn: Any) -> AsyncEngine:
        engine = self._engine
        if engine is None:
            async def creator() -> Any:
                assert self._engine is not None
                _LOOPS[self._engine.sync_engine] = asyncio.get_running_loop()
                return self._conn

            engine = self._engine = create_async_engine("postgresql+asyncpg://", async_creator=creator,
                                                        poolclass=StaticPool, pool_reset_on_return=None)
        else:
            engine.sync_engine.dispose(close=False)
            _LOOPS.pop(engine.sync_engine, None)
        self._conn = asyncpg_conn
        return engine


def async_engine(asyncpg_conn: Any) -> AsyncEngine:
    """An AsyncEngine whose every connection is ``asyncpg_conn``; made without awaiting anything."""
    return AsyncEngines().engine_for(asyncpg_conn)


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
