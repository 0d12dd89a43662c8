"""The overlord-db command line: one engine (a Migrator: yoyo, or the seed's SQL folders) behind every command.

Exit codes: 0 success, 1 a migration, seed or check failed, 2 usage or connection error.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from . import config as config_mod
from . import interrupts, urls
from .cli_cache import cache_app
from .cli_output import echo, err, list_done, run_watched, show_dry_run
from .config import Settings
from .declarations import refuse_crossing
from .errors import ConfigError, OverlordError
from .migrators import Migrator, for_folder, position

app = typer.Typer(
    help="Migrations, seeds and rollback verification for PostgreSQL projects using yoyo (The Robot Overlord).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: a flag reads `--dry-run`, not `--dry-run <bool>`
)
app.add_typer(cache_app, name="cache")  # its commands live in cli_cache: this module stays small

EnvOpt = Annotated[Optional[str], typer.Option("--env", help="yoyo.ini section to use (env OVERLORD_ENV; DEFAULT when none).")]
UrlOpt = Annotated[Optional[str], typer.Option("--database-url", help="Database URL; overrides DATABASE_URL and yoyo.ini.")]
MigOpt = Annotated[Optional[Path], typer.Option("--migrations", help="Migrations folder (default: yoyo.ini, else ./migrations).")]
FormatOpt = Annotated[str, typer.Option("--format", help="text or json.")]


def _run(action: Callable[[], int]) -> None:
    """Run a command body, turning our errors into one paragraph and the documented exit code."""
    try:
        code = action()
    except OverlordError as exc:
        err(f"Error: {exc}")
        raise typer.Exit(exc.exit_code) from None
    raise typer.Exit(code)


def _config(env: str | None, database_url: str | None, migrations: Path | None) -> Settings:
    # The folder is checked by the migrator when it reads it, so `new` can create it.
    return config_mod.resolve(config_mod.find_root(), env=env, database_url=database_url, migrations_dir=migrations,
                              check_migrations=False)


def _confirm_production(cfg: Settings, yes: bool, what: str, production: bool = False) -> None:
    """Production (the --env section, or the seed environment) needs a yes: asked on a terminal,
    --yes otherwise (and always in batch mode)."""
    if not (production or (cfg.env or "").lower() == "production") or yes:
        return
    if sys.stdin.isatty() and not cfg.batch_mode:
        if typer.confirm(f"{what} on PRODUCTION ({urls.mask(cfg.require_database_url())})?", default=False):
            return
        raise ConfigError("Not confirmed; nothing was changed.")
    raise ConfigError(f"{what} on production needs confirmation: run it on a terminal, or pass --yes.")


def _migrator(cfg: Settings, must_exist: bool = True) -> Migrator:
    if must_exist and not cfg.migrations_dir.is_dir():  # `new` creates it
        raise ConfigError(f"Migrations folder {cfg.migrations_dir} does not exist (taken from {cfg.sources['migrations_dir']}).")
    return for_folder(cfg.migrations_dir, cfg.migrator)


@app.command()
def status(env: EnvOpt = None, database_url: UrlOpt = None, migrations: MigOpt = None, format: FormatOpt = "text") -> None:
    """List applied migrations (when, and how long each took) and pending ones."""

    def body() -> int:
        cfg = _config(env, database_url, migrations)
        migrator = _migrator(cfg)
        chain = migrator.chain()
        applied = {a.id: a for a in migrator.applied(cfg.require_database_url())}
        pending = [m.id for m in chain if m.id not in applied]
        if format == "json":
            echo(json.dumps({
                "database": urls.mask(cfg.require_database_url()),
                "applied": [{"id": a.id, "applied_at": a.applied_at.isoformat() + "Z" if a.applied_at else None,
                             "duration_ms": round(a.duration_ms, 1) if a.duration_ms is not None else None}
                            for a in applied.values()],
                "pending": pending,
            }, indent=2))
            return 0
        width = max([len(m.id) for m in chain] + [10])
        echo(f"Database:   {urls.mask(cfg.require_database_url())} ({cfg.sources['database_url']})")
        echo(f"Migrations: {cfg.migrations_dir}")
        echo(f"Applied ({len(applied)}):")
        for a in applied.values():
            took = f"{a.duration_ms:8.1f} ms" if a.duration_ms is not None else "        ? ms"
            echo(f"  {a.id:{width}}  {a.applied_at:%Y-%m-%d %H:%M:%S} UTC  {took}")
        echo(f"Pending ({len(pending)}):")
        for mid in pending:
            echo(f"  {mid}")
        return 0

    _run(body)


@app.command()
def migrate(
    target: Annotated[Optional[str], typer.Option("--target", help="Apply up to and including this migration (id or number).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be applied, with its SQL; change nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation (production).")] = False,
    env: EnvOpt = None, database_url: UrlOpt = None, migrations: MigOpt = None,
) -> None:
    """Apply pending migrations, all or up to --target."""

    def body() -> int:
        cfg = _config(env, database_url, migrations)
        migrator = _migrator(cfg)
        chain = migrator.chain()
        upto = position(chain, target) if target else len(chain) - 1
        done = {a.id for a in migrator.applied(cfg.require_database_url())}
        todo = [m for m in chain[: upto + 1] if m.id not in done]
        if not todo:
            echo("Nothing to apply: the database is up to date" + (f" with {chain[upto].id}." if target else "."))
            return 0
        if dry_run:
            return show_dry_run("apply", cfg, migrator, todo, "apply")
        _confirm_production(cfg, yes, f"Applying {len(todo)} migration(s)")
        list_done("Applied", run_watched(cfg, "migrating", lambda progress: migrator.apply(
            cfg.require_database_url(), todo, on_progress=progress), len(todo)))
        return 0

    _run(body)


@app.command()
def rollback(
    target: Annotated[Optional[str], typer.Argument(
        help="Keep this migration applied and roll back everything after it; default: the last one.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Roll back every applied migration.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be rolled back, with its SQL; change nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation (production).")] = False,
    env: EnvOpt = None, database_url: UrlOpt = None, migrations: MigOpt = None,
) -> None:
    """Roll back to TARGET (kept applied), every migration (--all), or the last applied one."""

    def body() -> int:
        cfg = _config(env, database_url, migrations)
        migrator = _migrator(cfg)
        chain = migrator.chain()
        done = {a.id for a in migrator.applied(cfg.require_database_url())}
        applied_chain = [m for m in chain if m.id in done]
        if target and all_:
            raise ConfigError(f"Give a target ({target}) or --all, not both.")
        if target:
            keep = position(chain, target)
            todo = [m for m in chain[keep + 1:] if m.id in done]
        elif all_:
            todo = applied_chain
        else:
            todo = applied_chain[-1:]
        todo.reverse()
        if not todo:
            echo("Nothing to roll back.")
            return 0
        refuse_crossing([m.id for m in todo], cfg.irreversible)
        if dry_run:
            return show_dry_run("roll back", cfg, migrator, todo, "rollback")
        _confirm_production(cfg, yes, f"Rolling back {len(todo)} migration(s)")
        list_done("Rolled back", run_watched(cfg, "rolling back", lambda progress: migrator.rollback(
            cfg.require_database_url(), todo, on_progress=progress), len(todo)))
        return 0

    _run(body)


@app.command()
def seed(
    environment: Annotated[str, typer.Option(
        "--environment", "-e", help="Seed environment: runs seeds/ENV/*.sql in sorted order.")] = "development",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation (production).")] = False,
    env: EnvOpt = None, database_url: UrlOpt = None,
) -> None:
    """Load seed data, each file in its own transaction; report every file."""

    def body() -> int:
        from . import seeds
        from .config import seed_files
        from .servers.base import connect

        cfg = _config(env, database_url, None)
        files = seed_files(cfg.seeds_dir, environment)
        _confirm_production(cfg, yes, f"Seeding {len(files)} file(s)", production=environment.lower() == "production")
        try:
            done = {a.id for a in _migrator(cfg).applied(cfg.require_database_url())}
            pending = [m.id for m in _migrator(cfg).chain() if m.id not in done]
        except OverlordError:
            pending = []  # no migrations folder here: nothing to compare with
        if pending:
            err(f"Warning: {len(pending)} migration(s) are not applied ({', '.join(pending[:3])}{', ...' if len(pending) > 3 else ''}); "
                 "the seed files are written for the newest schema. Run `overlord-db migrate` first.")
        conn = connect(cfg.require_database_url())
        try:
            results = seeds.load(conn, files, stop_on_error=False)
        finally:
            conn.close()
        failed = [r for r in results if not r.ok]
        echo(f"Seeded {environment} into {urls.mask(cfg.require_database_url())}:")
        for r in results:
            echo(f"  {'ok    ' if r.ok else 'FAILED'}  {r.file.name}")
        for r in failed:
            err(f"Error: {r.error}")
        return 1 if failed else 0

    _run(body)


@app.command()
def new(
    message: Annotated[str, typer.Option("--message", "-m", help="What the migration does; becomes its file name.")],
    migrations: MigOpt = None,
    env: EnvOpt = None,
) -> None:
    """Create the next numbered migration file with an apply and a rollback step to fill in."""

    def body() -> int:
        cfg = _config(env, None, migrations)
        for path in _migrator(cfg, must_exist=False).new(message):
            echo(f"Created {path}")
        return 0

    _run(body)


@app.command()
def roundtrip(
    migrations: MigOpt = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=(
        "Server to create throwaway databases on (needs CREATEDB; env OVERLORD_DB_URL). "
        "Default: our own embedded server."))] = None,
    format: FormatOpt = "text",
    data_rows: Annotated[Optional[int], typer.Option("--data-rows", help="Rows made per table before each migration (default 3).")] = None,
    data_seed: Annotated[Optional[int], typer.Option("--data-seed", help="Seed of the generated rows (default 0).")] = None,
    seed: Annotated[Optional[str], typer.Option("--seed", help="Also walk down from the top with seeds/ENV loaded.")] = None,
    extension_dir: Annotated[Optional[list[str]], typer.Option("--extension-dir", help=(
        "A folder of more extensions for the embedded server (repeatable; env OVERLORD_EXTENSION_DIRS)."))] = None,
    server_setting: Annotated[Optional[list[str]], typer.Option("--server-setting", help=(
        "NAME=VALUE for the embedded server (repeatable; env OVERLORD_SERVER_SETTINGS)."))] = None,
) -> None:
    """Prove every rollback: apply -> rollback -> apply each migration, snapshots compared."""

    def body() -> int:
        from . import roundtrip as rt

        url = database_url or os.environ.get("OVERLORD_DB_URL")
        st = config_mod.resolve(config_mod.find_root(), migrations_dir=migrations, db_url=url, backend="url" if url else "embedded",
                                data_rows=data_rows, data_seed=data_seed, seed=seed, extension_dirs=extension_dir or None,
                                server_settings=server_setting or None,
                                sources={"extension_dirs": "--extension-dir", "server_settings": "--server-setting"})
        migrator = for_folder(st.migrations_dir, st.migrator)
        report = rt.run_for(st, migrator)
        echo(report.to_json() if format == "json" else report.render())
        from . import github

        github.publish(github.from_report(report, migrator.chain(), st), report.ok, echo)
        return 0 if report.ok else 1

    if format not in ("text", "json"):
        err("Error: --format must be text or json.")
        raise typer.Exit(2)
    _run(body)


@app.command("break-lock")
def break_lock(env: EnvOpt = None, database_url: UrlOpt = None, migrations: MigOpt = None) -> None:
    """Remove the migration lock a killed run left behind (only when nobody else is migrating)."""

    def body() -> int:
        cfg = _config(env, database_url, migrations)
        echo(_migrator(cfg).break_lock(cfg.require_database_url()))
        return 0

    _run(body)


def main() -> None:
    interrupts.install()  # Ctrl-C and SIGTERM cancel the statement the server is running
    app()


if __name__ == "__main__":
    main()
