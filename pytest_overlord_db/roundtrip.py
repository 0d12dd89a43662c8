"""Prove every rollback: apply -> rollback -> apply, with catalog snapshots compared.

For each migration, in the tool's apply order, on a throwaway database at the level
before it: snapshot S, apply, snapshot A, roll back, snapshot R, apply again,
snapshot A2. R must equal S (schema and data) and A2 must equal A (schema and
row counts: re-applied rows may carry new uuids and timestamps). After a
failure the walk carries on from a clean database brought to that level, so
one bad migration never hides the verdicts of the others. Finally everything
is rolled back to empty and applied again.

A migration the project declares irreversible on purpose is applied and never
required to roll back: its verdict is ``declared_irreversible``, which passes.
When it has a rollback anyway, that rollback is tried on the throwaway
database, and if it restores everything exactly the declaration is reported
as stale. Later migrations are still checked one by one on top of it; the
full cycle rolls back only down to it (pytest-alembic's
``minimum_downgrade_revision``, declared per migration).

Migration tools commit each migration themselves (yoyo does), so none of
this can hide in a transaction: it all happens in databases this module
creates and drops. Everything goes through the Migrator interface.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import psycopg2

from . import datagen, schema
from .errors import MigrationError
from .migrators import Migration, Migrator
from .template import Templates
from .verdicts import DECLARED, FULL_CYCLE, PASSING, STATUSES, Report, Verdict

__all__ = ["DECLARED", "FULL_CYCLE", "PASSING", "STATUSES", "Report", "Verdict", "run"]

class _Walker:
    """One throwaway database walked up the migration chain."""

    def __init__(self, templates: Templates, migrator: Migrator) -> None:
        self.templates = templates
        self.migrator = migrator
        self.name: str | None = None
        self.conn: psycopg2.extensions.connection | None = None

    @property
    def url(self) -> str:
        assert self.name
        return self.templates.url(self.name)

    def fresh(self, level: list[Migration]) -> None:
        """A clean database with exactly ``level`` applied."""
        self.close()
        self.name = self.templates.create_empty("roundtrip")
        if level:
            self.migrator.apply(self.url, level, lock=False, quiet=True)

    def connection(self) -> psycopg2.extensions.connection:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg2.connect(self.url)
        return self.conn

    def snapshot(self, data: bool = True) -> schema.Snapshot:
        return schema.take(self.connection(), data=data, bookkeeping=self.migrator.bookkeeping)

    def close(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        self.conn = None
        if self.name:
            self.templates.drop(self.name)
            self.name = None


def _accept(diff: schema.Diff, entries: list[dict[str, str]], used: set[int], verdict: Verdict) -> schema.Diff:
    keys = diff.keys()
    for entry in entries:
        if entry["object"] in keys:
            used.add(id(entry))
            if not any(a["object"] == entry["object"] for a in verdict.accepted):
                verdict.accepted.append({"object": entry["object"], "reason": entry["reason"]})
    return diff.without(e["object"] for e in entries)


def run(
    templates: Templates,
    migrator: Migrator,
    accepted: list[dict[str, str]] | tuple[dict[str, str], ...] = (),
    on_verdict: Callable[[Verdict], None] | None = None,
    irreversible: Sequence[dict[str, str]] = (),
    rows: int = 3,
    data_seed: int = 0,
) -> Report:
    """The verdict of every migration; ``accepted`` and ``irreversible`` are the project's declarations."""
    started = time.perf_counter()
    chain = migrator.chain()
    accepted = list(accepted)
    declared = {d["migration"]: d["reason"] for d in irreversible}
    exact: list[str] = []  # declared irreversible, yet their rollback restores everything
    floor: tuple[int, str] | None = None  # the full cycle stops above the last declared one
    used: set[int] = set()
    gaps: dict[str, dict[str, str]] = {}
    verdicts: list[Verdict] = []
    walker = _Walker(templates, migrator)
    applied: list[Migration] = []
    try:
        walker.fresh([])
        before = walker.snapshot()
        for migration in chain:
            t0 = time.perf_counter()
            verdict = Verdict(migration.id)
            entries = [a for a in accepted if a["migration"] == migration.id]
            if rows:
                before = _fill(walker, before, rows, data_seed, gaps, migration.id)
            if migration.id in declared:
                clean, rolls_back = _check_declared(walker, migration, before, verdict, declared[migration.id])
                level_snapshot = None
                if rolls_back:
                    exact.append(migration.id)
            else:
                clean, level_snapshot = _check(walker, migration, before, verdict, entries, used)
            if verdict.status != "apply_failed":
                applied.append(migration)
            if not clean:
                try:
                    walker.fresh(applied)  # carry on from a clean database at this level
                except MigrationError as exc:
                    # It cannot even be applied to a clean database (it changed
                    # something outside it, a role say): go on without it.
                    applied.remove(migration)
                    walker.fresh(applied)
                    verdict.error = (verdict.error or "") + (
                        f" It cannot be applied to a clean database any more ({exc}); later migrations are checked without it.")
            # A clean check ends with the snapshot of its re-apply: the database at the new level.
            before = level_snapshot if clean and level_snapshot is not None else walker.snapshot()
            if verdict.status == DECLARED:
                floor = (len(applied), migration.id)
            verdict.seconds = time.perf_counter() - t0
            verdicts.append(verdict)
            if on_verdict:
                on_verdict(verdict)
        full = None
        if applied:
            # On a database of its own, without generated rows: rolling everything back drops their tables,
            # so they could never come back.
            level = floor[0] if floor else 0
            walker.fresh(applied[:level])
            bottom = walker.snapshot()
            full = _full_cycle(walker, applied[level:], bottom, accepted, used)
            if floor:
                full.accepted.insert(0, {"object": f"rolled back only down to {floor[1]}", "reason": declared[floor[1]]})
    finally:
        walker.close()
    known = {m.id for m in chain}
    stale = [
        {"migration": a["migration"], "object": a["object"], "reason": a["reason"],
         "why": "no such migration" if a["migration"] not in known else "nothing it names was left behind"}
        for a in accepted if id(a) not in used
    ] + [
        {"migration": m, "object": "(declared irreversible)", "reason": declared[m],
         "why": "no such migration" if m not in known else "its rollback restores everything exactly"}
        for m in declared if m not in known or m in exact
    ]
    return Report(verdicts, full, stale, time.perf_counter() - started, list(gaps.values()))


