"""psycopg2 connections for tests: one transaction per test, rolled back; commit() turned into a savepoint."""
from __future__ import annotations

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from .. import urls
from ..errors import ServerError

SAVEPOINT = "overlord_test"
# What a lost connection (or a server that cannot be reached) raises, as opposed to a failed statement.
SYNC_LOST = (psycopg2.OperationalError, psycopg2.InterfaceError, ServerError)
# What a rollback does not undo: session-level advisory locks, LISTEN, WITH HOLD
# cursors, session settings. asyncpg's own pool resets connections the same way.
RESET_SESSION = "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL"


# One round trip each way. The end rolls back to the savepoint first: if the test's transaction
# is no longer the one we began (a raw COMMIT or ROLLBACK, maybe followed by a new BEGIN), the
# savepoint is gone, that statement fails, and so the commit is detected with no extra query.
BEGIN_TEST = f"BEGIN; SAVEPOINT {SAVEPOINT}"
END_TEST = f"ROLLBACK TO SAVEPOINT {SAVEPOINT}; ROLLBACK; {RESET_SESSION}"
ENDED = (psycopg2.errors.NoActiveSqlTransaction, psycopg2.errors.InvalidSavepointSpecification)


class SavepointConnection(psycopg2.extensions.connection):
    """psycopg2 connection whose commit()/rollback() act on a savepoint while a test runs.

    Code under test that commits (as application code does) keeps working and
    sees its own writes, but everything is still rolled back after the test.
    """

    _in_test = False

    def begin_test(self) -> None:
        # END_TEST leaves psycopg2 believing a transaction is open (it sent the ROLLBACK itself), so
        # BEGIN_TEST goes as it is, in one round trip, and makes that belief true again. Only on a
        # connection psycopg2 knows idle (the first test, or after a commit) does it send its own BEGIN.
        query = f"SAVEPOINT {SAVEPOINT}" if self.status == psycopg2.extensions.STATUS_READY else BEGIN_TEST
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
        """Roll the test back and reset the session; False if the test's transaction was ended behind our back."""
        self._in_test = False
        if self.closed:
            return False
        try:
            with self.cursor() as cur:
                cur.execute(END_TEST)
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
