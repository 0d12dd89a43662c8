"""The round trip's full cycle: on a database at the bottom of the walk (the last migration declared
irreversible, or empty), every migration applied in one run, all rolled back in one run, all applied again.
The rollback must give the bottom back exactly, the re-apply the top (schema and row counts).

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


def on(walker: Walker, applied: list[Migration], level: int, accepted: list[dict[str, str]], used: set[int]) -> Verdict:
    """The full cycle of ``applied[level:]`` on a new database of ``walker`` at ``applied[:level]``."""
    # Without generated rows: rolling everything back drops their tables, so they could never come back.
    walker.fresh(applied[:level])
    return check(walker, applied[level:], walker.snapshot(), accepted, used)


def check(walker: Walker, applied: list[Migration], bottom: schema.Snapshot, accepted: list[dict[str, str]],
          used: set[int]) -> Verdict:
    t0 = time.perf_counter()
    verdict = Verdict(FULL_CYCLE)
    run: dict[str, Any] = {"lock": False, "quiet": True}
    try:
        walker.migrator.apply(walker.url, applied, **run)
    except MigrationError as exc:
        verdict.status, verdict.error = "apply_failed", f"Applying them all in one run failed: {exc}"
        verdict.seconds = time.perf_counter() - t0
        return verdict
    top = walker.snapshot()
    try:
        walker.migrator.rollback(walker.url, applied, **run)
    except MigrationError as exc:
        verdict.status, verdict.error = "rollback_failed", str(exc)
    else:
        diff = accept(schema.compare(bottom, walker.snapshot()), accepted, used, verdict)
        if diff:
            verdict.status, verdict.diff = "irreversible", diff.render("bottom of the walk", "after rolling everything back")
        try:
            walker.migrator.apply(walker.url, applied, **run)
        except MigrationError as exc:
            # What the rollback left behind is the cause: keep "irreversible" when it said so, as the walk does.
            verdict.status = "reapply_failed" if verdict.ok else verdict.status
            verdict.error = f"Re-applying after the rollback failed: {exc}"
        else:
            diff2 = schema.compare(top, walker.snapshot(), counts_only=True).without(a["object"] for a in accepted)
            if diff2 and verdict.ok:
                verdict.status, verdict.diff = "reapply_failed", diff2.render("first apply", "re-apply")
    verdict.seconds = time.perf_counter() - t0
    return verdict