def _fill(walker: _Walker, before: schema.Snapshot, rows: int, data_seed: int, gaps: dict[str, dict[str, str]],
          migration: str) -> schema.Snapshot:
    """Rows in every table before ``migration``; the snapshot ``before`` with the data as it now is."""
    conn = walker.connection()
    def gap(table: str, why: str) -> None:
        gaps.setdefault(table, {"table": table, "migration": migration, "why": why})
    filled = datagen.fill(conn, datagen.read_tables(conn, walker.migrator.bookkeeping, empty_only=True), rows,
                          data_seed, gap)
    return schema.with_data(conn, before, filled) if filled else before


def _check(walker: _Walker, migration: Migration, before: schema.Snapshot, verdict: Verdict,
           entries: list[dict[str, str]], used: set[int]) -> tuple[bool, schema.Snapshot | None]:
    """Fill ``verdict``; return whether the walker's database is cleanly at the new level, and its snapshot
    there when one was taken."""
    try:
        walker.migrator.apply(walker.url, [migration], lock=False, quiet=True)
    except MigrationError as exc:
        verdict.status, verdict.error = "apply_failed", str(exc)
        return False, None
    if not migration.reversible:
        verdict.status = "no_rollback"
        verdict.error = (f"A step of this migration has no rollback; {walker.migrator.name} would 'roll it back' as a "
                         "silent no-op. Give every step a rollback, or declare it irreversible on purpose "
                         "([[tool.overlord_db.irreversible]] in pyproject.toml: migration and reason).")
        return True, None
    after = walker.snapshot()
    try:
        walker.migrator.rollback(walker.url, [migration], lock=False, quiet=True)
    except MigrationError as exc:
        verdict.status, verdict.error = "rollback_failed", str(exc)
        return False, None
    rolled_back = walker.snapshot()
    diff = _accept(schema.compare(before, rolled_back), entries, used, verdict)
    if diff:
        verdict.status = "irreversible"
        verdict.diff = diff.render("before apply", "after rollback")
    try:
        walker.migrator.apply(walker.url, [migration], lock=False, quiet=True)
    except MigrationError as exc:
        if verdict.status == "ok":
            verdict.status = "reapply_failed"
        verdict.error = f"Re-applying after the rollback failed: {exc}"
        return False, None
    again = walker.snapshot()
    diff2 = _accept(schema.compare(after, again, counts_only=True), entries, used, verdict)
    if diff2 and verdict.status == "ok":
        verdict.status = "reapply_failed"
        verdict.diff = diff2.render("first apply", "re-apply")
    return verdict.status == "ok", again


