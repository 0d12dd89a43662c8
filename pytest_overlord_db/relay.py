"""A local session-pooling relay: new client connections, reused PostgreSQL backends.

An asyncpg connection belongs to the event loop that made it, so under
pytest-asyncio's default function-scoped loop every test needs a new
connection — and a new PostgreSQL backend costs ~1.3 ms to start. The relay
listens on a unix socket in a background thread; the first client's startup
(authentication included, whatever the method) is passed through to the
server and its answer recorded; later clients get that answer replayed at
once and are joined to an idle backend. When a client says goodbye
(Terminate), its backend is reset with ROLLBACK and DISCARD ALL and kept for
the next one; a client that vanishes mid-conversation takes its backend
with it. This is what PgBouncer's session pooling does, in-process.
"""
from __future__ import annotations

import os
import selectors
import socket
import struct
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit, urlunsplit, urlencode

_SSL_REQUEST, _GSS_REQUEST, _CANCEL = 80877103, 80877104, 80877102


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    """One typed protocol message: (type, whole message bytes)."""
    head = _recv_exact(sock, 5)
    (length,) = struct.unpack("!I", head[1:])
    return head[:1], head + _recv_exact(sock, length - 4)


def _read_startup(sock: socket.socket) -> bytes:
    head = _recv_exact(sock, 4)
    (length,) = struct.unpack("!I", head)
    return head + _recv_exact(sock, length - 4)


@dataclass
class _Backend:
    sock: socket.socket
    key: bytes  # BackendKeyData message, for cancel requests


