"""Configuration of the CLI and ensure_migrations(): which database, which migrations, which seeds.

The seed's yoyo.ini: ``--env``/``OVERLORD_ENV`` picks the section (DEFAULT
when none). Database precedence: --database-url, then DATABASE_URL, then the
section's ``database``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .errors import ConfigError
from .settings import YoyoIni, locate, open_ini


@dataclass(frozen=True)
class AppConfig:
    root: Path
    env: str | None
    database_url: str | None
    url_origin: str
    migrations_dir: Path
    seeds_dir: Path
    batch_mode: bool
    ini: YoyoIni | None
    migrator: str = "auto"

    def require_url(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "No database configured: pass --database-url, set DATABASE_URL, or give the "
                f"[{self.env or 'DEFAULT'}] section of yoyo.ini a `database =` line."
            )
        return self.database_url


def load(
    root: Path | None = None,
    *,
    env: str | None = None,
    database_url: str | None = None,
    migrations: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> AppConfig:
    environ = os.environ if environ is None else environ
    root = Path(root or os.getcwd()).resolve()
    env = env or environ.get("OVERLORD_ENV") or None
    ini = open_ini(root, environ)
    if env and ini is None:
        raise ConfigError(f"--env {env} needs a yoyo.ini in {root} with a [{env}] section.")

    if database_url:
        url, origin = database_url, "--database-url"
    elif environ.get("DATABASE_URL"):
        url, origin = environ["DATABASE_URL"], "DATABASE_URL"
    elif ini is not None:
        url, origin = ini.get("database", env), f"{ini.path} [{env or 'DEFAULT'}]"
    else:
        url, origin = None, "nowhere"

    migrations_dir, seeds_dir, _ = locate(root, ini, migrations, env=env)
    batch = (ini.get("batch_mode", env) if ini else None) or "off"
    return AppConfig(
        root=root,
        env=env,
        database_url=url,
        url_origin=origin,
        migrations_dir=migrations_dir,
        seeds_dir=seeds_dir,
        batch_mode=batch.strip().lower() in {"on", "true", "yes", "1"},
        ini=ini,
        migrator=environ.get("OVERLORD_MIGRATOR") or (ini.get("migrator", env) if ini else None) or "auto",
    )
