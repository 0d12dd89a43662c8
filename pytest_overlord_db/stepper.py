"""A database a test walks along the migration chain, for testing data migrations (``overlord_migrator``).

It starts empty (migrations, not the template, bring it to a level: a rollback
is not a way to reach one), and moves with the project's own migrator, so
yoyo, the seed's SQL folders and custom tools behave as they do in
production. Targets are ids or numbers, resolved as the CLI resolves them
(``position``). Migration tools commit each migration on a connection of their
own, so the test's rows must be committed first; a session left in an open
transaction would hold the locks the migration waits for, and is named
instead of hanging the test.
"""
from __future__ import annotations

from typing import Any, Union

import psycopg2
import psycopg2.extensions

from . import urls
from .declarations import refuse_crossing
from .errors import ConfigError
from .migrators import Migration, Migrator, position
from .polling import poll
from .servers.base import connect
from .template import Templates

Target = Union[str, int]


class MigrationStepper:
    """An empty database of its own, moved through the chain by ``migrate_to``, ``migrate_up``,
    ``migrate_down`` and ``rollback_to``; ``conn`` (autocommit psycopg2) or ``url`` for the test's rows."""

    def __init__(self, templates: Templates, migrator: Migrator, irreversible: tuple[dict[str, str], ...] = (),
                 chain: list[Migration] | None = None) -> None:
        self.templates = templates
        self.migrator = migrator
        self.irreversible = irreversible
        self.chain: list[Migration] = migrator.chain() if chain is None else chain  # read once per run by the plugin
        self.name = templates.create_empty("fresh")
        self.url = templates.url(self.name)
        self._conns: list[psycopg2.extensions.connection] = []

    @property
    def dsn(self) -> dict[str, object]:
        return urls.dsn_parts(self.url)

    @property
    def ids(self) -> list[str]:
        """Every migration's id, in the order the tool applies them."""
        return [m.id for m in self.chain]

    def __repr__(self) -> str:  # pytest --showlocals: no password
        return f"MigrationStepper(name={self.name!r}, url={urls.mask(self.url)!r}, at={self.current()!r})"

    # -- connections --------------------------------------------------------------------
    @property
    def conn(self) -> psycopg2.extensions.connection:
        """One autocommit psycopg2 connection, kept for the test: every statement is committed at once,
        so the next migration sees it."""
        if not self._conns or self._conns[0].closed:
            self._conns.insert(0, self.connect())
        return self._conns[0]

    def connect(self) -> psycopg2.extensions.connection:
        """A new autocommit psycopg2 connection, closed when the test ends."""
        made = connect(self.url)
        made.autocommit = True
        self._conns.append(made)
        return made

    # -- where it is --------------------------------------------------------------------
    def applied(self) -> list[str]:
        """The ids applied now, in chain order."""
        done = {a.id for a in self.migrator.applied(self.url)}
        return [m.id for m in self.chain if m.id in done]

    def current(self) -> str | None:
        """The last migration applied, or None when the database is empty."""
        done = self.applied()
        return done[-1] if done else None

    def _level(self) -> int:
        """How many migrations of the chain are applied (they always form its start here)."""
        return len(self.applied())

    def index(self, target: Target) -> int:
        """The chain position of ``target`` (an id, its number, or that number as an int)."""
        __tracebackhide__ = True
        try:
            return position(self.chain, str(target))
        except ConfigError as exc:
            error = str(exc)
        raise ConfigError(error)  # from here, a frame pytest hides: the report ends at the test's own line

    # -- moving ---------------------------------------------------------------------------
    def migrate_to(self, target: Target) -> list[str]:
        """Bring the database to ``target``: applied up to and including it, nothing after it
        (forward or back, whichever it takes). Returns the ids applied or rolled back."""
        __tracebackhide__ = True
        return self._move_to(self.index(target) + 1)

    def migrate_up(self, steps: int = 1) -> list[str]:
        """Apply the next ``steps`` migrations."""
        __tracebackhide__ = True
        level = self._level()
        if steps < 1 or level + steps > len(self.chain):
            at = self.chain[level - 1].id if level else "an empty database"
            raise ConfigError(f"migrate_up({steps}): the database is at {at}, and {len(self.chain) - level} "
                              f"migration(s) are left to apply. Migrations: {', '.join(self.ids) or 'none'}.")
        return self._move_to(level + steps)

    def migrate_down(self, steps: int = 1) -> list[str]:
        """Roll back the last ``steps`` migrations."""
        __tracebackhide__ = True
        level = self._level()
        if steps < 1 or steps > level:
            raise ConfigError(f"migrate_down({steps}): only {level} migration(s) are applied "
                              f"({', '.join(self.applied()) or 'none'}).")
        return self._move_to(level - steps)

    def rollback_to(self, target: Target | None) -> list[str]:
        """Roll back everything after ``target``, which stays applied; ``None`` rolls back every migration.
        Refuses to apply: ``target`` must be applied already."""
        __tracebackhide__ = True
        keep = 0 if target is None else self.index(target) + 1
        level = self._level()
        if keep > level:
            raise ConfigError(f"rollback_to({target!r}): {self.chain[keep - 1].id} is not applied (the database is at "
                              f"{self.chain[level - 1].id if level else 'no migration'}); use migrate_to to apply it.")
        return self._move_to(keep)

    def _move_to(self, level: int) -> list[str]:
        __tracebackhide__ = True
        now = self._level()
        if level == now:
            return []
        self._refuse_open_transactions()
        if level > now:
            todo = self.chain[now:level]
            return [a.id for a in self.migrator.apply(self.url, todo, lock=False, quiet=True)]
        todo = list(reversed(self.chain[level:now]))
        refuse_crossing([m.id for m in todo], self.irreversible)
        return [a.id for a in self.migrator.rollback(self.url, todo, lock=False, quiet=True)]

    def _refuse_open_transactions(self) -> None:
        __tracebackhide__ = True
        # A connection just closed (the migrator's own look at what is applied) is listed until its
        # backend has exited, in the state it was left in: only one that stays is in the way.
        gone = poll(lambda: not self.templates.open_transactions(self.name), timeout=0.5, interval=0.005)
        stuck = [] if gone else self.templates.open_transactions(self.name)
        if stuck:
            raise ConfigError(
                f"A connection to {self.name} is in an open transaction (backend {', '.join(map(str, stuck))}), so the "
                "migration would wait for its locks: commit or roll it back first (overlord_migrator.conn commits "
                "every statement itself).")

    # -- the end ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the test's connections (the database is dropped, or kept, by its owner)."""
        for made in self._conns:
            try:
                made.close()
            except psycopg2.Error:
                pass
        self._conns.clear()

    def execute(self, query: str, params: Any = None) -> None:
        """Run ``query`` on ``conn`` (committed at once)."""
        with self.conn.cursor() as cur:
            cur.execute(query, params)

    def fetch(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """The rows of ``query`` on ``conn``, for asserting on transformed data."""
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []
