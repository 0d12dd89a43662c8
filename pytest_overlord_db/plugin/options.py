"""The plugin's options: each a flag, an ini name and an environment variable (flag > env > ini > default)."""
from __future__ import annotations

import os

import pytest

from ..config import DEFAULT_IMAGE

# The Settings field each ini name sets.
FIELDS = {
    "overlord_seed": "seed", "overlord_backend": "backend", "overlord_db_url": "db_url", "overlord_image": "image",
    "overlord_docker_network": "docker_network", "overlord_reuse_container": "reuse_container",
    "overlord_reuse_idle": "reuse_idle",
    "overlord_migrations": "migrations_dir", "overlord_migrator": "migrator", "overlord_datadir": "datadir",
    "overlord_migration_timeout": "migration_timeout", "overlord_data_rows": "data_rows", "overlord_data_seed": "data_seed",
}
OPTIONS = [
    # (flag, ini name, env var, help)
    ("--seed", "overlord_seed", "OVERLORD_SEED", "load seeds/ENV/*.sql into the template after migrating"),
    ("--overlord-backend", "overlord_backend", "OVERLORD_BACKEND",
     "auto|embedded|docker|url (auto: a URL if given, else Docker if it answers, else embedded)"),
    ("--overlord-db-url", "overlord_db_url", "OVERLORD_DB_URL", "an existing server to create our databases on (needs CREATEDB)"),
    ("--overlord-image", "overlord_image", "OVERLORD_IMAGE", f"Docker image (default {DEFAULT_IMAGE})"),
    ("--overlord-docker-network", "overlord_docker_network", "OVERLORD_DOCKER_NETWORK",
     "default|host (host: the container shares this machine's network, PostgreSQL on a free 127.0.0.1 port)"),
    ("--overlord-reuse-idle", "overlord_reuse_idle", "OVERLORD_REUSE_IDLE",
     "seconds a reused Docker container waits for the next run before it stops itself (default 1800)"),
    ("--overlord-migrations", "overlord_migrations", "OVERLORD_MIGRATIONS", "migrations folder (default: yoyo.ini, else ./migrations)"),
    ("--overlord-migrator", "overlord_migrator", "OVERLORD_MIGRATOR",
     "auto|yoyo|sqlfolders|module:Class (auto: sqlfolders when the folder has versions/, else yoyo)"),
    ("--overlord-migration-timeout", "overlord_migration_timeout", "OVERLORD_MIGRATION_TIMEOUT",
     "seconds one migration may run while the template builds before it is cancelled (default: no limit)"),
    ("--overlord-data-rows", "overlord_data_rows", "OVERLORD_DATA_ROWS",
     "rows the round trip generates in every table before each migration (default 3; 0: none)"),
    ("--overlord-data-seed", "overlord_data_seed", "OVERLORD_DATA_SEED", "seed of the round trip's generated rows (default 0)"),
    ("--overlord-datadir", "overlord_datadir", "OVERLORD_DATADIR", "embedded server data directory (default: per project on /dev/shm)"),
]
# Options without a value (on when given; env and ini take on/off, true/false, yes/no, 1/0).
FLAGS = [
    ("--overlord-reuse-container", "overlord_reuse_container", "OVERLORD_REUSE_CONTAINER",
     "docker: keep the project's container between runs, with its cached template (stopped when idle)"),
]


def add(parser: pytest.Parser) -> None:
    group = parser.getgroup("overlord-db", "migration-verified PostgreSQL test databases")
    for flag, ini, env, help_text in OPTIONS:
        group.addoption(flag, dest=ini, default=None, metavar="VALUE", help=f"{help_text} [env {env}, ini {ini}]")
        parser.addini(ini, help=help_text, default=None)
    for flag, ini, env, help_text in FLAGS:
        group.addoption(flag, dest=ini, action="store_true", default=None, help=f"{help_text} [env {env}, ini {ini}]")
        parser.addini(ini, help=help_text, default=None)
    group.addoption(
        "--overlord-roundtrip",
        action="store_true",
        default=False,
        help="add one test per migration proving apply -> rollback -> apply leaves the schema exact",
    )


def value(config: pytest.Config, ini: str, env: str) -> tuple[str | None, str]:
    """The value of one option and where it came from."""
    if config.getoption(ini):
        return config.getoption(ini), "command line"
    if os.environ.get(env):
        return os.environ[env], f"env {env}"
    if config.getini(ini):
        return config.getini(ini), f"ini {ini}"
    return None, "default"


def values(config: pytest.Config) -> dict[str, tuple[str | None, str]]:
    return {ini: value(config, ini, env) for _, ini, env, _ in [*OPTIONS, *FLAGS]}


def uses_overlord(config: pytest.Config) -> bool:
    """Whether the user asked for us explicitly (any option) or has the files we work on."""
    explicit = any(v for v, _ in values(config).values()) or config.getoption("overlord_roundtrip")
    return bool(explicit) or (config.rootpath / "yoyo.ini").is_file() or (config.rootpath / "migrations").is_dir()
