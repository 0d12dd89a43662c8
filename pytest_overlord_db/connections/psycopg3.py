"""psycopg 3 connections for tests, sync and async: the psycopg2 fixture's semantics, with psycopg 3's classes.

One transaction per test, rolled back after it; ``commit()``, ``rollback()`` and ``with conn:`` act on a
savepoint while the test runs; a raw ``COMMIT`` is detected the way the psycopg2 connection detects it
(``END_TEST`` begins by rolling back to the savepoint, which is gone if the transaction was ended), and
as there, the end of one test begins the next one's transaction in the same message (one round trip a
test instead of three: psycopg's own ``BEGIN``, the savepoint, the end).

Both connections are kept for the whole process, as the psycopg2 one is. An ``AsyncConnection`` belongs
to no event loop (it waits on its socket in whichever loop runs it), so it serves tests of any loop scope;
its begin and end run in a private loop of their own, between tests, where no test loop is running.
Usable without pytest; psycopg 3 is an optional dependency (the ``psycopg`` extra).
"""
from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any, Callable, Coroutine, TypeVar

import psycopg
import psycopg.errors

from .. import interrupts, urls
from ..errors import ServerError
from .sync import END_AND_BEGIN, FRESH, RENEW, RESET_SESSION, SAVEPOINT, quiet
from .vectors import register_psycopg, register_psycopg_async

PSYCOPG_LOST = (psycopg.OperationalError, psycopg.InterfaceError, ServerError)
ENDED = (psycopg.errors.NoActiveSqlTransaction, psycopg.errors.InvalidSavepointSpecification)
T = TypeVar("T")
COMMIT, ROLLBACK = f"RELEASE SAVEPOINT {SAVEPOINT}; SAVEPOINT {SAVEPOINT}", f"ROLLBACK TO SAVEPOINT {SAVEPOINT}"


# What a test may change on the connection object itself (not the session): put back after it.
OWN = ("row_factory", "cursor_factory", "server_cursor_factory", "prepare_threshold", "prepared_max")


def _begin(primed: float | None, fd: int) -> str:
    """What a test's start sends, given when the last test's end began this one's transaction (if it did)."""
    if primed is None:
        # psycopg reads the transaction's status from the server: on an idle connection it sends its own
        # BEGIN first, so only the savepoint is ours (the first test, or after a commit was caught).
        return f"SAVEPOINT {SAVEPOINT}"
    # Begun too long ago for now(), or the backend may have ended meanwhile: begun again, which finds out.
    return RENEW if time.monotonic() - primed > FRESH or not quiet(fd) else ""


def _starting(conn: Any) -> str:
    """A test begins on ``conn`` (either class): what to send for it."""
    if conn._settings is None:
        conn._settings = tuple(getattr(conn, name) for name in OWN)
    query, conn._primed_at = _begin(conn._primed_at, conn.pgconn.socket), None
    return query


def _ending(conn: Any) -> bool:
    """A test ends on ``conn``: its own settings put back; False if it is closed (nothing to send)."""
    conn._in_test, conn._primed_at = False, None
    if conn.closed:
        return False
    for name, value in zip(OWN, conn._settings or (), strict=False):
        setattr(conn, name, value)
    return True


class PsycopgConnection(psycopg.Connection[Any]):
    """psycopg 3 connection whose commit()/rollback() (and ``with conn:``) act on a savepoint while a test runs."""

    _in_test = False
    _primed_at: float | None = None  # when END_AND_BEGIN began the next test's transaction
    _settings: tuple[Any, ...] | None = None  # its OWN, as made

    def begin_test(self) -> None:
        query = _starting(self)
        if query:
            self.execute(query)
        self._in_test = True

    def commit(self) -> None:
        if not self._in_test:
            return super().commit()
        self.execute(COMMIT)

    def rollback(self) -> None:
        if not self._in_test:
            return super().rollback()
        self.execute(ROLLBACK)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self._in_test:
            return super().__exit__(kind, exc, tb)
        # As psycopg does for a connection from its pool: end the transaction (our savepoint), keep it open.
        if not self.closed:
            self.rollback() if kind else self.commit()

    def end_test(self) -> bool:
        """Roll the test back and begin the next one's transaction; False, and the session reset, if the test's
        transaction was ended behind our back."""
        if not _ending(self):
            return False
        try:
            self.execute(END_AND_BEGIN)
            self._primed_at = time.monotonic()
            return True
        except ENDED:
            pass
        super().rollback()  # whatever transaction is open now
        self.autocommit = True  # the reset must not open (and leave) a transaction
        try:
            self.execute(RESET_SESSION)
        finally:
            self.autocommit = False
        return False


