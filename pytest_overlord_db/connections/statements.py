"""asyncpg's prepared statements, kept with a backend from one lent connection to the next.

Every new asyncpg connection starts with an empty statement cache, so under function-scoped loops
each test prepared each of its queries again: a round trip (Parse, Describe) before a statement's
first run, where a connection kept for the session runs it at once. Here the statements a lent
connection has the server prepare stay on its backend; the next connection lent that backend has
its Parse + Describe of the same text answered with what the server said the first time, and its
name for the statement changed to the server's in what it sends after (Bind, Describe; its Close
leaves the kept one alone).

A kept statement goes wrong when the schema it was prepared against changes, or what its names
resolve to: a test that creates, alters or drops a table, type, function, ... (or sets search_path)
in its transaction, rolled back after. Three guards:

- In the test that does it: once a test's SQL looks like such a change (DDL, SET, DO, CALL,
  PREPARE, DEALLOCATE, DISCARD, ...), nothing more is answered here for the rest of the test, and
  nothing it prepares after that is kept.
- For the tests after it: such a test writes rows to the catalogs, which the server counts (its
  statistics, kept by each backend until it flushes them): at the end of a test the reset reads its
  backend's count for the catalogs a statement's meaning depends on, and keeps the statements only
  when it is nought (and a count read on every reset: a transaction ended and begun again in one
  message, as ROLLBACK AND CHAIN does, leaves no trace but this). A test that did not
  end in the transaction it was given (failed, ended, begun again) keeps nothing, and neither does a
  server that does not count (``track_counts`` off). After a count that is not nought, the reset has
  the server flush its statistics at once (PostgreSQL 15 and later), so the next test counts afresh.
- The reset is DISCARD ALL without DEALLOCATE ALL (DISCARD PLANS included: a kept statement is
  planned again on its first use, under the next test's settings), and asks the server which
  prepared statements it has: whatever is not kept (SQL's PREPARE, a function's, a name the user
  gave) is closed before the backend is lent again. Only asyncpg's own names are kept.

What is not seen: a function that changes the schema, then the same test running a kept text (it can
get asyncpg's InvalidCachedStatementError, or a table it shadowed with a temporary one: the kept plan
is for the table it knew). The relay resets with DISCARD ALL as before.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from . import protocol

CAP = 100  # statements kept per backend: asyncpg's own cache holds 100 by default
NOWHERE = b"ovl_no_statement"  # a Close names it instead of a kept statement: closing what is not there is no error
OURS = b"__asyncpg_stmt_"  # the names asyncpg gives its statements, the only ones kept
# SQL that may change what a statement means, or which statements there are: from then on in that test,
# every Parse goes to the server. (A false alarm costs only the round trips saved.)
WARY = re.compile(rb"(?i)\b(?:create|alter|drop|grant|revoke|prepare|deallocate|discard|set_config|comment\s+on"
                  rb"|security\s+label|import\s+foreign|refresh\s+materialized|pg_settings)\b"
                  # those four only where a statement starts, after any comments (which cannot run past their end)
                  rb"|(?:^Q....|[;\x00])(?:\s|--[^\n]*|/\*(?:[^*]|\*(?!/))*\*/)*(?:set|reset|do|call)\b", re.DOTALL)

# This backend's writes to pg_class, pg_attribute, pg_type, pg_proc, pg_operator, pg_cast,
# pg_namespace and pg_rewrite not yet flushed to the server's statistics, the open transaction's
# included: NULL when the server does not count. Read whether or not the test's transaction has an id: one
# that ended in the same message as a new one began (ROLLBACK AND CHAIN) leaves a transaction that has none.
_PENDING = " + ".join(f"pg_catalog.pg_stat_get_xact_tuples_{what}({oid})" for oid in
                      (1259, 1249, 1247, 1255, 2617, 2605, 2615, 2618) for what in ("inserted", "updated", "deleted"))
_COUNTS = "WHEN NOT pg_catalog.current_setting('track_counts')::bool THEN NULL"
# Session advisory locks are let go here, in the test's transaction: after it, the rest is utility commands.
# A count that is not nought has the statistics flushed as soon as the backend is idle (PostgreSQL 15+).
_END = ("SELECT n AS ovl_end, pg_catalog.pg_advisory_unlock_all(){flush} FROM (SELECT CASE " + _COUNTS
        + " ELSE " + _PENDING + " END AS n) AS c")
_FLUSH = ", CASE WHEN n <> 0 THEN pg_catalog.pg_stat_force_next_flush() END"
END = {flush: protocol.query(_END.format(flush=_FLUSH if flush else "").encode()) for flush in (True, False)}
SESSION = protocol.query(b"CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; DISCARD TEMP; "
                         b"DISCARD SEQUENCES; DISCARD PLANS; SELECT name AS ovl_kept FROM pg_catalog.pg_prepared_statements")


def flushes(greeting: bytes) -> bool:
    """Whether the server that gave ``greeting`` (its ParameterStatus messages) has pg_stat_force_next_flush()."""
    for kind, message in protocol.split(greeting)[0]:
        if kind == b"S" and message[5:20] == b"server_version\x00":
            major = re.match(rb"\d+", message[20:])
            return major is not None and int(major.group()) >= 15
    return False


def _cstring(message: bytes, pos: int) -> tuple[bytes, int]:
    end = message.index(b"\x00", pos)
    return message[pos:end], end + 1


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def close(name: bytes) -> bytes:
    return _message(b"C", b"S" + name + b"\x00")


@dataclass(eq=False)
class Kept:
    """A backend's kept statements, and what the reset needs to know whether they still hold."""

    # Parse's text and parameter types -> the server's name for the statement and its answer to
    # Parse + Describe (ParseComplete, ParameterDescription, RowDescription or NoData)
    by_text: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)
    flush: bool | None = None  # its server has pg_stat_force_next_flush() (``flushes``), once known
    checking: bool = False  # the reset under way counts them (it kept the statements, if the count allows)

    def names(self) -> set[bytes]:
        return {name for name, _ in self.by_text.values()}