def _check_declared(walker: _Walker, migration: Migration, before: schema.Snapshot, verdict: Verdict,
                    reason: str) -> tuple[bool, bool]:
    """Apply a migration declared irreversible; try its rollback, if it has one, to see whether the declaration is
    stale. Returns (the walker's database is cleanly at the new level, the rollback restored everything)."""
    try:
        walker.migrator.apply(walker.url, [migration], lock=False, quiet=True)
    except MigrationError as exc:
        verdict.status, verdict.error = "apply_failed", str(exc)
        return False, False
    verdict.status = DECLARED
    verdict.accepted.append({"object": "the whole migration is irreversible", "reason": reason})
    if not migration.reversible:
        return True, False
    try:
        walker.migrator.rollback(walker.url, [migration], lock=False, quiet=True)
    except MigrationError:
        return False, False
    return False, not schema.compare(before, walker.snapshot())  # either way, rebuilt at the new level


def _full_cycle(walker: _Walker, applied: list[Migration], bottom: schema.Snapshot,
                accepted: list[dict[str, str]], used: set[int]) -> Verdict:
    t0 = time.perf_counter()
    verdict = Verdict(FULL_CYCLE)
    try:
        walker.migrator.apply(walker.url, applied, lock=False, quiet=True)
    except MigrationError as exc:
        verdict.status, verdict.error = "apply_failed", f"Applying them all in one run failed: {exc}"
        verdict.seconds = time.perf_counter() - t0
        return verdict
    top = walker.snapshot()
    try:
        walker.migrator.rollback(walker.url, applied, lock=False, quiet=True)
    except MigrationError as exc:
        verdict.status, verdict.error = "rollback_failed", str(exc)
    else:
        diff = _accept(schema.compare(bottom, walker.snapshot()), accepted, used, verdict)
        if diff:
            verdict.status, verdict.diff = "irreversible", diff.render("bottom of the walk", "after rolling everything back")
        try:
            walker.migrator.apply(walker.url, applied, lock=False, quiet=True)
        except MigrationError as exc:
            # What the rollback left behind is the cause: keep "irreversible" when it said so, as _check does.
            verdict.status = "reapply_failed" if verdict.ok else verdict.status
            verdict.error = f"Re-applying after the rollback failed: {exc}"
        else:
            diff2 = schema.compare(top, walker.snapshot(), counts_only=True).without(a["object"] for a in accepted)
            if diff2 and verdict.ok:
                verdict.status, verdict.diff = "reapply_failed", diff2.render("first apply", "re-apply")
    verdict.seconds = time.perf_counter() - t0
    return verdict
