"""The overlord-db command line."""
from __future__ import annotations

import typer

app = typer.Typer(help="Migrations, seeds and rollback verification for The Robot Overlord's PostgreSQL.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """overlord-db: status, migrate, rollback, seed, roundtrip, new."""


def main() -> None:
    app()
