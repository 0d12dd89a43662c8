"""The round trip's full cycle: from the top of the walk, every migration above its bottom (the last one
declared irreversible, or none) rolled back in one run and applied again in one run. The rollback must give
the bottom back exactly, the re-apply the top (its schema; and its row counts when it had no generated rows).

When the walk's own database went from the bottom to the top without being rebuilt (every migration passed),
the cycle runs there first (``down_and_up``), generated rows and all: a third of the work of applying
everything to a new database first, which cost 10 s of a minute's round trip at 500 migrations. Otherwise,
and whenever that finds anything (rows the walk generated can meet rollbacks that never saw them: a table
one migration emptied is filled again before the next), the bottom is a new database without rows and
everything is applied there first (``on``): the verdict is always one the cycle without rows gives. What
``down_and_up`` leaves out is the re-apply's row counts, which the walk checked migration by migration.

It runs after the walk, never beside it, though it needs only the walk's list of migrations that apply: on
one server, migrations that make cluster-wide objects (roles, tablespaces) would meet each other's (tried:
a walk's CREATE ROLE failed on the role the cycle beside it had just made).
"""
from __future__ import annotations

import time
from typing import Any

from . import schema
from .errors import MigrationError
from .migrators import Migration
from .verdicts import FULL_CYCLE, Verdict
from .walker import Walker, accept

_RUN: dict[str, Any] = {"lock": False, "quiet": True}


def run(walker: Walker, applied: list[Migration], level: int, walked: tuple[int, schema.Snapshot] | None,
        top: schema.Snapshot, accepted: list[dict[str, str]], used: set[int]) -> Verdict:
    """The full cycle of ``applied[level:]``. ``walked``: since which level the walk's database (now at ``top``)
    was not rebuilt, and its snapshot there; the cycle runs on it when that level is the bottom, and stands
    if it passes."""
    if walked is not None and walked[0] == level:
        tried: set[int] = set()
        verdict = down_and_up(walker, applied[level:], walked[1], top, accepted, tried)
        if verdict.ok:
            used |= tried
            return verdict
    return on(walker, applied, level, accepted, used)


def on(walker: Walker, applied: list[Migration], level: int, accepted: list[dict[str, str]], used: set[int]) -> Verdict:
    """The full cycle of ``applied[level:]`` on a new database of ``walker`` at ``applied[:level]``."""
    # Without generated rows: rolling everything back drops their tables, so they could never come back.
    walker.fresh(applied[:level])
    bottom = walker.snapshot()
    t0 = time.perf_counter()
    verdict = Verdict(FULL_CYCLE)
    try:
        walker.migrator.apply(walker.url, applied[level:], **_RUN)
    except MigrationError as exc:
        verdict.status, verdict.error = "apply_failed", f"Applying them all in one run failed: {exc}"
    else:
        _down_and_up(walker, applied[level:], bottom, walker.snapshot(), verdict, accepted, used, schema_only=False)
    verdict.seconds = time.perf_counter() - t0
    return verdict


def down_and_up(walker: Walker, applied: list[Migration], bottom: schema.Snapshot, top: schema.Snapshot,
                accepted: list[dict[str, str]], used: set[int]) -> Verdict:
    """The full cycle on the walk's own database, at ``top``: ``applied`` rolled back must give ``bottom`` (the
    walk's snapshot at that level, its generated rows in it) back exactly; applied again, ``top``'s schema.
    Not its rows: those the walk generated are gone with their tables, and migrations move rows between tables
    (each migration's re-apply was checked for its row counts in the walk)."""
    t0 = time.perf_counter()
    verdict = Verdict(FULL_CYCLE)
    _down_and_up(walker, applied, bottom, top, verdict, accepted, used, schema_only=True)
    verdict.seconds = time.perf_counter() - t0
    return verdict


def _down_and_up(walker: Walker, applied: list[Migration], bottom: schema.Snapshot, top: schema.Snapshot,
                 verdict: Verdict, accepted: list[dict[str, str]], used: set[int], *, schema_only: bool) -> None:
    try:
        walker.migrator.rollback(walker.url, applied, **_RUN)
    except MigrationError as exc:
        verdict.status, verdict.error = "rollback_failed", str(exc)
        return
    diff = accept(schema.compare(bottom, walker.snapshot()), accepted, used, verdict)
    if diff:
        verdict.status, verdict.diff = "irreversible", diff.render("bottom of the walk", "after rolling everything back")
    try:
        walker.migrator.apply(walker.url, applied, **_RUN)
    except MigrationError as exc:
        # What the rollback left behind is the cause: keep "irreversible" when it said so, as the walk does.
        verdict.status = "reapply_failed" if verdict.ok else verdict.status
        verdict.error = f"Re-applying after the rollback failed: {exc}"
        return
    again = walker.snapshot()
    if schema_only:
        top, again = schema.Snapshot(top.objects), schema.Snapshot(again.objects)
    diff2 = schema.compare(top, again, counts_only=True).without(a["object"] for a in accepted)
    if diff2 and verdict.ok:
        verdict.status, verdict.diff = "reapply_failed", diff2.render("top of the walk" if schema_only else "first apply", "re-apply")
