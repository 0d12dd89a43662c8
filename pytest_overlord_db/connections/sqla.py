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
from typing import Any, Awaitable, Callable

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool, StaticPool


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
    """AsyncEngines for a process's test connections, each test's asyncpg connection the only one of its own.

    A new AsyncEngine costs more than the test's own database work: it is built (0.4 ms) and, on its first
    connect, reads the server's settings (several round trips). So one engine is kept, its dialect read
    once, and each test gets a view of it (``execution_options()``: the listeners and options a test puts
    on its engine are that view's own) with a new pool, made from one no test used, so that each test's
    connection is set up as a new one (SQLAlchemy's ``on_connect``), no state of the driver adapter and no
    pool listener of a test reaches the next. ``first`` makes a connection the dialect reads the server's
    settings from, in a session no test changed (else the first test's connection, at its first use).
    """

    def __init__(self, first: Callable[[], Awaitable[Any]] | None = None) -> None:
        self._first = first
        self._base: AsyncEngine | None = None
        self._pristine: Pool | None = None
        self._conn: Any = None
        self._current: AsyncEngine | None = None

    def engine_for(self, asyncpg_conn: Any) -> AsyncEngine:
        if self._base is None or self._pristine is None:
            self._base = create_async_engine("postgresql+asyncpg://", async_creator=self._creator,
                                             poolclass=StaticPool, pool_reset_on_return=None)
            self._pristine = self._base.sync_engine.pool.recreate()  # the dialect's listeners only
            self._initialize()
        self._base.sync_engine.pool = self._pristine.recreate()
        self._conn = asyncpg_conn
        self._current = self._base.execution_options()
        return self._current

    async def _creator(self) -> Any:
        if self._current is not None:
            _LOOPS[self._current.sync_engine] = asyncio.get_running_loop()
        return self._conn

    def _initialize(self) -> None:
        if self._first is None:
            return
        try:
            asyncio.get_running_loop()
            return  # called inside a running loop: the first test's connection is read, at its first use
        except RuntimeError:
            pass
        first, base = self._first, self._base
        assert base is not None

        async def initialize() -> None:
            self._conn = await first()
            try:
                async with base.connect():
                    pass
            finally:
                await self._conn.close()

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(initialize())
        finally:
            loop.close()


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
