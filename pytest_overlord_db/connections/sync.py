"""psycopg2 connections for tests: one transaction per test, rolled back; commit() turned into a savepoint."""
from __future__ import annotations

import psycopg2
import psycopg2.extensions

from .. import urls
from ..errors import ServerError

SAVEPOINT = "overlord_test"
# What a lost connection (or a server that cannot be reached) raises, as opposed to a failed statement.
SYNC_LOST = (psycopg2.OperationalError, psycopg2.InterfaceError, ServerError)
# What a rollback does not undo: session-level advisory locks, LISTEN, WITH HOLD
# cursors, session settings. asyncpg's own pool resets connections the same way.
RESET_SESSION = "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL"


class SavepointConnection(psycopg2.extensions.connection):
    """psycopg2 connection whose commit()/rollback() act on a savepoint while a test runs.

    Code under test that commits (as application code does) keeps working and
    sees its own writes, but everything is still rolled back after the test.
    """

    _in_test = False
    _xid: int | None = None

    def begin_test(self) -> None:
        # One round trip (after psycopg2's own BEGIN); the xid tells at the end
        # whether the transaction we opened is still the one in progress.
        with self.cursor() as cur:
            cur.execute(f"SAVEPOINT {SAVEPOINT}; SELECT txid_current()")
            row = cur.fetchone()
            self._xid = row[0] if row else None
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
        """Roll the test back; False if the test's transaction was committed behind our back."""
        self._in_test = False
        intact = False
        if not self.closed and self.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INTRANS:
            with self.cursor() as cur:
                cur.execute("SELECT txid_current_if_assigned()")
                row = cur.fetchone()
                intact = row is not None and row[0] == self._xid
        elif not self.closed and self.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INERROR:
            intact = True  # a failed statement; the rollback below undoes everything
        if not self.closed:
            super().rollback()
            if self.autocommit:
                intact = False
            self.autocommit = True  # the reset must not open (and leave) a transaction
            try:
                with self.cursor() as cur:
                    cur.execute(RESET_SESSION)
            finally:
                self.autocommit = False
        return intact


def connect_sync(url: str) -> SavepointConnection:
    conn = psycopg2.connect(urls.normalize(url), connection_factory=SavepointConnection)
    assert isinstance(conn, SavepointConnection)
    return conn
