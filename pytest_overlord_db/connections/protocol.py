"""The bits of PostgreSQL's wire protocol (v3) the relay needs: framing, the few messages it writes, and
what it remembers of each conversation."""
from __future__ import annotations

import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

SSL_REQUEST, GSS_REQUEST, CANCEL = 80877103, 80877104, 80877102
AUTH_OK = b"R\x00\x00\x00\x08\x00\x00\x00\x00"
READY_IDLE = b"Z\x00\x00\x00\x05I"
SYNC = b"S\x00\x00\x00\x04"


def query(sql: bytes) -> bytes:
    return b"Q" + struct.pack("!I", len(sql) + 5) + sql + b"\x00"


COPY_FAIL = b"f" + struct.pack("!I", 14) + b"abandoned\x00"

# CopyFail ends a COPY FROM STDIN the client left in the middle (outside one the server ignores
# it); Sync ends an extended-protocol batch left unfinished (and is answered by one
# ReadyForQuery when there is none). DISCARD ALL cannot run in a transaction block, hence its
# own message. Three ReadyForQuery answers in all.
RESET = COPY_FAIL + SYNC + query(b"ROLLBACK") + query(b"DISCARD ALL")
RESET_ANSWERS = 3

# A relay that begins ahead (see Relay) ends the reset with the next client's BEGIN, and answers that
# client's own ``BEGIN;`` with what the server would have said. Any other first message gets a
# ROLLBACK sent before it, whose answer the client never sees.
BEGIN = query(b"BEGIN;")
BEGUN = b"C\x00\x00\x00\x0aBEGIN\x00" + b"Z\x00\x00\x00\x05T"
ROLLBACK = query(b"ROLLBACK")


def reset(begin: bool) -> tuple[bytes, int]:
    """What resets a backend a client has left, and how many ReadyForQuery answers it gets."""
    return (RESET + BEGIN, RESET_ANSWERS + 1) if begin else (RESET, RESET_ANSWERS)


def first_on_begun(messages: list[tuple[bytes, bytes]],
                   fresh: bool) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """A client's first messages on a backend whose transaction the reset began: the relay's own answer
    to them, the messages still to send, and what to send before those (a ROLLBACK whose answer the
    client must not see). A client leaving at once needs nothing: the reset rolls back anyway."""
    if messages[0][1] == BEGIN and fresh:
        return BEGUN, messages[1:], b""
    return b"", messages, (b"" if messages[0][0] == b"X" else ROLLBACK)


