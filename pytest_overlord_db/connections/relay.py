"""A local session-pooling relay: new client connections, reused PostgreSQL backends.

An asyncpg connection belongs to the event loop that made it, so under
pytest-asyncio's default function-scoped loop every test needs a new
connection, and a new PostgreSQL backend costs ~1.3 ms to start. The relay
listens on a unix socket, served by one background thread. The first
client's startup (authentication included, whatever the method) is passed
through to the server and the server's greeting recorded; later clients get
that greeting replayed at once and are joined to an idle backend. When a
client leaves (Terminate, or just closing its socket once every query it sent
was answered), its backend is reset with ROLLBACK and DISCARD ALL, so no
session state reaches the next client, and kept. This is what PgBouncer's
session pooling does, in-process.

One more trick, because the fixture's first words are always BEGIN: a reset
backend is left with a transaction already begun, and a client whose first
message is exactly ``BEGIN`` is answered by the relay itself. Any other first
message rolls that transaction back before it is forwarded.
"""
from __future__ import annotations

import os
import selectors
import socket
import struct
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import protocol


@dataclass
class Relay:
    """Relay to the server at ``target``: a unix socket path or (host, port)."""

    target: object
    greeting: bytes = b""
    idle: list[protocol.Backend] = field(default_factory=list)
    waiting: deque[Any] = field(default_factory=deque)  # sessions waiting for a backend being reset
    resetting: int = 0
    path: str = ""

    def start(self) -> str:
        folder = tempfile.mkdtemp(prefix="ovl-relay-")
        self.path = os.path.join(folder, ".s.PGSQL.5432")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, ("accept", None))
        self._wake_r, self._wake_w = socket.socketpair()
        self.selector.register(self._wake_r, selectors.EVENT_READ, ("stop", None))
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="overlord-relay", daemon=True)
        self.thread.start()
        return folder

    def url_for(self, url: str) -> str:
        """``url`` rewritten to go through the relay."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        query["host"] = os.path.dirname(self.path)
        query.pop("port", None)
        netloc = parts.netloc.split("@")[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="/"), ""))

    def close(self) -> None:
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self.thread.join(timeout=5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        for backend in self.idle:
            backend.sock.close()
        self.idle.clear()
        self.selector.close()
        self._wake_w.close()
        try:
            os.unlink(self.path)
            os.rmdir(os.path.dirname(self.path))
        except OSError:
            pass

    # -- the relay thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop:
            for key, _ in self.selector.select():
                kind, obj = key.data
                try:
                    if kind == "accept":
                        self._accept()
                    elif kind == "client":
                        self._from_client(obj)
                    elif kind == "server":
                        self._from_server(obj)
                    elif kind == "reset":
                        self._reset_progress(obj)
                    elif kind == "stop":
                        return
                except Exception:  # noqa: BLE001 - one broken conversation must not stop the relay
                    if kind == "client" or kind == "server":
                        self._drop(obj)
                    elif kind == "reset":
                        self._forget(obj)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        client.setblocking(True)
        self.selector.register(client, selectors.EVENT_READ, ("client", protocol.Session(client)))

    def _connect_server(self) -> socket.socket:
        family = socket.AF_UNIX if isinstance(self.target, str) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect(self.target)  # type: ignore[arg-type]
        return sock

    def _from_client(self, session: protocol.Session) -> None:
        data = session.client.recv(65536)
        if not data:
            self._client_left(session)
            return
        session.buffer += data
        if not session.started:
            self._startup(session)
            return
        messages, session.buffer = protocol.split(session.buffer)
        backend = session.backend
        assert backend is not None
        out = b""
        for kind, message in messages:
            if kind == b"X":
                if out:
                    backend.sock.sendall(out)
                self._client_left(session)
                return
            if backend.begun:
                backend.begun = False
                if message == protocol.BEGIN:  # the fixture's BEGIN: already done
                    session.client.sendall(protocol.BEGIN_DONE)
                    continue
                self._rollback_now(backend)
            if kind in (b"Q", b"S", b"F"):
                backend.owed += 1
            out += message
        if out:
            backend.sock.sendall(out)

    def _startup(self, session: protocol.Session) -> None:
        while len(session.buffer) >= 8:
            (length,) = struct.unpack("!I", session.buffer[:4])
            if len(session.buffer) < length:
                return
            packet, session.buffer = session.buffer[:length], session.buffer[length:]
            code = struct.unpack("!I", packet[4:8])[0]
            if code in (protocol.SSL_REQUEST, protocol.GSS_REQUEST):
                session.client.sendall(b"N")  # no encryption on a local socket
                continue
            if code == protocol.CANCEL:
                server = self._connect_server()
                server.sendall(packet)  # the key is the real backend's: pass it on
                server.close()
                self._close_client(session)
                return
            session.started = True
            session.startup = packet
            self._checkout(session)
            return

    def _checkout(self, session: protocol.Session) -> None:
        if self.idle and self.greeting:
            backend = self.idle.pop()
            session.backend = backend
            session.client.sendall(protocol.AUTH_OK + self.greeting + backend.key + protocol.READY_IDLE)
            self.selector.register(backend.sock, selectors.EVENT_READ, ("server", session))
            return
        if self.resetting and self.greeting:
            self.selector.unregister(session.client)  # wait quietly: a backend is ~0.1 ms away
            self.waiting.append(session)
            return
        self._new_backend(session)

    def _new_backend(self, session: protocol.Session) -> None:
        """Pass the client's startup and authentication through to a new backend (blocking, rare)."""
        server = self._connect_server()
        # Bounded: this runs on the relay's only thread.
        server.settimeout(protocol.HANDSHAKE_TIMEOUT)
        session.client.settimeout(protocol.HANDSHAKE_TIMEOUT)
        server.sendall(session.startup)
        greeting, key = b"", b""
        while True:
            kind, message = protocol.read_message(server)
            if kind == b"R" and struct.unpack("!I", message[5:9])[0] in protocol.AUTH_NEEDS_ANSWER:
                session.client.sendall(message)
                _, answer = protocol.read_message(session.client)
                server.sendall(answer)
                continue
            session.client.sendall(message)
            if kind == b"S":
                greeting += message
            elif kind == b"K":
                key = message
            elif kind == b"E":
                server.close()
                self._close_client(session)
                return
            elif kind == b"Z":
                break
        server.settimeout(None)
        session.client.settimeout(None)
        if not self.greeting:
            self.greeting = greeting
        session.backend = protocol.Backend(server, key)
        self.selector.register(server, selectors.EVENT_READ, ("server", session))

    def _rollback_now(self, backend: protocol.Backend) -> None:
        # The client did not start with BEGIN: undo the one we began for it.
        backend.sock.sendall(protocol.query(b"ROLLBACK"))
        while True:
            kind, _ = protocol.read_message(backend.sock)
            if kind == b"Z":
                return

    def _from_server(self, session: protocol.Session) -> None:
        backend = session.backend
        assert backend is not None
        data = backend.sock.recv(65536)
        if not data:
            backend.broken = True
            self._drop(session)
            return
        if session.client_open:
            try:
                session.client.sendall(data)
            except OSError:
                self._client_gone(session)
        messages, backend.buffer = protocol.split(backend.buffer + data)
        for kind, _ in messages:
            if kind == b"Z":
                backend.owed -= 1
        if not session.client_open and backend.owed <= 0:
            self._release(session)

    def _client_left(self, session: protocol.Session) -> None:
        self._client_gone(session)
        if session.backend is None:
            return
        if session.backend.owed <= 0:
            self._release(session)
        # else: wait for the answers still owed, then release

    def _client_gone(self, session: protocol.Session) -> None:
        if session.client_open:
            session.client_open = False
            self._close_client(session)

    def _close_client(self, session: protocol.Session) -> None:
        self._discard(session.client)

    def _discard(self, sock: socket.socket) -> None:
        """Stop watching ``sock`` (if it is watched) and close it."""
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _release(self, session: protocol.Session) -> None:
        backend, session.backend = session.backend, None
        if backend is None:
            return
        self.selector.unregister(backend.sock)
        # Reset in the background: ROLLBACK, DISCARD ALL (prepared statements, settings, locks,
        # LISTEN, temp tables), and BEGIN for the next client's BEGIN.
        backend.sock.sendall(protocol.RESET)
        backend.owed, backend.buffer, backend.begun = 3, b"", False
        self.resetting += 1
        self.selector.register(backend.sock, selectors.EVENT_READ, ("reset", backend))

    def _reset_progress(self, backend: protocol.Backend) -> None:
        data = backend.sock.recv(65536)
        if not data:
            raise ConnectionError("backend closed during reset")
        messages, backend.buffer = protocol.split(backend.buffer + data)
        for kind, _ in messages:
            if kind == b"E":
                backend.broken = True
            elif kind == b"Z":
                backend.owed -= 1
        if backend.owed > 0:
            return
        self.selector.unregister(backend.sock)
        self.resetting -= 1
        if backend.broken:
            backend.sock.close()
        else:
            backend.begun = True
            self.idle.append(backend)
        while self.waiting and (self.idle or not self.resetting):
            session = self.waiting.popleft()
            try:
                self.selector.register(session.client, selectors.EVENT_READ, ("client", session))
                self._checkout(session)
            except (OSError, ConnectionError, struct.error):
                self._drop(session)  # it gave up waiting

    def _forget(self, backend: protocol.Backend) -> None:
        self._discard(backend.sock)
        self.resetting -= 1

    def _drop(self, session: protocol.Session) -> None:
        """Something went wrong mid-conversation: close both sides, never reuse the backend."""
        self._client_gone(session)
        backend, session.backend = session.backend, None
        if backend is not None:
            self._discard(backend.sock)
