"""The bits of PostgreSQL's wire protocol (v3) the relay needs: framing, the few messages it writes, and
what it remembers of each conversation."""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

SSL_REQUEST, GSS_REQUEST, CANCEL = 80877103, 80877104, 80877102
HANDSHAKE_TIMEOUT = 30.0
# Authentication requests the client answers: cleartext, MD5, GSS, GSS-continue, SSPI, SASL, SASL-continue.
# (SASL-final, 12, and OK, 0, expect nothing back.)
AUTH_NEEDS_ANSWER = {3, 5, 7, 8, 9, 10, 11}
BEGIN = b"Q\x00\x00\x00\x0aBEGIN\x00"
BEGIN_DONE = b"C\x00\x00\x00\x0aBEGIN\x00Z\x00\x00\x00\x05T"
AUTH_OK = b"R\x00\x00\x00\x08\x00\x00\x00\x00"
READY_IDLE = b"Z\x00\x00\x00\x05I"


def query(sql: bytes) -> bytes:
    return b"Q" + struct.pack("!I", len(sql) + 5) + sql + b"\x00"


RESET = query(b"ROLLBACK") + query(b"DISCARD ALL") + query(b"BEGIN")


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    """One typed protocol message, read blocking: (type, whole message)."""
    head = recv_exact(sock, 5)
    (length,) = struct.unpack("!I", head[1:])
    return head[:1], head + recv_exact(sock, length - 4)


def split(buffer: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Whole typed messages at the front of ``buffer``, and the incomplete rest."""
    messages, offset = [], 0
    while len(buffer) - offset >= 5:
        (length,) = struct.unpack("!I", buffer[offset + 1: offset + 5])
        end = offset + 1 + length
        if len(buffer) < end:
            break
        messages.append((buffer[offset:offset + 1], buffer[offset:end]))
        offset = end
    return messages, buffer[offset:]


@dataclass(eq=False)
class Backend:
    sock: socket.socket
    key: bytes  # its BackendKeyData message, handed to clients for cancel requests
    begun: bool = False  # a transaction was begun for the next client
    owed: int = 0  # ReadyForQuery messages still to come
    buffer: bytes = b""
    broken: bool = False


@dataclass(eq=False)
class Session:
    client: socket.socket
    buffer: bytes = b""
    backend: Backend | None = None
    client_open: bool = True
    started: bool = False  # past the startup packet
    startup: bytes = b""