@dataclass(eq=False)
class Lending:
    """One lent connection's statements: the names it uses for kept ones, those it had the server
    prepare, and the answer to a Parse being read."""

    kept: Kept
    aliases: dict[bytes, bytes] = field(default_factory=dict)  # its name -> the server's
    made: set[bytes] = field(default_factory=set)  # prepared on the server for it and not kept
    reading: tuple[bytes, bytes] | None = None  # (name, text) of a Parse sent, its answer not yet whole
    wary: bool = False  # its SQL may have changed what a statement means: nothing more answered here
    answer: list[bytes] = field(default_factory=list)
    buffer: bytes = b""

    def outgoing(self, data: bytes) -> tuple[bytes, bytes]:
        """What of the connection's write goes to the server, and what is answered here instead."""
        head = data[:1]  # asyncpg writes a Parse, a Query or a Close at the start of a write
        if (head == b"Q" or head == b"P") and not self.wary and WARY.search(data):
            self.wary = True
        if head != b"P" and head != b"C" and not any(alias in data for alias in self.aliases):
            return data, b""
        messages, rest = protocol.split(data)
        if rest:  # not whole messages, which asyncpg never writes: passed on as they are
            return data, b""
        if [kind for kind, _ in messages] == [b"P", b"D", b"H"]:  # asyncpg's prepare: Parse, Describe, Flush
            name, pos = _cstring(messages[0][1], 5)
            text = messages[0][1][pos:]
            if name.startswith(OURS) and messages[1][1][5:] == b"S" + name + b"\x00":
                known = self.kept.by_text.get(text)
                if known is not None and not self.wary:
                    self.aliases[name] = known[0]
                    return b"", known[1]
                self.made.add(name)
                self.reading, self.answer, self.buffer = (name, text), [], b""
                return data, b""
        return b"".join(self._renamed(kind, message) for kind, message in messages), b""

    def _renamed(self, kind: bytes, message: bytes) -> bytes:
        if kind == b"P":
            name, _ = _cstring(message, 5)
            if name:
                self.made.add(name)
            return message
        if kind == b"B":
            portal, pos = _cstring(message, 5)
            name, end = _cstring(message, pos)
            server = self.aliases.get(name)
            return message if server is None else _message(b"B", portal + b"\x00" + server + b"\x00" + message[end:])
        if kind not in (b"D", b"C") or message[5:6] != b"S":
            return message
        name, _ = _cstring(message, 6)
        server = self.aliases.get(name)
        if kind == b"D":
            return message if server is None else _message(b"D", b"S" + server + b"\x00")
        # The connection is done with a statement (asyncpg drops its cache when a codec is set, and evicts):
        # a kept one stays for the next connection, and for this one's other names for it.
        if server is not None:
            del self.aliases[name]
            return close(NOWHERE)
        if name in self.kept.names():
            return close(NOWHERE)
        self.made.discard(name)
        return message

    def incoming(self, data: bytes) -> None:
        """The server's answer to a Parse + Describe sent, kept once whole."""
        if self.reading is None:
            return
        messages, self.buffer = protocol.split(self.buffer + data)
        for kind, message in messages:
            if kind in (b"1", b"t", b"T", b"n"):
                self.answer.append(message)
                if kind in (b"T", b"n"):
                    name, text = self.reading
                    # Prepared after the test changed what statements mean (wary): for this test only.
                    if not self.wary and len(self.kept.by_text) < CAP and text not in self.kept.by_text:
                        self.kept.by_text[text] = (name, b"".join(self.answer))
                        self.made.discard(name)
                    break
            elif kind in (b"E", b"Z"):  # not prepared (or not as expected): nothing to keep
                break
        else:
            return
        self.reading, self.answer, self.buffer = None, [], b""

    def reset(self, in_transaction: bool, begin: bool, greeting: bytes | bytearray) -> tuple[bytes, int]:
        """The reset of the backend as the connection leaves it (``in_transaction``: in the transaction it was
        given, still open; ``greeting``: what the server said as it started), and how many ReadyForQuery
        answers it gets."""
        kept = self.kept
        if kept.flush is None:
            kept.flush = flushes(bytes(greeting))
        ahead = (protocol.BEGIN, 1) if begin else (b"", 0)
        kept.checking = in_transaction
        if not in_transaction:  # what it wrote cannot be counted now: the relay's reset, DISCARD ALL
            kept.by_text.clear()
            return protocol.reset(begin)
        closes = b"".join(close(name) for name in sorted(self.made - kept.names()))
        closing = (closes + protocol.SYNC, 1) if closes else (b"", 0)
        return (protocol.COPY_FAIL + protocol.SYNC + END[bool(kept.flush)] + protocol.ROLLBACK + closing[0] + SESSION
                + ahead[0], 4 + closing[1] + ahead[1])


def settle(kept: Kept, messages: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Take in the reset's answers (whether the kept statements still hold); the names of prepared statements
    to close before the backend is lent again."""
    if not kept.checking:  # reset with DISCARD ALL: nothing is prepared
        return set()
    kept.checking = False
    values: dict[bytes, list[bytes | None]] = {}
    column = b""
    for kind, message in messages:
        if kind == b"T":
            column, _ = _cstring(message, 7)
            values.setdefault(column, [])
        elif kind == b"D":
            (size,) = struct.unpack_from("!i", message, 7)
            values.setdefault(column, []).append(None if size < 0 else message[11:11 + size])
    stale = set()
    if values.get(b"ovl_end") != [b"0"]:  # the schema may have changed under them
        stale, kept.by_text = kept.names(), {}
    if b"ovl_kept" in values:  # the server's own list: what it no longer has is not kept either
        there = {name for name in values[b"ovl_kept"] if name is not None}
        kept.by_text = {text: known for text, known in kept.by_text.items() if known[0] in there}
        stale |= there - kept.names()
    return stale
