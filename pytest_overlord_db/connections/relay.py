"""A local session-pooling relay: new client connections, reused PostgreSQL backends.

An asyncpg connection belongs to the event loop that made it, so under
pytest-asyncio's default function-scoped loop every test needs a new
connection, and a new PostgreSQL backend costs ~1.3 ms to start. The relay
listens on a unix socket in a private (0700) folder, served by one background
thread. A client whose startup packet has been seen before gets the server's
recorded greeting at once and is joined to an idle backend started with that
same packet; otherwise its startup and authentication (whatever the method) go
through to a new backend. When a client leaves (Terminate, or just closing its
socket), a query still running for it is cancelled, and its backend is reset
with ROLLBACK and DISCARD ALL (so no session state reaches the next client) and
kept. This is what PgBouncer's session pooling does, in-process.

Every socket is non-blocking and every write buffered, so a client that stops
reading or answering stalls only itself; handshakes and resets have deadlines,
and a backend whose reset fails or times out is closed, never reused. Each
client gets its own cancel key: a cancel request reaches the backend that
client holds at that moment, or nothing.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
from collections import deque

from . import protocol
from .leftovers import sweep_stale
from .protocol import Backend, Peer, Session
from .sockets import SocketLoop

HANDSHAKE_TIMEOUT = 30.0  # a client that has not finished authenticating by then is dropped
RESET_TIMEOUT = 5.0  # a backend not reset by then is closed
CANCEL_AFTER = 0.1  # a query a departed client left running is cancelled then
WAIT_FOR_RESET = 0.05  # a client waiting that long for a backend being reset gets a new one


class Relay(SocketLoop):
    """Relay to the server at ``target``: a unix socket path or (host, port)."""

    def __init__(self, target: object, begin_ahead: float | None = None) -> None:
        """``begin_ahead``: a reset backend begins its next client's transaction, and that client's
        ``BEGIN;`` is answered here within that many seconds of it (see protocol.first_on_begun): now()
        is then up to that much older than its BEGIN, as in the psycopg2 fixture's transactions."""
        self.target = target
        self.begin_ahead = begin_ahead
        self.path = ""
        self.greetings: dict[bytes, bytes] = {}  # startup packet -> the server's ParameterStatus messages
        self.idle: dict[bytes, list[Backend]] = {}
        self.resetting: set[Backend] = set()
        self.waiting: deque[Session] = deque()
        self.pending: set[Session] = set()  # sessions not yet active: they have a deadline
        self.by_key: dict[bytes, Session] = {}

    def __repr__(self) -> str:
        return f"Relay(path={self.path!r})"

    def start(self) -> str:
        sweep_stale(tempfile.gettempdir())
        folder = tempfile.mkdtemp(prefix="ovl-relay-")  # 0700: only this user may connect
        self.path = os.path.join(folder, ".s.PGSQL.5432")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(64)
        self._start_loop(listener)
        return folder

    def close(self) -> None:
        self._stop_loop()
        for backend in [b for idle in self.idle.values() for b in idle]:
            backend.server.sock.close()
        self.idle.clear()
        try:
            os.unlink(self.path)
            os.rmdir(os.path.dirname(self.path))
        except OSError:
            pass

    # -- the socket layer's hooks --------------------------------------------------------------
    def _accepted(self, peer: Peer) -> None:
        session = Session(peer, deadline=time.monotonic() + HANDSHAKE_TIMEOUT)
        peer.owner = session
        self.pending.add(session)

    def _received(self, peer: Peer) -> None:
        if isinstance(peer.owner, Session):
            self._from_client(peer.owner)
        elif isinstance(peer.owner, Backend):
            self._from_server(peer.owner)

    def _other(self, peer: Peer) -> Peer | None:
        owner = peer.owner
        if isinstance(owner, Session):
            return owner.backend.server if owner.backend is not None else None
        if isinstance(owner, Backend) and owner.session is not None:
            return owner.session.client
        return None

    def _next_deadline(self) -> float | None:
        deadlines = [s.deadline for s in self.pending if s.deadline] + [due for due, _ in self._begun_idle()] + [
            t for b in self.resetting for t in (b.deadline, b.cancel_at) if t]
        return min(deadlines) if deadlines else None

    def _begun_idle(self) -> list[tuple[float, Backend]]:
        """Pooled backends in the reset's begun transaction, with when it stops being fresh."""
        return [(b.begun_at + (self.begin_ahead or 0.0), b)
                for idle in self.idle.values() for b in idle if b.begun_at is not None]

    def _expire(self, now: float) -> None:
        for session in [s for s in self.pending if s.deadline and s.deadline <= now]:
            if session.state == "waiting":
                self.waiting.remove(session)
                self._new_backend(session)
            else:
                self._end(session)
        for backend in [b for b in self.resetting if b.deadline and b.deadline <= now]:
            self._lost(backend.server)
        for backend in [b for b in self.resetting if b.cancel_at and b.cancel_at <= now]:
            backend.cancel_at = None
            if backend.drain:
                self._cancel(backend)
        # Pooled backends leave begun transactions soon, so no idle_in_transaction/transaction_timeout ends them.
        for backend in [b for due, b in self._begun_idle() if due <= now]:
            backend.begun_at, backend.hidden = None, backend.hidden + 1
            self._send(backend.server, protocol.ROLLBACK)

    # -- conversations -------------------------------------------------------------------------
    def _from_client(self, session: Session) -> None:
        client = session.client
        if session.state == "startup":
            while session.state == "startup":
                packet, client.inbuf = protocol.split_startup(client.inbuf)
                if packet is None:
                    return
                code = protocol.packet_code(packet)
                if code in (protocol.SSL_REQUEST, protocol.GSS_REQUEST):
                    self._send(client, b"N")  # no encryption on a local socket
                elif code == protocol.CANCEL:
                    asker = self.by_key.get(protocol.key_of_cancel(packet))
                    if asker is not None and asker.backend is not None and asker.backend.state == "active":
                        self._cancel(asker.backend)
                    self._end(session)
                else:
                    session.startup = packet
                    self._checkout(session)
        elif session.state == "handshake" and session.backend is not None:
            data, client.inbuf = client.inbuf, b""  # its answers to the server's authentication requests
            self._send(session.backend.server, data)
        elif session.state == "active" and session.backend is not None:
            backend = session.backend
            messages, client.inbuf = protocol.split(client.inbuf)
            out = bytearray()
            if messages and backend.begun_at is not None:  # its transaction begun by the reset
                fresh = time.monotonic() - backend.begun_at <= (self.begin_ahead or 0.0)
                answer, messages, before = protocol.first_on_begun(messages, fresh)
                self._send(client, answer)
                out += before
                backend.hidden, backend.begun_at = backend.hidden + bool(before), None
            for kind, message in messages:
                if kind == b"X":  # Terminate: the backend stays, the client goes
                    self._send(backend.server, bytes(out))
                    self._end(session)
                    return
                if kind in (b"Q", b"S", b"F"):
                    backend.owed += 1
                out += message
            self._send(backend.server, bytes(out))

    def _checkout(self, session: Session) -> None:
        startup = session.startup
        idle, greeting = self.idle.get(startup), self.greetings.get(startup)
        if idle and greeting is not None:
            self._join(session, idle.pop())
            self._send(session.client, protocol.AUTH_OK + greeting + session.key + protocol.READY_IDLE)
            return
        resetting = sum(1 for b in self.resetting if b.startup == startup)
        if greeting is not None and resetting > sum(1 for s in self.waiting if s.startup == startup):
            # A backend being reset is ~0.1 ms away; a new one costs ~1.3 ms. Wait, but not for long.
            session.state, session.deadline = "waiting", time.monotonic() + WAIT_FOR_RESET
            self.waiting.append(session)
            return
        self._new_backend(session)

    def _new_backend(self, session: Session) -> None:
        session.deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        try:
            server = self._connect("server")
        except ConnectionError as exc:
            self._send(session.client, protocol.error_response(f"the test relay {exc}"))
            self._end(session)
            return
        backend = Backend(server, session.startup)
        server.owner = backend
        self._join(session, backend)
        session.state = "handshake"
        self._send(server, session.startup)

    def _join(self, session: Session, backend: Backend) -> None:
        session.backend, backend.session = backend, session
        if backend.key:
            self._new_key(session, backend.key)
        if backend.state == "idle":
            backend.state, session.state, session.deadline = "active", "active", None
            self.pending.discard(session)
        self._watch(backend.server)

    def _new_key(self, session: Session, backend_key: bytes) -> bytes:
        self.by_key.pop(session.key, None)
        session.key = protocol.client_key(backend_key)
        self.by_key[session.key] = session
        return session.key

    def _from_server(self, backend: Backend) -> None:
        server = backend.server
        messages, server.inbuf = protocol.split(server.inbuf)
        session = backend.session
        if backend.state == "handshake" and session is not None:
            out = bytearray()
            for kind, message in messages:
                if kind == b"K":
                    backend.key = message
                    message = self._new_key(session, message)  # it cancels through the relay, by its own key
                elif kind == b"S":
                    backend.greeting += message
                out += message
                if kind == b"E":
                    self._send(session.client, bytes(out))
                    self._end(session)  # its backend is closed with it
                    return
                if kind == b"Z":
                    self.greetings.setdefault(backend.startup, backend.greeting)
                    backend.state, session.state, session.deadline = "active", "active", None
                    self.pending.discard(session)
            self._send(session.client, bytes(out))
        elif backend.state == "active" and session is not None:
            messages, backend.hidden = protocol.unhide(messages, backend.hidden)
            backend.owed -= sum(1 for kind, _ in messages if kind == b"Z")
            self._send(session.client, b"".join(message for _, message in messages))
        elif backend.state == "reset":
            for kind, _ in messages:
                if kind == b"Z":
                    if backend.drain:
                        backend.drain -= 1
                    else:
                        backend.owed -= 1
                elif kind == b"E" and not backend.drain:
                    backend.broken = True
            if backend.owed <= 0:
                self.resetting.discard(backend)
                if backend.broken:
                    self._close(server)
                else:
                    backend.state, backend.deadline = "idle", None
                    backend.begun_at = time.monotonic() if self.begin_ahead is not None else None
                    self.idle.setdefault(backend.startup, []).append(backend)
                self._serve_waiting()
        else:  # idle: an answer to the relay's own ROLLBACK, or the server ending it
            messages, backend.hidden = protocol.unhide(messages, backend.hidden)
            if any(kind == b"E" for kind, _ in messages):
                self._discard_idle(backend)

    def _end(self, session: Session) -> None:
        """The client is gone or done: close it, and reset (or close) the backend it held."""
        session.state = "gone"
        self._close(session.client)
        self.pending.discard(session)
        self.by_key.pop(session.key, None)
        if session in self.waiting:
            self.waiting.remove(session)
        backend, session.backend = session.backend, None
        if backend is None:
            return
        backend.session = None
        if backend.state != "active" or backend.server.closed:
            self._close(backend.server)  # half authenticated, or already lost: never reused
            return
        running = max(backend.owed, 0)
        backend.drain, backend.hidden, backend.begun_at = running + backend.hidden, 0, None
        reset, backend.owed = protocol.reset(begin=self.begin_ahead is not None)
        # A query the client left running is cancelled if it is still running a little later
        # (not at once: most finish first, and a late cancel would hit the reset instead).
        backend.cancel_at = time.monotonic() + CANCEL_AFTER if running else None
        backend.state, backend.deadline = "reset", time.monotonic() + RESET_TIMEOUT
        backend.server.reading = True
        self.resetting.add(backend)
        self._send(backend.server, reset)

    def _cancel(self, backend: Backend | None) -> None:
        """Cancel what ``backend`` runs, with its real key (which no client has)."""
        if backend is None or not backend.key:
            return
        try:
            peer = self._connect("cancel")
        except ConnectionError:
            return
        peer.close_when_sent = True
        self._send(peer, protocol.cancel_request(backend.key))

    def _lost(self, peer: Peer) -> None:
        """A socket closed or failed."""
        owner = peer.owner
        if isinstance(owner, Session):
            self._end(owner)
        elif isinstance(owner, Backend):
            self._close(peer)
            if owner.session is not None:
                session, owner.session = owner.session, None
                session.backend = None
                self._send(session.client, protocol.error_response("the server closed the connection"))
                self._end(session)
            if owner in self.resetting:
                self.resetting.discard(owner)
                self._serve_waiting()
            self._discard_idle(owner)
        else:
            self._close(peer)

    def _discard_idle(self, backend: Backend) -> None:
        self._close(backend.server)
        idle = self.idle.get(backend.startup, [])
        if backend in idle:
            idle.remove(backend)

    def _serve_waiting(self) -> None:
        for session in list(self.waiting):
            if self.idle.get(session.startup) or not any(b.startup == session.startup for b in self.resetting):
                self.waiting.remove(session)
                self._checkout(session)
