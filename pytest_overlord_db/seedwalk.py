"""The round trip with the project's seed data: seeds/ENV/*.sql fit the newest schema, so this walk starts
at the top and goes down.

On a database of its own with every migration applied and the seed files loaded, for each migration from
the newest down: roll it back (the database is now at the level below it, holding the seed rows as the
rollbacks left them), snapshot B, apply it, roll it back again, snapshot R. R must equal B, schema and
every row: a migration whose apply and rollback do not give the seed rows back exactly loses real data.
The walk stops at a migration declared irreversible (it is never rolled back) and at the first rollback
that fails (nothing below it can be reached).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import schema, seeds
from .errors import MigrationError
from .migrators import Migration
from .verdicts import Verdict
from .walker import Walker, accept


def walk(walker: Walker, applied: Sequence[Migration], seed_files: Sequence[Path], verdicts: dict[str, Verdict],
         accepted: list[dict[str, str]], used: set[int], floor: int, env: str) -> str | None:
    """Fold the seeded check into each migration's verdict; returns an error that stopped the walk early."""
    walker.fresh(list(applied))
    try:
        seeds.load(walker.connection(), list(seed_files))
    except seeds.SeedError as exc:
        return f"The seed data of {env} could not be loaded on top of every migration: {exc}"
    for index in range(len(applied) - 1, floor - 1, -1):
        migration = applied[index]
        verdict = verdicts[migration.id]
        try:
            walker.migrator.rollback(walker.url, [migration], lock=False, quiet=True)
            before = walker.snapshot()
            walker.migrator.apply(walker.url, [migration], lock=False, quiet=True)
            walker.migrator.rollback(walker.url, [migration], lock=False, quiet=True)
        except MigrationError as exc:
            _fail(verdict, "rollback_failed", f"With the seed data of {env} loaded: {exc}")
            return f"the walk with the seed data of {env} stopped at {migration.id}"
        entries = [a for a in accepted if a["migration"] == migration.id]
        diff = accept(schema.compare(before, walker.snapshot()), entries, used, verdict)
        if diff:
            _fail(verdict, "irreversible", "", f"With the seed data of {env}:\n"
                  + diff.render(f"before apply (seed data {env})", "after rollback"))
    return None


def _fail(verdict: Verdict, status: str, error: str, diff: str = "") -> None:
    """A failure here does not hide an earlier one: the first status stays, the findings add up."""
    if verdict.ok:
        verdict.status = status
    if error:
        verdict.error = f"{verdict.error} {error}" if verdict.error else error
    if diff:
        verdict.diff = f"{verdict.diff}\n{diff}" if verdict.diff else diff
