"""What the overlord-db commands print: lines on stdout and stderr, the list of what ran, a dry run, and the
progress lines and long-run notes of a migration run."""
from __future__ import annotations

import functools
from typing import Callable

import typer

from . import urls
from .config import Settings
from .migrators import Applied, Migration, Migrator
from .watch import watched

PROGRESS_AFTER = 3  # more migrations than this get a progress display

echo = typer.echo
err = functools.partial(typer.echo, err=True)


def list_done(verb: str, results: list[Applied]) -> None:
    width = max(len(a.id) for a in results)
    echo(f"{verb} {len(results)} migration(s):")
    for a in results:
        echo(f"  {a.id:{width}}  {a.seconds * 1000:8.1f} ms")


def show_dry_run(verb: str, cfg: Settings, migrator: Migrator, todo: list[Migration], direction: str) -> int:
    echo(f"Would {verb} {len(todo)} migration(s) {'to' if direction == 'apply' else 'from'} "
          f"{urls.mask(cfg.require_database_url())} (dry run, nothing changed):")
    for m in todo:
        echo(f"  {m.id}")
        for line in migrator.show(m, direction):
            echo("    " + line)
    return 0


def progress_lines(total: int) -> Callable[[Migration, str], None]:
    count = {"n": 0}

    def report(migration: Migration, action: str) -> None:
        count["n"] += 1
        if total > PROGRESS_AFTER:
            err(f"[{count['n']}/{total}] {action} {migration.id}")

    return report


def run_watched(cfg: Settings, label: str, run: Callable[[Callable[[Migration, str], None]], list[Applied]],
             total: int) -> list[Applied]:
    """Run migrations with the [n/total] lines, a note for one that runs long, and the timeout."""
    shown = progress_lines(total)
    with watched(err, cfg.migration_timeout, label) as watch:

        def progress(migration: Migration, direction: str) -> None:
            shown(migration, direction)
            watch.step(migration, direction)

        return run(progress)
