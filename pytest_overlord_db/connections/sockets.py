"""The relay's socket layer: one thread, one selector, non-blocking sockets, buffered writes, back-pressure.

Nothing here knows PostgreSQL: a subclass says what to do with what arrives
(``_received``), with a socket that closed or failed (``_lost``), with a new
client (``_accepted``) and when its deadlines fall (``_next_deadline``, ``_expire``).
"""
from __future__ import annotations

import errno
import os
import selectors
import socket
import threading
import time
from typing import Any

from .protocol import Peer

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
HIGH_WATER = 1 << 20  # bytes waiting for a peer before the loop stops reading from whoever feeds it


class SocketLoop:
    target: object  # where _connect goes: a unix socket path or (host, port)

    def _start_loop(self, listener: socket.socket) -> None:
        self.listener = listener
        listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, READ, "accept")
        self._wake_r, self._wake_w = socket.socketpair()
        self.selector.register(self._wake_r, READ, "stop")
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="overlord-relay", daemon=True)
        self.thread.start()

    def _stop_loop(self) -> None:
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self.thread.join(timeout=5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()
        self._wake_w.close()

    # -- hooks -------------------------------------------------------------------------------
    def _accepted(self, peer: Peer) -> None: ...

    def _received(self, peer: Peer) -> None: ...

    def _lost(self, peer: Peer) -> None:
        self._close(peer)

    def _other(self, peer: Peer) -> Peer | None:
        """The peer whose data ``peer`` is sent (paused while ``peer`` is backed up)."""
        return None

    def _next_deadline(self) -> float | None:
        return None

    def _expire(self, now: float) -> None: ...

    # -- the loop ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop:
            deadline = self._next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            for key, events in self.selector.select(timeout):
                if key.data == "accept":
                    self._accept()
                    continue
                if key.data == "stop":
                    return
                peer: Peer = key.data
                try:
                    if events & WRITE:
                        self._writable(peer)
                    if events & READ and not peer.closed:
                        self._readable(peer)
                except Exception:  # noqa: BLE001 - one broken conversation must not stop the relay
                    self._lost(peer)
            self._expire(time.monotonic())

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        peer = Peer(sock, "client")
        self._accepted(peer)
        self._watch(peer)

    def _connect(self, kind: str, owner: Any = None) -> Peer:
        family = socket.AF_UNIX if isinstance(self.target, str) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(self.target)  # type: ignore[arg-type]
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise ConnectionError(f"cannot reach the server: {os.strerror(code)}")
        return Peer(sock, kind, owner, connecting=code != 0)

    def _readable(self, peer: Peer) -> None:
        try:
            data = peer.sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            self._lost(peer)
            return
        peer.inbuf += data
        self._received(peer)

    def _writable(self, peer: Peer) -> None:
        if peer.connecting:
            code = peer.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise ConnectionError(os.strerror(code))
            peer.connecting = False
        self._flush(peer)

    def _send(self, peer: Peer, data: bytes) -> None:
        if not peer.closed and data:
            peer.out += data
            self._flush(peer)

    def _flush(self, peer: Peer) -> None:
        if peer.out and not peer.connecting:
            try:
                del peer.out[:peer.sock.send(peer.out)]
            except BlockingIOError:
                pass
            except OSError:
                # Its other end closed before the loop read that: a backend terminated between two selects (the
                # ROLLBACK sent to a pooled one), a client gone. The peer is lost; raised from the handler of a
                # loss already under way, it ended the relay's thread, and every later client waited forever.
                self._lost(peer)
                return
        if peer.close_when_sent and not peer.out and not peer.connecting:
            self._close(peer)
            return
        other = self._other(peer)
        if other is not None and other.reading != (len(peer.out) < HIGH_WATER):
            other.reading = not other.reading
            self._watch(other)
        self._watch(peer)

    def _watch(self, peer: Peer) -> None:
        events = (READ if peer.reading else 0) | (WRITE if peer.out or peer.connecting else 0)
        if peer.closed or events == peer.events:
            return
        if not peer.events:
            self.selector.register(peer.sock, events, peer)
        elif not events:
            self.selector.unregister(peer.sock)
        else:
            self.selector.modify(peer.sock, events, peer)
        peer.events = events

    def _close(self, peer: Peer) -> None:
        if peer.closed:
            return
        if peer.events:
            self.selector.unregister(peer.sock)
        peer.closed, peer.events = True, 0
        peer.sock.close()
