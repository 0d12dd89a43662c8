"""Prove every rollback: apply -> rollback -> apply, with catalog snapshots compared.

For each migration, in the tool's apply order, on a throwaway database at the level
before it: snapshot S, apply, snapshot A, roll back, snapshot R, apply again,
snapshot A2. R must equal S (schema and data) and A2 must equal A (schema and
row counts: re-applied rows may carry new uuids and timestamps). After a
failure the walk carries on from a clean database brought to that level, so
one bad migration never hides the verdicts of the others. Finally everything
is rolled back to empty and applied again (``fullcycle``: on the walk's own
database when it was never rebuilt), and, given seed files, the walk down
from the top with the seed data loaded (``seedwalk``) is folded in.

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
from pathlib import Path
from typing import Callable, Sequence

from . import datagen, fullcycle, schema, seedwalk
from .config import Settings
from .errors import MigrationError
from .migrators import Migration, Migrator
from .template import Templates
from .verdicts import DECLARED, FULL_CYCLE, PASSING, SEEDED, STATUSES, Report, Verdict
from .walker import Walker, accept

__all__ = ["DECLARED", "FULL_CYCLE", "PASSING", "SEEDED", "STATUSES", "Report", "Verdict", "run"]

def run(
    templates: Templates,
    migrator: Migrator,
    accepted: list[dict[str, str]] | tuple[dict[str, str], ...] = (),
    on_verdict: Callable[[Verdict], None] | None = None,
    irreversible: Sequence[dict[str, str]] = (),
    rows: int = 3,
    data_seed: int = 0,
    seed_files: Sequence[Path] = (),
    seed_env: str = "",
) -> Report:
    """The verdict of every migration; ``accepted`` and ``irreversible`` are the project's declarations;
    ``seed_files`` (of the environment ``seed_env``) add the walk with seed data (``seedwalk``)."""
    started = time.perf_counter()
    chain = migrator.chain()
    accepted = list(accepted)
    declared = {d["migration"]: d["reason"] for d in irreversible}
    exact: list[str] = []  # declared irreversible, yet their rollback restores everything
    floor: tuple[int, str] | None = None  # the full cycle stops above the last declared one
    used: set[int] = set()
    gaps: dict[str, dict[str, str]] = {}
    verdicts: list[Verdict] = []
    walker = Walker(templates, migrator)
    applied: list[Migration] = []
    # Since which level the walk's database has not been rebuilt, and its snapshot there.
    bottom: tuple[int, schema.Snapshot] | None = None
    try:
        walker.fresh([])
        before = walker.snapshot()
        for migration in chain:
            t0 = time.perf_counter()
            verdict = Verdict(migration.id)
            entries = [a for a in accepted if a["migration"] == migration.id]
            if rows:
                before = _fill(walker, before, rows, data_seed, gaps, migration.id)
            if bottom is None:
                bottom = (len(applied), before)
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
                bottom = None  # a new database
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
                bottom = None  # the full cycle's bottom is now here
            verdict.seconds = time.perf_counter() - t0
            verdicts.append(verdict)
            if on_verdict:
                on_verdict(verdict)
        full = seeded = None
        if applied:
            level = floor[0] if floor else 0
            full = fullcycle.run(walker, applied, level, bottom, before, accepted, used)
            if floor:
                full.accepted.insert(0, {"object": f"rolled back only down to {floor[1]}", "reason": declared[floor[1]]})
        if seed_files and applied:
            seeded = _seeded(walker, applied, seed_files, seed_env, verdicts, accepted, used, floor[0] if floor else 0)
    finally:
        walker.end()
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
    return Report(verdicts, full, stale, time.perf_counter() - started, list(gaps.values()), seeded)


def run_for(settings: Settings, migrator: Migrator) -> Report:
    """The round trip of ``settings``' project on a server of its own (embedded, or the URL given), with the
    declarations and options ``settings`` hold: what ``overlord-db roundtrip`` runs."""
    from .servers import inspect_server, make_server

    server = make_server(settings, settings.backend)
    admin = server.start()
    try:
        templates = Templates(admin, settings, inspect_server(admin, migrator.required_extensions(), settings.backend), migrator)
        try:
            templates.drop_stale()  # what a killed run (pytest's or ours) left
            return run(templates, migrator, settings.accepted, irreversible=settings.irreversible, rows=settings.data_rows,
                       data_seed=settings.data_seed, seed_files=settings.seed_files(), seed_env=settings.seed or "")
        finally:
            templates.close()
    finally:
        server.stop()


def _seeded(walker: Walker, applied: list[Migration], seed_files: Sequence[Path], env: str, verdicts: list[Verdict],
            accepted: list[dict[str, str]], used: set[int], floor: int) -> Verdict:
    t0 = time.perf_counter()
    verdict = Verdict(SEEDED)
    # Nothing below a migration without a rollback can be reached by rolling back.
    floor = max([floor] + [i + 1 for i, m in enumerate(applied) if not m.reversible])
    by_id = {v.id: v for v in verdicts}
    was_ok = {v.id for v in verdicts if v.ok}
    stopped = seedwalk.walk(walker, applied, seed_files, by_id, accepted, used, floor, env)
    failed = [m.id for m in applied[floor:] if m.id in was_ok and not by_id[m.id].ok]
    if stopped and not failed:
        verdict.status, verdict.error = "apply_failed", stopped
    elif failed:
        verdict.status = "irreversible"
        verdict.error = f"With the seed data of {env}, these did not give the rows back: {', '.join(failed)}" + (
            f"; {stopped}" if stopped else "")
    else:
        verdict.accepted.append({"object": f"checked down to {applied[floor].id}" if floor < len(applied) else "nothing to check",
                                 "reason": f"{len(seed_files)} seed file(s) of {env}"})
    verdict.seconds = time.perf_counter() - t0
    return verdict


def _fill(walker: Walker, before: schema.Snapshot, rows: int, data_seed: int, gaps: dict[str, dict[str, str]],
          migration: str) -> schema.Snapshot:
    """Rows in every table before ``migration``; the snapshot ``before`` with the data as it now is."""
    conn = walker.connection()
    def gap(table: str, why: str) -> None:
        gaps.setdefault(table, {"table": table, "migration": migration, "why": why})
    # Only tables without rows in the snapshot can still be empty.
    empty = [key[len("data "):] for key, (count, _) in before.data.items() if count == 0]
    tables = datagen.read_tables(conn, walker.migrator.bookkeeping, empty_only=True, only=empty) if empty else []
    filled = datagen.fill(conn, tables, rows, data_seed, gap)
    return schema.with_data(conn, before, filled) if filled else before


def _check(walker: Walker, migration: Migration, before: schema.Snapshot, verdict: Verdict,
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
    diff = accept(schema.compare(before, rolled_back), entries, used, verdict)
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
    diff2 = accept(schema.compare(after, again, counts_only=True), entries, used, verdict)
    if diff2 and verdict.status == "ok":
        verdict.status = "reapply_failed"
        verdict.diff = diff2.render("first apply", "re-apply")
    return verdict.status == "ok", again


def _check_declared(walker: Walker, migration: Migration, before: schema.Snapshot, verdict: Verdict,
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
