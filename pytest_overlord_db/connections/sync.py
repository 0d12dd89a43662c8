"""psycopg2 connections for tests: one transaction per test, rolled back; commit() turned into a savepoint."""
from __future__ import annotations

import select
import time

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from .. import urls
from ..errors import ServerError

SAVEPOINT = "overlord_test"
# What a lost connection (or a server that cannot be reached) raises, as opposed to a failed statement.
SYNC_LOST = (psycopg2.OperationalError, psycopg2.InterfaceError, ServerError)
# What a committed session can keep: session-level advisory locks, LISTEN, WITH HOLD
# cursors, session settings. asyncpg's own pool resets connections the same way.
RESET_SESSION = "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL"
# What a rolled-back one can keep: of those, only the advisory locks. A SET, a LISTEN or a WITH HOLD
# cursor inside the test's transaction goes with its rollback (PostgreSQL's documented semantics of
# each), so the full reset is only for a test that committed behind the fixture's back.
RESET_ROLLED_BACK = "SELECT pg_advisory_unlock_all()"


# The end of one test and the begin of the next travel in one message, so a test costs one round trip of
# its own where a hand-written fixture pays two (BEGIN, ROLLBACK). The message rolls back to the
# savepoint first: if the test's transaction is no longer the one we began (a raw COMMIT or ROLLBACK,
# maybe followed by a new BEGIN), the savepoint is gone, that statement fails, the rest of the message
# is not run, and so the commit is detected with no extra query. The advisory locks are let go inside
# the transaction, where it costs no transaction of its own.
BEGIN_TEST = f"BEGIN; SAVEPOINT {SAVEPOINT}"
END_TEST = f"ROLLBACK TO SAVEPOINT {SAVEPOINT}; {RESET_ROLLED_BACK}; ROLLBACK"
END_AND_BEGIN = f"{END_TEST}; {BEGIN_TEST}"
RENEW = f"ROLLBACK; {BEGIN_TEST}"
# now() in a test is its transaction's start. A transaction begun at the previous test's end is used only
# while it is this young, so now() is never more than this much older than the test's setup; an
# older one (a slow test without a database ran in between) is begun again.
FRESH = 0.01
ENDED = (psycopg2.errors.NoActiveSqlTransaction, psycopg2.errors.InvalidSavepointSpecification)


def quiet(fd: int) -> bool:
    """Nothing arrived on an idle connection's socket since its last answer. A backend that ended meanwhile
    (terminated, the server restarted) has said so there, or closed it: a test must not be handed it
    with nothing sent, since only a statement would find out."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return not poller.poll(0)


class SavepointConnection(psycopg2.extensions.connection):
    """psycopg2 connection whose commit()/rollback() act on a savepoint while a test runs.

    Code under test that commits (as application code does) keeps working and
    sees its own writes, but everything is still rolled back after the test.
    """

    _in_test = False
    _primed_at: float | None = None  # when END_AND_BEGIN began the next test's transaction

    def begin_test(self) -> None:
        primed, self._primed_at = self._primed_at, None
        if primed is None:
            # psycopg2 believes a transaction is open after a test (it sent no ROLLBACK itself), so
            # BEGIN_TEST goes as it is; on a connection it knows idle (the first test, or after a
            # commit) it sends its own BEGIN first, and then only the savepoint is ours to send.
            query = f"SAVEPOINT {SAVEPOINT}" if self.status == psycopg2.extensions.STATUS_READY else BEGIN_TEST
        elif time.monotonic() - primed > FRESH or not quiet(self.fileno()):
            query = RENEW  # too old for now(), or the backend may be gone: a statement finds out
        else:
            query = ""  # begun at the last test's end, a moment ago
        if query:
            with self.cursor() as cur:
                cur.execute(query)
        self._in_test = True

    def commit(self) -> None:
        if not self._in_test:
            return super().commit()
        with self.cursor() as cur:
            cur.execute(f"RELEASE SAVEPOINT {SAVEPOINT}; SAVEPOINT {SAVEPOINT}")

    def rollback(self) -> None:
        if not self._in_test:
            return super().rollback()
        with self.cursor() as cur:
            cur.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")

    def end_test(self) -> bool:
        """Roll the test back and begin the next one's transaction (the connection stays in it); False, and the
        session reset, if the test's transaction was ended behind our back."""
        self._in_test = False
        self._primed_at = None
        if self.closed:
            return False
        try:
            with self.cursor() as cur:
                cur.execute(END_AND_BEGIN)
            self._primed_at = time.monotonic()
            return True
        except ENDED:
            pass
        super().rollback()  # whatever transaction is open now; psycopg2 then knows the connection idle
        self.autocommit = True  # the reset must not open (and leave) a transaction
        try:
            with self.cursor() as cur:
                cur.execute(RESET_SESSION)
        finally:
            self.autocommit = False
        del self.notices[:]  # "there is no transaction in progress", from that rollback
        return False


def connect_sync(url: str, vectors: bool = False) -> SavepointConnection:
    """``vectors``: register pgvector's types on it, when the package is there and the database has them."""
    conn = psycopg2.connect(urls.normalize(url), connection_factory=SavepointConnection)
    assert isinstance(conn, SavepointConnection)
    if vectors:
        from .vectors import register_psycopg2

        register_psycopg2(conn)
    return conn
