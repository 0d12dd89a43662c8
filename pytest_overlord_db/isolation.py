"""One process's test databases, usable without pytest: the stack started on first use, and the per-test
lifecycle of the transactional connections (begin, commit detection, rollback, session reset).

Both transactional kinds run on one per-process "work" database cloned from
the template. A test that ends the transaction behind the fixture's back has
its writes committed there; ``end_*`` says so and the work database is
rebuilt from the template, so nothing leaks into later tests.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

from . import interrupts
from .config import Settings
from .connections import RESET_SESSION, AsyncConnections, SavepointConnection, connect_sync
from .migrators import Migrator
from .runtime import Runtime, ServerInfo


@dataclass
class AsyncTest:
    """An asyncpg connection handed to one test, and what ending the test needs."""

    conn: Any  # asyncpg.Connection
    transaction: Any
    keep: bool  # the connection serves the next test of its loop (a wider loop scope)
    loop: asyncio.AbstractEventLoop
    new: bool  # made for this test (the caller closes it when its loop's scope ends)


class Isolation:
    def __init__(self, settings: Settings, backend: str | None = None, reason: str = "",
                 report: Callable[[str], None] | None = None, migrator: Migrator | None = None) -> None:
        self.settings = settings
        self.report = report
        self.migrator = migrator
        self.backend, self.reason = backend, reason
        self.runtime: Runtime | None = None
        self.sync_conn: SavepointConnection | None = None
        self.async_conns: AsyncConnections | None = None
        self._roundtrip: Any = None

    def ensure_runtime(self) -> tuple[Runtime, ServerInfo]:
        if self.runtime is None:
            runtime = Runtime(self.settings, self.backend, self.reason, self.report, self.migrator)
            runtime.start()  # stops what it started if it fails
            self.runtime = runtime
        assert self.runtime.info is not None
        return self.runtime, self.runtime.info

    # -- psycopg2 -----------------------------------------------------------------------
    def begin_sync(self) -> SavepointConnection:
        if self.sync_conn is None or self.sync_conn.closed:
            runtime, _ = self.ensure_runtime()
            self.sync_conn = connect_sync(runtime.work_db_url())
            interrupts.register(self.sync_conn)  # Ctrl-C ends a test's long query too
        self.sync_conn.begin_test()
        return self.sync_conn

    def end_sync(self, conn: SavepointConnection) -> bool:
        """Roll the test back; False (and the work database rebuilt) when it had committed."""
        if conn.end_test():
            return True
        self.reset_work_db()
        return False

    # -- asyncpg ------------------------------------------------------------------------
    async def begin_async(self, keep: bool) -> AsyncTest:
        runtime, _ = self.ensure_runtime()
        if self.async_conns is None:
            self.async_conns = AsyncConnections(runtime.work_db_url)
        conn, new = await self.async_conns.get(keep)
        transaction = conn.transaction()
        await transaction.start()
        return AsyncTest(conn, transaction, keep, asyncio.get_running_loop(), new)

    def end_async(self, test: AsyncTest) -> bool:
        """Called outside the loop once the test is done; False (work database rebuilt) when it committed."""
        conn = test.conn
        committed = not conn.is_closed() and not conn.is_in_transaction()
        if test.keep and not conn.is_closed():
            test.loop.run_until_complete(_rollback_and_reset(conn, test.transaction))
        elif not conn.is_closed():
            # A relayed connection: just drop it. The relay rolls its backend back
            # (and resets it) in the background; no round trip here.
            conn.terminate()
        if conn.is_closed() and self.async_conns is not None:
            self.async_conns.forget(conn)
        if committed:
            self.reset_work_db()
        return not committed

    def close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.async_conns is not None:
            self.async_conns.close_for(loop)

    # -- round trip and shutdown ------------------------------------------------------
    def roundtrip_report(self) -> Any:
        """The round trip of every migration, run once per process on this run's server."""
        if self._roundtrip is None:
            from . import roundtrip

            runtime, _ = self.ensure_runtime()
            assert runtime.templates is not None
            self._roundtrip = roundtrip.run(runtime.templates, runtime.migrator, self.settings.accepted)
        return self._roundtrip

    def drop_connections(self) -> None:
        if self.sync_conn is not None:
            interrupts.close(self.sync_conn)
        self.sync_conn = None
        if self.async_conns is not None:
            self.async_conns.close_all()

    def reset_work_db(self) -> None:
        self.drop_connections()
        if self.runtime is not None:
            self.runtime.reset_work_db()

    def shutdown(self) -> None:
        try:
            self.drop_connections()
        finally:
            if self.runtime is not None:
                self.runtime.stop()
                self.runtime = None


async def _rollback_and_reset(conn: Any, transaction: Any) -> None:
    if conn.is_in_transaction():
        await transaction.rollback()
    await conn.execute(RESET_SESSION)
