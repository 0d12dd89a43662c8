"""asyncpg connections for tests, one per event loop; under function-scoped loops, through the relay."""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import asyncpg

from .. import urls
from ..errors import ServerError
from . import quick
from . import vectors as vector_types
from .handoff import Handoff
from .relay import Relay
from .sync import END_AND_BEGIN, FRESH, RENEW, RESET_SESSION, SAVEPOINT

# What the end of a test raises when its transaction was ended behind the fixture's back (see sync.END_TEST).
ENDED = (asyncpg.exceptions.NoActiveSQLTransactionError, asyncpg.exceptions.InvalidSavepointSpecificationError)

# What a lost connection raises: the connection classes, a terminated backend (57P01), a server
# shutting down or starting (57P03), the socket itself, a server that cannot be reached.
ASYNC_LOST = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.exceptions.AdminShutdownError,
              asyncpg.exceptions.CannotConnectNowError, OSError, ServerError)


@dataclass
class _Kept:
    top: Any  # asyncpg's Transaction, begun on the connection's first test
    primed_at: float | None = None  # when the last test's end began the next one's transaction


@dataclass
class AsyncConnections:
    """asyncpg connections keyed by event loop: an asyncpg connection belongs to the loop that made it.

    With a wider loop scope one connection serves every test of that loop. With
    a function-scoped loop every test needs a new connection: it is lent a
    PostgreSQL backend kept from an earlier test (see ``handoff``; a new backend
    costs ~1.3 ms), or, in a loop the handoff cannot hook, it goes through the
    in-process relay, which keeps backends the same way but stands between.
    """

    url: Callable[[], str] = field(repr=False)
    by_loop: dict[Any, asyncpg.Connection] = field(default_factory=dict, repr=False)
    handoff: Handoff | None = None
    relay: Relay | None = None  # for loops the handoff cannot hook
    vectors: bool = False  # register pgvector's codecs on each new connection (when the package is there)
    # connect() keywords through the relay, parsed once; holds the password, so never in a repr
    _relayed: dict[str, Any] | None = field(default=None, repr=False)
    # The same to the server itself, for the handoff: the URL they are for, the keywords (None: a URL that
    # backends kept between tests cannot serve, see urls.keepable), the backends' key, and the connect()
    # that asyncpg.connect's arguments were worked out for once (see ``quick``).
    _direct: tuple[str, dict[str, Any] | None, str, Callable[[], Any] | None] | None = field(default=None, repr=False)
    _vector_schema: tuple[str | None] | None = field(default=None, repr=False)  # looked up on the first connection
    _connection_class: Any = field(default=None, repr=False)
    # Per kept connection: the transaction asyncpg began on its first test, and when the last test's end began
    # the next one's. asyncpg nests the code under test's ``conn.transaction()`` in that one (as savepoints)
    # for as long as the connection lives; underneath, each test's end rolls back and begins again, in
    # one message, as the psycopg2 connection does.
    _tests: dict[Any, _Kept] = field(default_factory=dict, repr=False)

    def _relay_kwargs(self) -> dict[str, Any]:
        if self.relay is None or self._relayed is None or not self.relay.thread.is_alive():
            # A relay whose thread has died (a defect in it) is replaced: its clients would wait forever.
            if self.relay is not None:
                self.relay.close()
            url = urls.normalize(self.url())
            parts = urls.dsn_parts(url)
            host = str(parts["host"] or "localhost")
            target: object = f"{host}/.s.PGSQL.{parts['port']}" if host.startswith("/") else (host, parts["port"])
            self.relay = Relay(target, begin_ahead=FRESH)  # so the fixture's BEGIN costs no round trip
            self.relay.start()
            # Keywords rather than a DSN: asyncpg parses a DSN (and looks for a service file) on every connect.
            self._relayed = {"host": os.path.dirname(self.relay.path), "port": 5432, "user": parts["user"],
                             "password": parts["password"], "database": parts["dbname"]}
        return self._relayed

    def _direct_kwargs(self) -> dict[str, Any] | None:
        return self._direct_for(self.url())[1]

    def _direct_key(self) -> str:
        """What the lent backends are kept by: where the connections go (the URL without its password)."""
        return self._direct_for(self.url())[2]

    def _direct_for(self, raw: str) -> tuple[str, dict[str, Any] | None, str, Callable[[], Any] | None]:
        if self._direct is None or self._direct[0] != raw:
            url = urls.normalize(raw)
            kwargs = None
            if urls.keepable(url):
                parts = urls.dsn_parts(url)
                # Keywords rather than a DSN: asyncpg parses a DSN (and looks for a service file) on every
                # connect. No TLS: the socket is a local backend's (see urls.keepable), as the relay's are.
                kwargs = {"host": str(parts["host"] or "localhost"), "port": parts["port"], "user": parts["user"],
                          "password": parts["password"], "database": parts["dbname"], "ssl": False}
            self._direct = (raw, kwargs, urls.mask(url),
                            quick.connector(kwargs, self._connection_class) if kwargs is not None else None)
        return self._direct

    def _lender(self) -> Handoff:
        if self.handoff is None:
            kwargs = self._direct_kwargs()
            assert kwargs is not None
            host, port = kwargs["host"], kwargs["port"]
            self.handoff = Handoff(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port),
                                   begin_ahead=FRESH)  # so the fixture's BEGIN costs no round trip
        return self.handoff

    def lent(self, conn: asyncpg.Connection) -> bool:
        """Whether ``conn`` talks to a lent backend (whose end says itself whether its test committed)."""
        return self.handoff is not None and conn in self.handoff.lent

    async def begin_alone(self, conn: asyncpg.Connection) -> None:
        """Begin the transaction of a test with a loop of its own; on a connection not lent, a savepoint
        too, which the test's end asks the server about (``release``)."""
        await conn.transaction().start()
        if not self.lent(conn):
            await conn.execute(f"SAVEPOINT {SAVEPOINT}")

    def release(self, conn: asyncpg.Connection, loop: asyncio.AbstractEventLoop) -> bool | None:
        """End a connection of a test with a loop of its own (``loop``, idle): whether the test's transaction
        was still open; None when that cannot be known (the test closed the connection, or left a query
        running, which may have committed). A connection not lent began a savepoint after its BEGIN, and
        the server says whether it is still there: a COMMIT, even one followed by a new BEGIN, took it away."""
        try:
            if self.lent(conn):
                assert self.handoff is not None
                return self.handoff.release(conn)
            if conn.is_closed():
                return None
            try:
                loop.run_until_complete(conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}"))
                return True
            except ENDED:
                return False
            except asyncpg.InterfaceError:  # busy with a query the test left running
                return None
            finally:
                conn.terminate()  # the relay resets its backend in the background
        finally:
            # The connection and the transaction begun on it refer to each other: left so, the ended
            # connection (its protocol, codecs, the loop's transport, the loop) waits for the cyclic
            # collector, whose passes over pytest's heap cost ~0.05 ms a test. ``_top_xact`` is asyncpg's
            # own attribute (private, unchanged since its first releases).
            if getattr(conn, "_top_xact", None) is not None:
                conn._top_xact = None

    async def get(self, keep: bool) -> asyncpg.Connection:
        """The running loop's connection (made now if it has none), or a new one for one test: lent a kept
        backend, through the relay, or (for a URL no backend is kept for) a connection of its own."""
        loop = asyncio.get_running_loop()
        conn = self.by_loop.get(loop)
        if conn is not None and not conn.is_closed():
            return conn
        vectors = self.vectors and vector_types.available()
        if vectors and self._connection_class is None:
            self._connection_class = vector_types.asyncpg_class()  # its connections share their type lookups
        extra = {"connection_class": self._connection_class} if vectors else {}
        if keep:
            conn = await asyncpg.connect(urls.normalize(self.url()), **extra)
            self.by_loop[loop] = conn
        elif self._direct_kwargs() is None:  # a URL that kept backends cannot serve: a connection of its own
            conn = await asyncpg.connect(urls.normalize(self.url()), **extra)
        elif Handoff.lendable(loop):
            # No local holds the keywords (or the URL): they carry the password, and --showlocals shows locals.
            conn = await self._lender().connect(self._direct_key(), lambda: asyncpg.connect(**self._direct_kwargs() or {},
                                                                                               **extra),
                                                self._direct_for(self.url())[3])
        else:
            conn = await asyncpg.connect(**self._relay_kwargs(), **extra)
        if vectors:
            await self._register_vectors(conn)
        return conn

    async def _register_vectors(self, conn: asyncpg.Connection) -> None:
        if self._vector_schema is None:
            self._vector_schema = (await vector_types.vector_schema_asyncpg(conn),)
        await vector_types.register_asyncpg(conn, self._vector_schema[0])

    def primed(self, loop: Any) -> asyncpg.Connection | None:
        """``loop``'s connection, when the last test's end began a transaction young enough for the next test."""
        conn = self.by_loop.get(loop)
        if conn is None or conn.is_closed():
            return None
        held = self._tests.get(conn)
        if held is None or held.primed_at is None or time.monotonic() - held.primed_at > FRESH:
            return None
        held.primed_at = None  # taken
        return conn

    async def begin_test(self, conn: asyncpg.Connection) -> None:
        held = self._tests.get(conn)
        if held is None:  # the connection's first test
            top = conn.transaction()
            await top.start()
            await conn.execute(f"SAVEPOINT {SAVEPOINT}")
            self._tests[conn] = _Kept(top)
        elif held.primed_at is not None:  # begun at the last test's end, too long ago: now() would be stale
            held.primed_at = None
            await conn.execute(RENEW)

    async def end_test(self, conn: asyncpg.Connection) -> bool:
        """Roll the test back and begin the next one's transaction; False (session reset) when it had committed."""
        held = self._tests[conn]
        try:
            await conn.execute(END_AND_BEGIN)
        except ENDED:
            del self._tests[conn]
            await held.top.rollback()  # asyncpg's own bookkeeping: no transaction of its is open any more
            await conn.execute(RESET_SESSION)
            return False
        held.primed_at = time.monotonic()
        return True

    def forget(self, conn: asyncpg.Connection) -> None:
        self._tests.pop(conn, None)
        if self.handoff is not None:
            self.handoff.discard(conn)
        for loop, known in list(self.by_loop.items()):
            if known is conn:
                del self.by_loop[loop]

    async def close_in(self, loop: Any) -> None:
        """Close the connection of ``loop`` from inside it."""
        conn = self.by_loop.pop(loop, None)
        self._tests.pop(conn, None)
        if conn is None or conn.is_closed():
            return
        try:
            await conn.close(timeout=5)
        except Exception:  # noqa: BLE001 - lost already: nothing to close politely
            conn.terminate()

    def close_for(self, loop: Any) -> None:
        """Close the connection of ``loop`` from outside it (its scope is ending, the loop idle)."""
        conn = self.by_loop.pop(loop, None)
        self._tests.pop(conn, None)
        if conn is None or conn.is_closed():
            return
        try:
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(conn.close(timeout=5))
                return
        except Exception:
            pass
        try:
            conn.terminate()
        except Exception:
            pass

    def close_all(self) -> None:
        for loop in list(self.by_loop):
            self.close_for(loop)
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if self.handoff is not None:
            self.handoff.close()  # kept for the connections lent now, which it still ends
        self._relayed = self._direct = None
