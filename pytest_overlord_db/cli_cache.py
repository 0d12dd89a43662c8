"""``overlord-db cache list`` and ``overlord-db cache clear [--all]``: the embedded server's data folders.

Registered on the main app by ``cli``. What counts as ours, and what is never
removed, is decided in ``servers.datadirs``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from . import config as config_mod
from .errors import ConfigError
from .servers import datadirs, default_datadir
from .servers.docker import remove_kept

cache_app = typer.Typer(help="The embedded server's data folders (40-70 MB each): list them, clear them.",
                        no_args_is_help=True, rich_markup_mode=None)


def _this_project() -> Path | None:
    """The data folder pytest and ``roundtrip`` would use here, or None outside a project that resolves."""
    try:
        settings = config_mod.resolve(check_migrations=False)
    except ConfigError:
        return None
    return (settings.datadir or default_datadir(settings.root)).resolve()


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _ago(days: float) -> str:
    hours = days * 24
    return f"{hours * 60:.0f} min ago" if hours < 1 else f"{hours:.0f} h ago" if hours < 48 else f"{days:.0f} days ago"


@cache_app.command("list")
def list_folders(format: Annotated[str, typer.Option("--format", help="text or json.")] = "text") -> None:
    """List the data folders of ours on this machine: size, last use, whether a server runs, which project."""
    here = _this_project()
    found = datadirs.find([here] if here else [])
    sizes = {d.path: d.size() for d in found}
    if format == "json":
        typer.echo(json.dumps({"folders": [
            {"path": str(d.path), "project": d.project, "bytes": sizes[d.path], "idle_days": round(d.idle_days, 3),
             "running": d.running, "this_project": d.path == here} for d in found]}, indent=2))
        return
    if format != "text":
        typer.echo("Error: --format must be text or json.", err=True)
        raise typer.Exit(2)
    if not found:
        typer.echo("No data folders of pytest-overlord-db on this machine.")
        return
    typer.echo(f"{len(found)} data folder(s) of pytest-overlord-db, {_megabytes(sum(sizes.values()))} in all:")
    width = max(len(str(d.path)) for d in found)
    for d in found:
        notes = ["running" if d.running else "idle", f"project {d.project}" if d.project else "", "this project" if d.path == here else ""]
        typer.echo(f"  {str(d.path):{width}}  {_megabytes(sizes[d.path]):>9}  used {_ago(d.idle_days):>12}  "
                   + ", ".join(n for n in notes if n))


@cache_app.command("clear")
def clear(
    all_folders: Annotated[bool, typer.Option("--all", help="Every data folder of ours on this machine, not only this project's.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
) -> None:
    """Remove this project's data folder and kept Docker container (with --all: every one of ours); one in use is left alone."""
    here = _this_project()
    if all_folders:
        targets = [d.path for d in datadirs.find([here] if here else [])]
    elif here is None:
        typer.echo("Error: no project here (its configuration does not resolve); use --all, or run it in the project.", err=True)
        raise typer.Exit(2)
    else:
        targets = [here] if here.exists() else []
    # The Docker containers kept with --overlord-reuse-container hold a template cache too.
    kept = remove_kept(None if all_folders or here is None else Path(f"{here}-docker"), dry_run)
    for short_id, project, why in kept:
        verb = "left alone" if why else "would remove" if dry_run else "removed"
        typer.echo(f"  {verb}  container {short_id} (project {project})" + (f": {why}" if why else ""))
    if not targets:
        typer.echo("Nothing to remove." if not kept else "No data folder to remove.")
        return
    left = 0
    for path in targets:
        if dry_run:
            why = None if datadirs.is_ours(path) else "not made by pytest-overlord-db"
            why = why or ("its server is running" if datadirs.inspect(path).running else None)
        else:
            try:
                why = datadirs.remove(path)
            except OSError as exc:
                why = f"{exc.strerror or exc} ({exc.filename})"
        left += why is not None
        verb = "would remove" if dry_run else "removed"
        typer.echo(f"  {verb if why is None else 'left alone'}  {path}" + (f": {why}" if why else ""))
    if left and not all_folders:
        raise typer.Exit(1)  # the one folder asked for is still there
