"""ensure_migrations(): bring an application's database up to date at start-up."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from . import config as config_mod
from .migrators import for_folder


def ensure_migrations(
    database_url: str | None = None,
    migrations_dir: str | os.PathLike[str] | None = None,
    *,
    env: str | None = None,
    root: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Apply every pending migration under the tool's lock; return the ids applied, in order.

    The URL defaults to DATABASE_URL, then yoyo.ini's section for ``env``; the
    folder to yoyo.ini's ``migrations =``, then ./migrations. A failing
    migration raises :class:`~pytest_overlord_db.MigrationError` naming it, its
    statement and PostgreSQL's message; its own transaction is rolled back, so
    nothing of it stays half applied.
    """
    cfg = config_mod.resolve(Path(root) if root else None, env=env, database_url=database_url,
                             migrations_dir=migrations_dir, check_migrations=False)
    migrator = for_folder(cfg.migrations_dir, cfg.migrator)
    return [applied.id for applied in migrator.apply(cfg.require_database_url(), migrator.chain(), lock=True)]


async def ensure_migrations_async(
    database_url: str | None = None,
    migrations_dir: str | os.PathLike[str] | None = None,
    *,
    env: str | None = None,
    root: str | os.PathLike[str] | None = None,
) -> list[str]:
    """``ensure_migrations`` without blocking the event loop (yoyo is synchronous: it runs in a thread)."""
    return await asyncio.to_thread(ensure_migrations, database_url, migrations_dir, env=env, root=root)
