"""An object shaped like an ``asyncpg.Pool`` that hands out one connection: the test's, inside its transaction.

Application code that keeps a pool (``async with pool.acquire() as conn``, ``await pool.fetch(...)``) runs
unchanged on a test's connection. Each acquire is a savepoint: code that fails inside it leaves nothing behind
and the test's transaction stays usable, while what succeeded stays for the rest of the test. There is only
one connection, so acquires from concurrent tasks (``asyncio.gather`` over repository calls) take turns behind
an ``asyncio.Lock`` rather than failing with asyncpg's "another operation is in progress". Usable without pytest.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Generator, Sequence

import asyncpg

WAIT = 10.0  # seconds an acquire waits for the one connection before it says why it cannot have it


class PoolClosed(asyncpg.InterfaceError):  # type: ignore[misc]  # asyncpg has no type information
    """What asyncpg raises for a closed pool: application code that catches InterfaceError keeps working."""


@dataclass
class _Hold:
    """One acquire: its savepoint, and whether it took the lock."""

    savepoint: str
    outer: bool  # took the lock (a nested acquire of the same task did not)


class OverlordPool:
    """``asyncpg.Pool``'s interface over one connection already in a transaction (``overlord_db``'s).

    ``close()`` and ``terminate()`` only stop this pool handing the connection out: application code
    that closes its pool at shutdown must not close the test's connection.
    """

    def __init__(self, conn: Any, *, wait: float = WAIT) -> None:
        self._conn = conn
        self._wait = wait
        self._lock = asyncio.Lock()  # bound to the test's loop on first use, not here
        self._holds: list[_Hold] = []
        self._holder: asyncio.Task[Any] | None = None
        self._closed = False
        self._count = 0

    # -- acquire and release ------------------------------------------------------------------
    def acquire(self, *, timeout: float | None = None) -> _AcquireContext:
        """``async with pool.acquire() as conn:`` or ``conn = await pool.acquire()`` (then ``release``)."""
        return _AcquireContext(self, timeout)

    async def _acquire(self, timeout: float | None) -> Any:
        if self._closed:
            raise PoolClosed("pool is closed (overlord_pool: the application closed it, or the test has ended)")
        task = asyncio.current_task()
        # The task that holds the connection may acquire again (a repository calling another): a nested
        # savepoint. Any other task waits its turn.
        outer = not (self._holds and task is not None and self._holder is task)
        if outer:
            limit = self._wait if timeout is None else timeout
            try:
                if self._lock.locked():
                    await asyncio.wait_for(self._lock.acquire(), limit)
                else:
                    await self._lock.acquire()  # no waiting: no timer task either
            except asyncio.TimeoutError:
                if timeout is not None:
                    raise  # what asyncpg raises when the caller gave the timeout
                raise asyncio.TimeoutError(
                    f"overlord_pool: acquire() waited {limit:g} s for the test's one connection, held by another task "
                    "all that time. Code that holds a connection while it waits for a second one (a task it started "
                    "that acquires too) cannot run on one connection; give that code overlord_fresh_db and a real pool."
                ) from None
            self._holder = task
        self._count += 1
        savepoint = f"overlord_pool_{self._count}"
        try:
            await self._conn.execute(f"SAVEPOINT {savepoint}")
        except BaseException:
            if outer:
                self._unlock()
            raise
        self._holds.append(_Hold(savepoint, outer))
        return self._conn

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        """Keep what the last acquire did (or undo it, if its transaction failed) and hand the connection on."""
        if connection is not self._conn:
            raise asyncpg.InterfaceError("overlord_pool.release(): this connection was not acquired from this pool")
        await self._end(failed=False)

    async def _end(self, failed: bool) -> None:
        if not self._holds:
            raise asyncpg.InterfaceError("overlord_pool.release(): no connection is acquired")
        hold = self._holds.pop()
        try:
            if self._conn.is_closed() or not self._conn.is_in_transaction():
                return  # the test's transaction is gone (a raw COMMIT): overlord_db reports it at teardown
            if not failed:
                try:
                    await self._conn.execute(f"RELEASE SAVEPOINT {hold.savepoint}")
                    return
                except asyncpg.PostgresError:
                    pass  # a statement failed inside and the code carried on: undo, as a failed transaction
            await self._conn.execute(f"ROLLBACK TO SAVEPOINT {hold.savepoint}; RELEASE SAVEPOINT {hold.savepoint}")
        finally:
            if hold.outer:
                self._unlock()

    def _unlock(self) -> None:
        self._holder = None
        self._lock.release()

    # -- the rest of asyncpg.Pool -------------------------------------------------------------
    def transaction(self) -> _AcquireContext:
        """``async with pool.transaction() as conn:``: an acquire, whose savepoint is the transaction."""
        return _AcquireContext(self, None)

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        async with self.acquire() as conn:
            return str(await conn.execute(query, *args, timeout=timeout))

    async def executemany(self, command: str, args: Sequence[Sequence[Any]], *, timeout: float | None = None) -> None:
        async with self.acquire() as conn:
            await conn.executemany(command, args, timeout=timeout)

    async def fetch(self, query: str, *args: Any, timeout: float | None = None, record_class: Any = None) -> list[Any]:
        async with self.acquire() as conn:
            return list(await conn.fetch(query, *args, timeout=timeout, record_class=record_class))

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None, record_class: Any = None) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args, timeout=timeout, record_class=record_class)

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args, column=column, timeout=timeout)

    async def fetchmany(self, query: str, args: Sequence[Sequence[Any]], *, timeout: float | None = None,
                        record_class: Any = None) -> list[Any]:
        async with self.acquire() as conn:
            return list(await conn.fetchmany(query, args, timeout=timeout, record_class=record_class))

    async def copy_records_to_table(self, table_name: str, **kwargs: Any) -> str:
        async with self.acquire() as conn:
            return str(await conn.copy_records_to_table(table_name, **kwargs))

    async def close(self) -> None:
        self._closed = True

    def terminate(self) -> None:
        self._closed = True

    def is_closing(self) -> bool:
        return self._closed

    def get_size(self) -> int:
        return 1

    def get_min_size(self) -> int:
        return 1

    def get_max_size(self) -> int:
        return 1

    def get_idle_size(self) -> int:
        return 0 if self._holds else 1

    def expire_connections(self) -> None:
        """Nothing to expire: the one connection belongs to the test."""

    def __await__(self) -> Generator[Any, None, OverlordPool]:  # ``pool = await asyncpg.create_pool(...)``'s shape
        if False:  # pragma: no cover - makes this a generator
            yield
        return self

    async def __aenter__(self) -> OverlordPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<OverlordPool over the test's connection{' (closed)' if self._closed else ''}>"


@dataclass
class _AcquireContext:
    pool: OverlordPool
    timeout: float | None
    conn: Any = field(default=None, repr=False)

    async def __aenter__(self) -> Any:
        self.conn = await self.pool._acquire(self.timeout)
        return self.conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        await self.pool._end(failed=kind is not None)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.pool._acquire(self.timeout).__await__()