def unhide(messages: list[tuple[bytes, bytes]], hidden: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """``messages`` without the answers to ``hidden`` ROLLBACKs of the relay's own, and how many are
    still to come. An error is never hidden: it is how the server says it is ending the connection."""
    kept = []
    for kind, message in messages:
        if hidden and kind != b"E":
            hidden -= kind == b"Z"
        else:
            kept.append((kind, message))
    return kept, hidden


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


def answers(sock: socket.socket, owed: int, deadline: float) -> list[tuple[bytes, bytes]] | None:
    """A blocking socket's messages up to the server's ``owed``-th ReadyForQuery, waited for until ``deadline``
    (by poll(): any descriptor); None when one is an error, or more follow."""
    buffer, messages = b"", []
    while owed > 0:
        sock.settimeout(max(deadline - time.monotonic(), 0.0))
        chunk = sock.recv(65536)
        if not chunk:
            return None
        more, buffer = split(buffer + chunk)
        messages += more
        owed -= sum(kind == b"Z" for kind, _ in more)
    if buffer or any(kind == b"E" for kind, _ in messages):
        return None
    return messages


COMMITTED = b"C\x00\x00\x00\x0bCOMMIT\x00"  # CommandComplete of a COMMIT (AND CHAIN too: no ReadyForQuery with I)


@dataclass(eq=False)
class Watch:
    """Where the server is in what it says, followed across reads by message headers alone (a long result
    is skipped over, not parsed): the status of its last ReadyForQuery, whether that is the last thing it
    said (so it is waiting for a query), and whether a transaction has ended since one was open (a
    ReadyForQuery saying idle, or a COMMIT, whatever began after it). Bytes inside a row that look like
    either are not one."""

    status: bytes = b"I"  # I idle, T in a transaction, E in a failed one
    ready: bool = True
    ended: bool = False
    opened: bool = False  # a ReadyForQuery has said T or E
    skip: int = 0  # bytes of the current message still to come
    part: bytes = b""  # the start of a message split across reads, when its first bytes are needed

    def feed(self, data: bytes) -> None:
        if self.part:
            data, self.part = self.part + data, b""
        pos, end = self.skip, len(data)
        while pos < end:
            if end - pos < 6:
                self.part, self.ready = data[pos:], False
                break
            kind = data[pos]
            (length,) = struct.unpack_from("!I", data, pos + 1)
            if kind == 0x43 and length == 11:  # a CommandComplete as short as COMMIT's
                if end - pos < 12:
                    self.part, self.ready = data[pos:], False
                    break
                self.ended |= data[pos: pos + 12] == COMMITTED
            self.ready = kind == 0x5A
            if self.ready:
                self.status = data[pos + 5: pos + 6]
                if self.status == b"I":
                    self.ended |= self.opened
                else:
                    self.opened = True
            pos += 1 + length
        self.skip = max(pos - end, 0)

    def in_transaction(self) -> bool:
        """Whether the transaction that was open is open still: not ended, even if another began since."""
        return self.status in (b"T", b"E") and not self.ended


def split_startup(buffer: bytes) -> tuple[bytes | None, bytes]:
    """The first untyped startup-phase packet (startup, SSL, GSS or cancel request) and the rest."""
    if len(buffer) < 8:
        return None, buffer
    (length,) = struct.unpack("!I", buffer[:4])
    if length < 8 or length > 10_000:
        raise ConnectionError("not a PostgreSQL startup packet")
    if len(buffer) < length:
        return None, buffer
    return buffer[:length], buffer[length:]


def packet_code(packet: bytes) -> int:
    return int(struct.unpack("!I", packet[4:8])[0])


def client_key(backend_key: bytes) -> bytes:
    """A BackendKeyData message for one client of the relay: the backend's real process id (what
    ``pg_backend_pid()`` says), and a secret of the client's own, so a cancel request is the client's."""
    return backend_key[:9] + struct.pack("!I", secrets.randbits(32))


def cancel_request(key: bytes) -> bytes:
    """The CancelRequest packet for a BackendKeyData message ``key``."""
    return struct.pack("!II", 16, CANCEL) + key[5:13]


def cancel(target: object, greeting: bytes) -> None:
    """Cancel what the backend whose BackendKeyData is in ``greeting`` runs, at ``target`` (a unix socket's
    path, or (host, port), IPv4 or IPv6); nothing when it cannot be reached."""
    messages, _ = split(greeting)
    key = next((message for kind, message in messages if kind == b"K"), None)
    if key is None:
        return
    try:
        if isinstance(target, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(1.0)
            sock.connect(target)
        else:
            sock = socket.create_connection(target, timeout=1.0)  # type: ignore[arg-type]
        with sock:
            sock.sendall(cancel_request(key))
    except OSError:
        pass


def key_of_cancel(packet: bytes) -> bytes:
    """The BackendKeyData message a CancelRequest packet names."""
    return b"K" + struct.pack("!I", 12) + packet[8:16]


def error_response(message: str) -> bytes:
    """A FATAL ErrorResponse, connection failure class, for a client the relay cannot serve."""
    fields = b"SFATAL\x00VFATAL\x00C08006\x00M" + message.encode() + b"\x00\x00"
    return b"E" + struct.pack("!I", len(fields) + 4) + fields


@dataclass(eq=False)
class Peer:
    """One non-blocking socket of the relay, with what was read but not yet handled and what is still to write."""

    sock: socket.socket
    kind: str  # "client", "server" or "cancel"
    owner: Any = None  # its Session (a client) or Backend (a server)
    inbuf: bytes = b""
    out: bytearray = field(default_factory=bytearray)
    reading: bool = True  # False while the other side's writes are backed up
    connecting: bool = False
    close_when_sent: bool = False  # a one-message conversation (a cancel request)
    closed: bool = False
    events: int = 0  # what the selector watches it for


@dataclass(eq=False)
class Session:
    """One client of the relay: ``startup`` (reading its startup packet), ``handshake`` (authenticating
    with a new backend), ``waiting`` (for a backend being reset), ``active`` or ``gone``."""

    client: Peer
    key: bytes = b""  # its own cancel key (protocol.client_key), never its backend's
    state: str = "startup"
    startup: bytes = b""
    backend: Backend | None = None
    deadline: float | None = None


@dataclass(eq=False)
class Backend:
    """One PostgreSQL backend: ``handshake``, ``active`` (held by a session), ``reset`` or ``idle``."""

    server: Peer
    startup: bytes  # what it was started with: it only ever serves clients that ask for the same
    session: Session | None = None  # the session it serves
    state: str = "handshake"
    key: bytes = b""  # its real BackendKeyData, used only by the relay
    greeting: bytes = b""  # ParameterStatus messages seen during its handshake
    owed: int = 0  # ReadyForQuery messages still to come for the session (or the reset)
    drain: int = 0  # answers owed to a client that left, to skip before the reset's own
    cancel_at: float | None = None  # when to cancel what that client left running
    broken: bool = False
    deadline: float | None = None
    begun_at: float | None = None  # when the reset's own BEGIN was answered (a relay that begins ahead)
    hidden: int = 0  # ReadyForQuery answers to a ROLLBACK of the relay's, not to be passed on
