"""yoyo's connections: the copies it makes for each migration's steps, made cancellable, and one backend kept
per database for a walk (``YoyoMigrator.session``).

A one-migration run used to cost about 30 ms, most of it not the migration: yoyo's backend is a new
connection, and each run creates its lock table, tests for transactional DDL in a scratch table and lists
the tables. Within a session the runs on its database share the backend (yoyo's bookkeeping connection,
which runs no migration's SQL). The steps still run on a new connection each, as yoyo makes them: no
reset makes a used connection as new (RESET leaves a custom setting one migration made defined as '' for
the next, where a new connection has none). A run that fails gives its backend up: the next starts afresh.

Those new connections are made ahead, on a thread of their own, while the walk takes its snapshots (a
connection costs ~3 ms, three per migration). A spare is started only once the run before it is over, its
post-apply steps included, so it sees every setting (ALTER DATABASE/ROLE ... SET) a migration left, as a
connection yoyo makes itself would.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Callable, Iterator

import psycopg2

from .. import interrupts


def cancellable_copies(be: Any, spare: Callable[[], Any | None] = lambda: None) -> list[Any]:
    """yoyo runs each migration's steps on a copy of the backend, a connection of its own: register those
    copies, so an interrupt or the timeout cancels the statement they run. ``spare`` gives a copy made
    ahead, if there is one. Returns the list of copies made, to unregister when the run is over."""
    make_copy = functools.partial(type(be).copy, be)  # yoyo's own, also when a kept backend runs again
    made: list[Any] = []

    def copy() -> Any:
        other = spare() or make_copy()
        other._internal_schema_updated = True  # the original just checked the same database
        interrupts.register(other.connection)
        made.append(other.connection)
        return other

    be.copy = copy
    return made


class _Spare:
    """A copy of a kept backend, being made on a thread of its own."""

    def __init__(self, be: Any) -> None:
        self._done = threading.Event()
        self._copy: Any = None
        threading.Thread(target=self._make, args=(be,), name="overlord-yoyo-connect", daemon=True).start()

    def _make(self, be: Any) -> None:
        try:
            self._copy = type(be).copy(be)
        except Exception:  # noqa: BLE001 - the run makes its copy itself then, and reports what fails
            pass
        finally:
            self._done.set()

    def take(self) -> Any | None:
        self._done.wait()
        return self._copy

    def discard(self) -> None:
        copy = self.take()
        if copy is not None:
            with contextlib.suppress(psycopg2.Error):
                copy.connection.close()


class Sessions:
    """The databases a session is open on, their kept backends and the copies made ahead for them."""

    def __init__(self, make: Callable[[str], Any]) -> None:
        self._make = make
        self._open: dict[str, Any | None] = {}
        self._spares: dict[str, _Spare] = {}

    @contextlib.contextmanager
    def session(self, url: str) -> Iterator[None]:
        self._open.setdefault(url, None)
        try:
            yield
        finally:
            self.give_up(url)
            self._open.pop(url, None)

    def backend(self, url: str) -> Any | None:
        """The kept backend of ``url`` (made on first use); None outside a session."""
        if url not in self._open:
            return None
        if self._open[url] is None:
            self._open[url] = self._make(url)
        return self._open[url]

    def prepare(self, url: str) -> None:
        """Start making the next copy of ``url``'s kept backend: the run before it is over."""
        be = self._open.get(url)
        if be is not None and url not in self._spares:
            self._spares[url] = _Spare(be)

    def spare(self, url: str) -> Any | None:
        """The copy made ahead for ``url``, if any (taken: the next is made after this run)."""
        made = self._spares.get(url)
        if made is None:
            return None
        copy = made.take()  # still listed while it is made: on Ctrl-C here give_up closes it
        del self._spares[url]
        return copy

    def give_up(self, url: str) -> None:
        """Close ``url``'s kept connections (after a failure, or when the session ends)."""
        made = self._spares.pop(url, None)
        if made is not None:
            made.discard()
        be = self._open.get(url)
        if be is None:
            return
        self._open[url] = None
        with contextlib.suppress(psycopg2.Error):
            be.connection.close()
