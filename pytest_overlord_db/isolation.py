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
from typing import TYPE_CHECKING, Any, Callable

from . import interrupts
from .config import Settings
from .connections import ASYNC_LOST, SYNC_LOST, AsyncConnections, SavepointConnection, connect_sync
from .errors import ServerError
from .migrators import Migrator
from .runtime import FreshDatabase, Runtime, ServerInfo

if TYPE_CHECKING:
    from .verdicts import Report


@dataclass
class AsyncTest:
    """An asyncpg connection handed to one test, and what ending the test needs."""

    conn: Any  # asyncpg.Connection
    keep: bool  # the connection serves the next test of its loop (a wider loop scope)
    loop: asyncio.AbstractEventLoop


class Isolation:
    def __init__(self, settings: Settings, backend: str | None = None, reason: str = "",
                 report: Callable[[str], None] | None = None, migrator: Migrator | None = None) -> None:
        self.settings = settings
        self.report = report
        self.detail: Callable[[str], None] | None = None  # what only a verbose run shows
        self.migrator = migrator
        self.backend, self.reason = backend, reason
        self.runtime: Runtime | None = None
        self.sync_conn: SavepointConnection | None = None
        self.async_conns: AsyncConnections | None = None
        self.psycopg: Any = None  # PsycopgConnections, made on first use: psycopg 3 is an optional dependency

    def ensure_runtime(self) -> tuple[Runtime, ServerInfo]:
        if self.runtime is None:
            runtime = Runtime(self.settings, self.backend, self.reason, self.report, self.migrator)
            runtime.detail = self.detail
            runtime.start()  # stops what it started if it fails
            self.runtime = runtime
        if self.runtime.gone is not None:
            raise self.runtime.gone
        assert self.runtime.info is not None
        return self.runtime, self.runtime.info

    # -- psycopg2 -----------------------------------------------------------------------
    def begin_sync(self) -> SavepointConnection:
        runtime, _ = self.ensure_runtime()
        for attempt in range(2):
            try:
                if self.sync_conn is None or self.sync_conn.closed:
                    self.sync_conn = connect_sync(runtime.work_db_url(), vectors=self.settings.pgvector_types)
                    interrupts.register(self.sync_conn)  # Ctrl-C ends a test's long query too
                self.sync_conn.begin_test()
                return self.sync_conn
            except SYNC_LOST as exc:
                self._drop_sync()
                runtime.check_alive(exc)  # alive: its backend was terminated; connect again
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def end_sync(self, conn: SavepointConnection) -> bool:
        """Roll the test back; False (and the work database rebuilt) when it had committed."""
        try:
            if conn.end_test():
                return True
        except SYNC_LOST as exc:
            self._drop_sync()
            self.ensure_runtime()[0].check_alive(exc)
            self.reset_work_db()  # what the lost session did is unknown: start again from the template
            return True
        self.reset_work_db()
        return False

    def _drop_sync(self) -> None:
        if self.sync_conn is not None:
            interrupts.close(self.sync_conn)
        self.sync_conn = None

    # -- psycopg 3 ----------------------------------------------------------------------
    def begin_psycopg(self, kind: str) -> Any:
        """A psycopg 3 connection (``kind`` sync or async) in a new test transaction; psycopg2's semantics."""
        from .connections.psycopg3 import PSYCOPG_LOST, PsycopgConnections

        runtime, _ = self.ensure_runtime()
        if self.psycopg is None:
            self.psycopg = PsycopgConnections(runtime.work_db_url, vectors=self.settings.pgvector_types)
        for attempt in range(2):
            try:
                return self.psycopg.begin_sync() if kind == "sync" else self.psycopg.begin_async()
            except PSYCOPG_LOST as exc:
                self.psycopg.drop(self.psycopg.sync if kind == "sync" else self.psycopg.aio)
                runtime.check_alive(exc)  # alive: its backend was terminated; connect again
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def end_psycopg(self, conn: Any) -> bool:
        """Roll the test back; False (and the work database rebuilt) when it had committed."""
        from .connections.psycopg3 import PSYCOPG_LOST

        try:
            if self.psycopg.end(conn):
                return True
        except PSYCOPG_LOST as exc:
            self.psycopg.drop(conn)
            self.ensure_runtime()[0].check_alive(exc)
            self.reset_work_db()
            return True
        self.reset_work_db()
        return False

    # -- asyncpg ------------------------------------------------------------------------
    def begin_kept(self, loop: asyncio.AbstractEventLoop) -> AsyncTest:
        """``overlord_db`` in a loop wider than the test, called between tests (``loop`` idle): no round trip,
        and no loop run, when the last test's end began this one's transaction a moment ago."""
        self.ensure_runtime()
        conn = self.async_conns.primed(loop) if self.async_conns is not None else None
        if conn is not None:
            return AsyncTest(conn, True, loop)
        return loop.run_until_complete(self.begin_async(keep=True))

    async def begin_async(self, keep: bool) -> AsyncTest:
        runtime, _ = self.ensure_runtime()
        if self.async_conns is None:
            self.async_conns = AsyncConnections(runtime.work_db_url, vectors=self.settings.pgvector_types)
        for attempt in range(2):
            conn = None
            try:
                conn = await self.async_conns.get(keep)
                if keep:
                    await self.async_conns.begin_test(conn)
                else:
                    await self.async_conns.begin_alone(conn)
                return AsyncTest(conn, keep, asyncio.get_running_loop())
            except ASYNC_LOST as exc:
                self._lost_async(conn)
                runtime.check_alive(exc)  # alive: its backend was terminated; connect again
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def end_async(self, test: AsyncTest) -> bool:
        """Called outside the loop once the test is done; False (work database rebuilt) when it committed."""
        conn = test.conn
        committed = False
        try:
            if test.keep and not conn.is_closed():
                assert self.async_conns is not None
                committed = not test.loop.run_until_complete(self.async_conns.end_test(conn))
            elif not test.keep:
                assert self.async_conns is not None
                still_open = self.async_conns.release(conn, test.loop)  # its backend is reset in the background
                if still_open is None:  # what the test did is not known: start again from the template, quietly
                    self.reset_work_db()
                committed = still_open is False
        except ASYNC_LOST as exc:
            self._lost_async(conn)
            self.ensure_runtime()[0].check_alive(exc)
            self.reset_work_db()  # what the lost session did is unknown: start again from the template
            return True
        if conn.is_closed() and self.async_conns is not None:
            self.async_conns.forget(conn)
        if committed:
            self.reset_work_db()
        return not committed

    def _lost_async(self, conn: Any) -> None:
        if conn is not None:
            conn.terminate()
            if self.async_conns is not None:
                self.async_conns.forget(conn)

    # -- fresh databases ------------------------------------------------------------------
    def fresh_db(self) -> FreshDatabase:
        runtime, _ = self.ensure_runtime()
        try:
            return runtime.fresh_db()
        except (*SYNC_LOST, ServerError) as exc:
            runtime.check_alive(exc)
            raise

    async def close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the connection made in ``loop``, from inside it (its scope is ending)."""
        if self.async_conns is not None:
            await self.async_conns.close_in(loop)

    # -- round trip and shutdown ------------------------------------------------------
    def roundtrip_report(self) -> Report:
        """The round trip of every migration, run on this run's server (the plugin keeps the report)."""
        from . import roundtrip

        runtime, _ = self.ensure_runtime()
        assert runtime.templates is not None
        return roundtrip.run(runtime.templates, runtime.migrator, self.settings.accepted,
                             irreversible=self.settings.irreversible, rows=self.settings.data_rows,
                             data_seed=self.settings.data_seed, seed_files=self.settings.seed_files(),
                             seed_env=self.settings.seed or "")

    def drop_connections(self) -> None:
        self._drop_sync()
        if self.psycopg is not None:
            self.psycopg.drop()
        if self.async_conns is not None:
            self.async_conns.close_all()

    def reset_work_db(self) -> None:
        self.drop_connections()
        if self.runtime is not None:
            self.runtime.reset_work_db()

    def shutdown(self) -> None:
        try:
            self.drop_connections()
            if self.psycopg is not None:
                self.psycopg.close()
        finally:
            if self.runtime is not None:
                self.runtime.stop()
                self.runtime = None
