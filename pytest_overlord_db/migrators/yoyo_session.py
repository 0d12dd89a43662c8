"""yoyo's connections: the copies it makes for each migration's steps, made cancellable, and one backend kept
per database for a walk (``YoyoMigrator.session``).

A one-migration run used to cost about 30 ms, most of it not the migration: yoyo's backend is a new
connection, and each run creates its lock table, tests for transactional DDL in a scratch table and lists
the tables. Within a session the runs on its database share the backend (yoyo's bookkeeping connection,
which runs no migration's SQL). The steps still run on a new connection each, as yoyo makes them: no
reset makes a used connection as new (RESET leaves a custom setting one migration made defined as '' for
the next, where a new connection has none). A run that fails gives its backend up: the next starts afresh.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import psycopg2

from .. import interrupts


def cancellable_copies(be: Any) -> list[Any]:
    """yoyo runs each migration's steps on a copy of the backend, a connection of its own: register those
    copies, so an interrupt or the timeout cancels the statement they run. Returns the list of copies
    made, to unregister when the run is over."""
    make_copy = functools.partial(type(be).copy, be)  # yoyo's own, also when a kept backend runs again
    made: list[Any] = []

    def copy() -> Any:
        other = make_copy()
        other._internal_schema_updated = True  # the original just checked the same database
        interrupts.register(other.connection)
        made.append(other.connection)
        return other

    be.copy = copy
    return made


class Sessions:
    """The databases a session is open on, and their kept backends."""

    def __init__(self, make: Callable[[str], Any]) -> None:
        self._make = make
        self._open: dict[str, Any | None] = {}

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

    def give_up(self, url: str) -> None:
        """Close ``url``'s kept connections (after a failure, or when the session ends)."""
        be = self._open.get(url)
        if be is None:
            return
        self._open[url] = None
        with contextlib.suppress(psycopg2.Error):
            be.connection.close()