@dataclass
class Relay:
    """Relay to the server at ``target`` (a unix socket path or (host, port))."""

    target: object
    greeting: bytes = b""  # what the server said after authentication, replayed to later clients
    idle: list[_Backend] = field(default_factory=list)
    resetting: int = 0  # backends on their way back to ``idle``
    changed: threading.Condition = field(default_factory=threading.Condition)
    path: str = ""

    @property
    def lock(self) -> threading.Condition:
        return self.changed

    def start(self) -> str:
        folder = tempfile.mkdtemp(prefix="ovl-relay-")
        os.chmod(folder, 0o700)
        self.path = os.path.join(folder, ".s.PGSQL.5432")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self._stop = False
        # Threads are kept: starting one per client would cost as much as the rest of a connect.
        self.workers = ThreadPoolExecutor(max_workers=64, thread_name_prefix="overlord-relay")
        self.thread = threading.Thread(target=self._accept_loop, name="overlord-relay-accept", daemon=True)
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
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.listener.close()
            self.workers.shutdown(wait=False, cancel_futures=True)
        finally:
            with self.lock:
                for backend in self.idle:
                    backend.sock.close()
                self.idle.clear()
            try:
                os.unlink(self.path)
                os.rmdir(os.path.dirname(self.path))
            except OSError:
                pass

    # -- the background thread -----------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.workers.submit(self._serve, client)

    def _connect_server(self) -> socket.socket:
        if isinstance(self.target, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect(self.target)
        return sock

    def _serve(self, client: socket.socket) -> None:
        backend = None
        try:
            startup = _read_startup(client)
            code = struct.unpack("!I", startup[4:8])[0]
            while code in (_SSL_REQUEST, _GSS_REQUEST):
                client.sendall(b"N")  # no encryption on a local socket
                startup = _read_startup(client)
                code = struct.unpack("!I", startup[4:8])[0]
            if code == _CANCEL:
                self._forward_cancel(startup)
                return
            backend = self._checkout(client, startup)
            if backend is None:
                return
            if self._pump(client, backend.sock):
                with self.changed:
                    self.resetting += 1
                client.close()
                try:
                    self._reset_and_return(backend)
                finally:
                    with self.changed:
                        self.resetting -= 1
                        self.changed.notify_all()
                backend = None
        except (ConnectionError, OSError):
            pass
        finally:
            client.close()
            if backend is not None:
                backend.sock.close()

    def _checkout(self, client: socket.socket, startup: bytes) -> _Backend | None:
        with self.changed:
            # A backend being reset is ready in ~0.1 ms: far sooner than a new one.
            self.changed.wait_for(lambda: self.idle or not self.resetting, timeout=1.0)
            backend = self.idle.pop() if self.idle else None
            greeting = self.greeting
        if backend is not None and greeting:
            client.sendall(b"R\x00\x00\x00\x08\x00\x00\x00\x00" + greeting + backend.key + b"Z\x00\x00\x00\x05I")
            return backend
        # A new backend: pass the client's startup and authentication through, recording the greeting.
        server = self._connect_server()
        server.sendall(startup)
        greeting, key = b"", b""
        while True:
            kind, message = _read_message(server)
            if kind == b"R" and message[5:9] != b"\x00\x00\x00\x00":  # an authentication challenge
                client.sendall(message)
                _, answer = _read_message(client)
                server.sendall(answer)
                continue
            client.sendall(message)
            if kind == b"S":
                greeting += message
            elif kind == b"K":
                key = message
            elif kind == b"E":
                server.close()
                return None
            elif kind == b"Z":
                break
        with self.lock:
            if not self.greeting:
                self.greeting = greeting
        return _Backend(server, key)

    def _pump(self, client: socket.socket, server: socket.socket) -> bool:
        """Relay until the client leaves; True when its backend is idle and may be reused.

        A client leaves with Terminate, or by just closing its socket (the
        fixture does, to save a round trip). Either way the backend is reusable
        once every query the client sent has been answered: we count the
        messages that end in ReadyForQuery (Query, Sync, FunctionCall) against
        the ReadyForQuery messages the server sent, and wait for stragglers.
        """
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, "client")
        selector.register(server, selectors.EVENT_READ, "server")
        pending = b""  # client bytes not yet forwarded as whole messages
        from_server = b""  # server bytes whose message boundaries are not yet known
        owed = 0  # ReadyForQuery messages the server still owes
        client_open = True
        try:
            while True:
                events = selector.select(timeout=None if client_open else 5.0)
                if not events:
                    return False  # a straggling query that does not finish: give the backend up
                for key, _ in events:
                    if key.data == "server":
                        data = server.recv(65536)
                        if not data:
                            return False
                        if client_open:
                            try:
                                client.sendall(data)
                            except OSError:
                                client_open = False
                                selector.unregister(client)
                        from_server += data
                        offset = 0
                        while len(from_server) - offset >= 5:
                            (length,) = struct.unpack("!I", from_server[offset + 1: offset + 5])
                            end = offset + 1 + length
                            if len(from_server) < end:
                                break
                            if from_server[offset:offset + 1] == b"Z":
                                owed -= 1
                            offset = end
                        from_server = from_server[offset:]
                        if not client_open and owed <= 0:
                            return True
                        continue
                    data = client.recv(65536)
                    if not data:
                        client_open = False
                        selector.unregister(client)
                        if owed <= 0:  # nothing partial was forwarded: the backend is idle
                            return True
                        continue
                    pending += data
                    # Forward whole messages; stop at Terminate without forwarding it.
                    offset = 0
                    while len(pending) - offset >= 5:
                        (length,) = struct.unpack("!I", pending[offset + 1: offset + 5])
                        end = offset + 1 + length
                        if len(pending) < end:
                            break
                        kind = pending[offset:offset + 1]
                        if kind == b"X":
                            server.sendall(pending[:offset])
                            client_open = False
                            selector.unregister(client)
                            pending = b""
                            if owed <= 0:
                                return True
                            break
                        if kind in (b"Q", b"S", b"F"):
                            owed += 1
                        offset = end
                    if offset and client_open:
                        server.sendall(pending[:offset])
                        pending = pending[offset:]
        finally:
            selector.close()

    def _reset_and_return(self, backend: _Backend) -> None:
        # Session state (prepared statements, settings, temp tables) must not reach the next client.
        for statement in (b"ROLLBACK", b"DISCARD ALL"):
            backend.sock.sendall(b"Q" + struct.pack("!I", len(statement) + 5) + statement + b"\x00")
        greeting = b""
        ready = 0
        while ready < 2:
            kind, message = _read_message(backend.sock)
            if kind == b"Z":
                ready += 1
            elif kind == b"S":
                greeting += message
            elif kind == b"E" and ready == 1:  # DISCARD ALL failed: do not reuse this backend
                backend.sock.close()
                return
        with self.lock:
            self.idle.append(backend)

    def _forward_cancel(self, request: bytes) -> None:
        # The client cancels with the key we gave it: the key of the backend it was joined to.
        server = self._connect_server()
        try:
            server.sendall(request)
        finally:
            server.close()