class AsyncPsycopgConnection(psycopg.AsyncConnection[Any]):
    """The same, for ``psycopg.AsyncConnection``: ``await conn.commit()`` acts on a savepoint during a test."""

    _in_test = False
    _primed_at: float | None = None
    _settings: tuple[Any, ...] | None = None

    async def begin_test(self) -> None:
        query = _starting(self)
        if query:
            await self.execute(query)
        self._in_test = True

    async def commit(self) -> None:
        if not self._in_test:
            return await super().commit()
        await self.execute(COMMIT)

    async def rollback(self) -> None:
        if not self._in_test:
            return await super().rollback()
        await self.execute(ROLLBACK)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if not self._in_test:
            return await super().__aexit__(kind, exc, tb)
        if not self.closed:
            await (self.rollback() if kind else self.commit())

    async def end_test(self) -> bool:
        if not _ending(self):
            return False
        if not self.lock.locked():  # a lock two of a test's tasks waited on is bound to that test's loop
            self.lock = asyncio.Lock()
        try:
            await self.execute(END_AND_BEGIN)
            self._primed_at = time.monotonic()
            return True
        except ENDED:
            pass
        await super().rollback()
        await self.set_autocommit(True)
        try:
            await self.execute(RESET_SESSION)
        finally:
            await self.set_autocommit(False)
        return False


class PsycopgConnections:
    """The process's psycopg 3 connections to the work database, one sync and one async, each made on first use."""

    def __init__(self, url: Callable[[], str], vectors: bool = True) -> None:
        self.url = url
        self.vectors = vectors  # register pgvector's types when the package is there
        self.sync: PsycopgConnection | None = None
        self.aio: AsyncPsycopgConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin_sync(self) -> PsycopgConnection:
        if self.sync is None or self.sync.closed:
            self.sync = PsycopgConnection.connect(urls.normalize(self.url()))
            interrupts.register(self.sync)  # Ctrl-C ends a test's long query too
            if self.vectors:
                register_psycopg(self.sync)
        self.sync.begin_test()
        return self.sync

    def begin_async(self) -> AsyncPsycopgConnection:
        return self._run(self._begin_async())

    async def _begin_async(self) -> AsyncPsycopgConnection:
        if self.aio is None or self.aio.closed:
            self.aio = await AsyncPsycopgConnection.connect(urls.normalize(self.url()))
            if self.vectors:
                await register_psycopg_async(self.aio)
        await self.aio.begin_test()
        return self.aio

    def end(self, conn: PsycopgConnection | AsyncPsycopgConnection) -> bool:
        if isinstance(conn, AsyncPsycopgConnection):
            return self._run(conn.end_test())
        return conn.end_test()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def drop(self, conn: object = None) -> None:
        """Close ``conn`` (or both), e.g. after it was lost or before the work database is rebuilt."""
        if self.sync is not None and conn in (None, self.sync):
            interrupts.close(self.sync)
            self.sync = None
        if self.aio is not None and conn in (None, self.aio):
            aio, self.aio = self.aio, None
            try:
                self._run(aio.close())
            except Exception:  # noqa: BLE001 - lost already: nothing to close politely
                pass

    def close(self) -> None:
        self.drop()
        if self._loop is not None:
            self._loop.close()
            self._loop = None
