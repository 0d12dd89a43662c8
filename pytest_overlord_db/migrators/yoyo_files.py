"""yoyo's migration files, read and ordered the way yoyo itself applies them; their steps and rollbacks.

Failures to read become one paragraph naming the file (and the line, for a
Python migration that does not import), never yoyo's logged traceback.
"""
from __future__ import annotations

import traceback
from pathlib import Path
from typing import Iterable, Iterator

from yoyo import exceptions as yoyo_exceptions
from yoyo.migrations import Migration as YoyoMigration
from yoyo.migrations import MigrationList, MigrationStep, StepGroup, Transactionless, TransactionWrapper, topological_sort
from yoyo.topologicalsort import CycleError

from ..errors import MigrationError


def in_yoyo_order(found: MigrationList, folder: Path) -> MigrationList:
    """The order yoyo applies in: file names, except that a migration comes after what it depends on
    (``__depends__``, ``-- depends:``). Every reader of the chain (round trip, template, CLI) gets this."""
    try:
        return MigrationList(list(topological_sort(found)), found.post_apply)
    except CycleError as exc:
        # yoyo's own wrapper returns a lazy generator, so its BadMigration never fires: the cycle arrives raw.
        circle = ", ".join(m.id for m in exc.args[1])
        raise MigrationError(f"Migrations in {folder}: circular dependencies among {circle}: yoyo cannot apply "
                             "them in any order. Remove one of the dependencies; nothing was applied.") from None


def load(migration: YoyoMigration, population: Iterable[YoyoMigration] = ()) -> None:
    try:
        migration.load()
    except yoyo_exceptions.BadMigration as exc:
        if str(exc).startswith("Could not resolve dependencies"):
            known = {m.id for m in population}
            wanted = getattr(migration.module, "__depends__", ())
            unknown = sorted(({wanted} if isinstance(wanted, str) else set(wanted)) - known)
            raise MigrationError(
                f"Migration {migration.id} ({migration.path}) depends on {', '.join(map(repr, unknown))}, which is "
                f"not a migration in {Path(migration.path).parent}. Fix the name in its depends list; nothing was "
                "applied.") from None
        cause = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], BaseException) else exc.__context__
        raise MigrationError(_describe_load_failure(migration, cause or exc)) from None


def _describe_load_failure(migration: YoyoMigration, cause: BaseException) -> str:
    path = Path(migration.path)
    line = None
    if isinstance(cause, SyntaxError) and cause.lineno:
        line = cause.lineno
    else:
        for frame in traceback.extract_tb(cause.__traceback__):
            if Path(frame.filename) == path:
                line = frame.lineno
    where = f"{path}:{line}" if line else str(path)
    detail = cause.msg if isinstance(cause, SyntaxError) else str(cause)
    return f"Migration file {where} does not import: {type(cause).__name__}: {detail}. Fix the file; nothing was applied."


def steps(migration: YoyoMigration) -> list[MigrationStep]:
    """The migration's steps in apply order, unwrapped from yoyo's transaction wrappers and groups."""
    load(migration)

    def walk(items: Iterable[object]) -> Iterator[MigrationStep]:
        for item in items:
            if isinstance(item, (TransactionWrapper, Transactionless)):
                yield from walk([item.step])
            elif isinstance(item, StepGroup):
                yield from walk(item.steps)
            elif isinstance(item, MigrationStep):
                yield item

    return list(walk(migration.steps or []))


def has_rollback(migration: YoyoMigration) -> bool:
    """False when any step lacks a rollback: yoyo would silently 'roll it back' as a no-op."""
    found = steps(migration)
    with_rollback = [step._rollback not in (None, "") for step in found]
    if migration.is_raw_sql():
        # yoyo pairs a .rollback.sql file's statements with the apply statements
        # one by one, so unpaired steps are normal: what matters is the file.
        return any(with_rollback)
    return bool(found) and all(with_rollback)
