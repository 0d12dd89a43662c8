"""PostgreSQL backends kept between tests and lent to the asyncpg connection each new event loop makes.

An asyncpg connection belongs to the loop that made it, so under pytest-asyncio's default
function-scoped loop every test needs a new one, and a new PostgreSQL backend costs ~1.3 ms. Here a
connection is made the way asyncpg always makes one, except that the socket it asks its loop for is a
backend kept from an earlier test: asyncpg's startup packet is answered with the greeting that backend
gave when it started, and from then on asyncpg talks to the backend directly, with no relay between.
When the test ends the backend is reset (ROLLBACK, the session's state, ahead the next test's BEGIN, in
one message; it keeps the prepared statements: see ``statements``) while pytest moves on; the next lend
reads and checks that answer, so a backend that failed, was ended by the server or was left in the
middle of a query is closed, never lent again.

The one hook is the loop's own: for one ``asyncpg.connect`` the loop object's ``create_unix_connection``
and ``create_connection`` are replaced by a function that lends, and put back at its first call.
Should asyncpg ever connect another way, the hook is not called and the connection is an ordinary new
one. A loop whose methods cannot be replaced (uvloop's) is not ``lendable``; the caller uses the relay.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from . import protocol
from .statements import Kept, Lending, close, settle

TERMINATE = b"X\x00\x00\x00\x04"
RESET_TIMEOUT = 5.0  # a backend whose reset has not been answered by then is closed
HOOKED = ("create_unix_connection", "create_connection")


@dataclass(eq=False)
class _Backend:
    sock: socket.socket
    startup: bytes  # what asyncpg sent when it started: it serves only connections that send the same
    greeting: bytes  # the ParameterStatus and BackendKeyData messages it answered with
    owed: int  # ReadyForQuery answers its reset still owes
    reset_at: float  # when that reset, and so its BEGIN, was sent
    kept: Kept  # the prepared statements it keeps for the next connection (see ``statements``)


class _Lend(asyncio.Protocol):
    """One asyncpg connection's socket: asyncpg's transport, and the protocol of the loop's transport."""

    def __init__(self, backend: _Backend | None, begun: bool | None, begin: bool) -> None:
        self.backend = backend  # None: a new backend, whose handshake goes through both ways
        self.begun = begun  # the reset began a transaction: True when fresh enough to answer BEGIN with
        self.inner: Any = None  # asyncpg's protocol
        self.transport: Any = None  # the loop's transport
        self.startup: bytes | None = backend.startup if backend is not None else None
        self.greeting = bytearray(backend.greeting if backend is not None else b"")
        self.greeted = backend is not None  # the server's greeting seen (or replayed)
        self.failed, self.handshake = False, b""
        self.hidden = 0  # answers to a ROLLBACK of ours still to take out of what the server says
        self.held = b""  # what arrived while some were
        self.said = protocol.Watch()  # what the server (or we, for it) said to asyncpg
        self.quiet = True  # nothing sent since the server last said it was ready
        self.begin, self.owed = begin, 0  # the reset (when the backend is taken back): BEGIN too; its answers owed
        self.statements = Lending(backend.kept if backend is not None else Kept())
        self.kept: socket.socket | None = None  # the backend's socket, taken back from the loop and reset
        self.reset_at = 0.0
        self.spent = self.startup_sent = False  # its handoff closed meanwhile (not kept); asyncpg's startup sent

    # -- to the loop: the protocol of its transport ---------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.inner.connection_made(self)

    def data_received(self, data: bytes) -> None:
        if not self.greeted:
            self._record(data)
        if self.hidden:
            data = self._unhide(data)
            if not data:
                return
        self.said.feed(data)
        self.quiet = self.said.ready
        self.statements.incoming(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def _record(self, data: bytes) -> None:
        """A new backend's greeting, to replay to the connections it is lent to later."""
        messages, self.handshake = protocol.split(self.handshake + data)
        for kind, message in messages:
            if kind in (b"S", b"K"):
                self.greeting += message
            elif kind == b"E":
                self.failed = True
            elif kind == b"Z":
                self.greeted, self.handshake = True, b""
                return

    def _unhide(self, data: bytes) -> bytes:
        messages, self.held = protocol.split(self.held + data)
        shown, self.hidden = protocol.unhide(messages, self.hidden)
        rest, self.held = (b"", self.held) if self.hidden else (self.held, b"")
        return b"".join(message for _, message in shown) + rest

    # -- to asyncpg: its transport ----------------------------------------------------------------
    def write(self, data: Any) -> None:
        data = bytes(data)
        if not self.startup_sent:
            self.startup_sent = True
            if self.backend is not None:  # a kept backend: asyncpg's startup is answered here
                self._greet(data)
                return
            self.startup = data  # a new backend: it goes to the server, and is recorded
        elif data == TERMINATE:  # the backend stays: the connection is taken off it instead
            self._detach()
            return
        elif self.greeted:
            data, answer = self.statements.outgoing(data)
            if answer:  # a statement the backend keeps: prepared already
                self._answer(answer)
                return
            if self.begun is not None:
                fresh, self.begun = self.begun, None
                if fresh and data == protocol.BEGIN:
                    self._answer(protocol.BEGUN)
                    return
                data, self.hidden = protocol.ROLLBACK + data, self.hidden + 1
        self.quiet = False
        self.transport.write(data)

    def _greet(self, startup: bytes) -> None:
        """asyncpg's startup packet on a kept backend: answered with the greeting that backend gave."""
        if startup != self.startup:  # other connection parameters: not this backend's to serve
            self.failed = True
            self._answer(protocol.error_response("the test's connection parameters changed"))
            return
        self._answer(protocol.AUTH_OK + bytes(self.greeting) + protocol.READY_IDLE)

    def _answer(self, data: bytes) -> None:
        """What the server would have said, said by us: the same way, from the loop, after this write."""
        self.said.feed(data)
        asyncio.get_running_loop().call_soon(self.inner.data_received, data)

    def writelines(self, buffers: Any) -> None:
        self.write(b"".join(bytes(b) for b in buffers))

    def close(self) -> None:
        self._detach()

    abort = close

    def _detach(self) -> None:
        """Take the backend's socket back and reset it (when it is waiting for a query); end the loop's transport."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if (self.quiet and self.greeted and not self.failed and not self.hidden and not self.spent
                and self.startup is not None):
            sock = transport.get_extra_info("socket")
            kept, sent = socket.socket(sock.family, sock.type, fileno=os.dup(sock.fileno())), 0
            kept.setblocking(False)  # whatever socket.setdefaulttimeout() says
            # The session ends now, as with a real close; kept statements need the test's transaction still open.
            reset, self.owed = self.statements.reset(self.said.status == b"T" and not self.said.ended, self.begin,
                                                     self.greeting)
            with contextlib.suppress(OSError):
                sent = kept.send(reset)
            if sent == len(reset):
                self.kept, self.reset_at = kept, time.monotonic()
            else:
                kept.close()
        transport.abort()

    def is_closing(self) -> bool:
        return bool(self.transport.is_closing())

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()


@dataclass(eq=False)
class Handoff:
    """The kept backends of one server (``target``: a unix socket path or (host, port)), and the lends."""

    target: object
    begin_ahead: float | None = None  # a reset begins the next test's transaction; fresh for that long
    idle: dict[str, list[_Backend]] = field(default_factory=dict, repr=False)  # by the connections' key
    lent: dict[Any, tuple[str, _Lend]] = field(default_factory=dict, repr=False)

    @staticmethod
    def lendable(loop: asyncio.AbstractEventLoop) -> bool:
        return hasattr(loop, "__dict__")  # its methods can be replaced on the object

    async def connect(self, key: str, connect: Callable[[], Awaitable[Any]],
                      quick: Callable[[], Awaitable[Any]] | None = None) -> Any:
        """``connect()``, an ``asyncpg.connect`` call to the server itself, on a backend kept from an earlier
        call with the same ``key`` (which must stand for the same connection parameters), if there is one;
        there, ``quick()`` instead when given (the same connection, made without asyncpg's argument parsing)."""
        loop = asyncio.get_running_loop()
        backend, begun = self._take(key)
        lend = _Lend(backend, begun, begin=self.begin_ahead is not None)
        originals = {name: getattr(loop, name) for name in HOOKED}
        own = {name: loop.__dict__[name] for name in HOOKED if name in loop.__dict__}  # patched by someone else

        def restore() -> None:
            for name in HOOKED:
                loop.__dict__.pop(name, None)
            loop.__dict__.update(own)

        def hook(name: str) -> Callable[..., Awaitable[Any]]:
            async def lend_to(protocol_factory: Callable[[], Any], *args: Any, **kwargs: Any) -> Any:
                if not getattr(protocol_factory, "__module__", "").startswith("asyncpg."):
                    return await originals[name](protocol_factory, *args, **kwargs)  # not asyncpg's: not ours
                restore()
                lend.inner = protocol_factory()
                try:
                    if backend is None:
                        await originals[name](lambda: lend, *args, **kwargs)
                    else:
                        create = originals["create_unix_connection" if backend.sock.family == socket.AF_UNIX
                                           else "create_connection"]
                        await create(lambda: lend, sock=backend.sock)
                except BaseException:
                    lend.inner = None  # not lent: should asyncpg try another address, that one is its own
                    if backend is not None:
                        backend.sock.close()
                    raise
                return lend, lend.inner  # asyncpg's transport is the lend
            return lend_to

        for name in HOOKED:
            setattr(loop, name, hook(name))
        try:
            conn = await (quick() if quick is not None and backend is not None else connect())
        except BaseException:
            if backend is not None and lend.inner is None:
                backend.sock.close()
            raise
        finally:
            restore()
        if lend.inner is not None:
            self.lent[conn] = (key, lend)
        return conn

    def release(self, conn: Any) -> bool | None:
        """End ``conn`` and keep its backend: whether the test's transaction was still open. None: not known
        (not lent, or left in the middle of something, which may have committed, and is cancelled)."""
        key, lend = self.lent.pop(conn, (None, None))
        if key is None or lend is None:
            return None
        # A cancel request of asyncpg's still on its way would reach whatever query the backend runs next.
        cancelling = any(not task.done() for task in getattr(conn, "_cancellations", ()))
        conn.terminate()
        open_ = lend.said.in_transaction() if lend.quiet or lend.said.ended else None
        if lend.kept is None:
            if not lend.quiet:
                protocol.cancel(self.target, bytes(lend.greeting))
        elif cancelling or lend.startup is None:
            lend.kept.close()
        else:
            self.idle.setdefault(key, []).append(_Backend(lend.kept, lend.startup, bytes(lend.greeting), lend.owed,
                                                          lend.reset_at, lend.statements.kept))
        return open_

    def discard(self, conn: Any) -> None:
        """Forget a lent connection that was lost: its backend is not kept."""
        _, lend = self.lent.pop(conn, (None, None))
        if lend is not None and lend.kept is not None:
            lend.kept.close()

    def _take(self, key: str) -> tuple[_Backend | None, bool | None]:
        idle = self.idle.get(key, [])
        while idle:
            backend = idle.pop()
            if self._ready(backend):
                if self.begin_ahead is None:
                    return backend, None
                return backend, time.monotonic() - backend.reset_at <= self.begin_ahead
            backend.sock.close()
        return None, None

    @staticmethod
    def _ready(backend: _Backend) -> bool:
        """The reset's answers read and without an error, the prepared statements it does not keep closed,
        and nothing after them: not even the end."""
        sock, deadline = backend.sock, time.monotonic() + RESET_TIMEOUT
        try:
            answers = protocol.answers(sock, backend.owed, deadline)
            if answers is not None and (stale := settle(backend.kept, answers)):
                sock.sendall(b"".join(close(name) for name in sorted(stale)) + protocol.SYNC)
                answers = protocol.answers(sock, 1, deadline)
        except OSError:  # the wait's end among them
            return False
        finally:
            sock.setblocking(False)
        if answers is None:
            return False
        try:
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False  # something of the server's own, or the end: it has ended the backend

    def close(self) -> None:
        """Close the kept backends; those lent now are closed, not kept, when their connections end."""
        for backend in [b for idle in self.idle.values() for b in idle]:
            backend.sock.close()
        self.idle.clear()
        for _, lend in self.lent.values():
            lend.spent = True
            if lend.kept is not None:
                lend.kept.close()
                lend.kept = None
