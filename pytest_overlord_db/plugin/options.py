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
    "overlord_pgvector_types": "pgvector_types",
    "overlord_admin_db": "admin_db", "overlord_host_id": "host_id", "overlord_project": "project",
    "overlord_keep_templates": "keep_templates", "overlord_template_max_age": "template_max_age",
    "overlord_lease_timeout": "lease_timeout",
    "overlord_keep_failed": "keep_failed", "overlord_cache_max_age": "cache_max_age",
    "overlord_extension_dirs": "extension_dirs", "overlord_server_settings": "server_settings",
}
FLAGS = {"overlord_keep_failed", "overlord_reuse_container"}  # on/off: a bare flag on the command line, a word in env and ini
# Repeatable on the command line, one per line in the ini file ([tool.overlord_db] in pyproject.toml after that).
LISTS = {"overlord_extension_dirs", "overlord_server_settings"}
OPTIONS = [
    # (flag, ini name, env var, help)
    ("--seed", "overlord_seed", "OVERLORD_SEED", "load seeds/ENV/*.sql into the template after migrating"),
    ("--overlord-backend", "overlord_backend", "OVERLORD_BACKEND",
     "auto|embedded|docker|url (auto: a URL if given, else Docker if it answers, else embedded)"),
    ("--overlord-db-url", "overlord_db_url", "OVERLORD_DB_URL", "an existing server to create our databases on (needs CREATEDB)"),
    ("--overlord-image", "overlord_image", "OVERLORD_IMAGE", f"Docker image (default {DEFAULT_IMAGE})"),
    ("--overlord-docker-network", "overlord_docker_network", "OVERLORD_DOCKER_NETWORK",
     "default|host (host: the container shares this machine's network, PostgreSQL on a free 127.0.0.1 port)"),
    ("--overlord-reuse-container", "overlord_reuse_container", "OVERLORD_REUSE_CONTAINER",
     "docker: keep the project's container between runs, with its cached template (stopped when idle)"),
    ("--overlord-reuse-idle", "overlord_reuse_idle", "OVERLORD_REUSE_IDLE",
     "how long a reused Docker container waits for the next run before it stops itself (90, 15m, 12h; default 30m)"),
    ("--overlord-migrations", "overlord_migrations", "OVERLORD_MIGRATIONS", "migrations folder (default: yoyo.ini, else ./migrations)"),
    ("--overlord-migrator", "overlord_migrator", "OVERLORD_MIGRATOR",
     "auto|yoyo|sqlfolders|module:Class (auto: sqlfolders when the folder has versions/, else yoyo)"),
    ("--overlord-migration-timeout", "overlord_migration_timeout", "OVERLORD_MIGRATION_TIMEOUT",
     "seconds one migration may run while the template builds before it is cancelled (default: no limit)"),
    ("--overlord-data-rows", "overlord_data_rows", "OVERLORD_DATA_ROWS",
     "rows the round trip generates in every table before each migration (default 3; 0: none)"),
    ("--overlord-data-seed", "overlord_data_seed", "OVERLORD_DATA_SEED", "seed of the round trip's generated rows (default 0)"),
    ("--overlord-datadir", "overlord_datadir", "OVERLORD_DATADIR", "embedded server data directory (default: per project on /dev/shm)"),
    ("--overlord-pgvector-types", "overlord_pgvector_types", "OVERLORD_PGVECTOR_TYPES",
     "on|off: register pgvector's types on the fixtures' connections when pgvector is installed (default on)"),
    ("--overlord-admin-db", "overlord_admin_db", "OVERLORD_ADMIN_DB",
     "the database of the --overlord-db-url server to connect to first (default: the URL's)"),
    ("--overlord-host-id", "overlord_host_id", "OVERLORD_HOST_ID",
     "names this machine or container in database names and marks (default: the host name)"),
    ("--overlord-project", "overlord_project", "OVERLORD_PROJECT",
     "groups this project's templates on a shared server (default: from folder names, not their paths)"),
    ("--overlord-keep-templates", "overlord_keep_templates", "OVERLORD_KEEP_TEMPLATES",
     "unused templates of the project kept, newest first, besides those live runs use (default 3)"),
    ("--overlord-template-max-age", "overlord_template_max_age", "OVERLORD_TEMPLATE_MAX_AGE",
     "an unused template not used for this long is dropped: 90s, 15m, 12h, 7d (default 7d)"),
    ("--overlord-lease-timeout", "overlord_lease_timeout", "OVERLORD_LEASE_TIMEOUT",
     "seconds a vanished runner's connection keeps its databases alive over TCP (default 60)"),
    ("--overlord-keep-failed", "overlord_keep_failed", "OVERLORD_KEEP_FAILED",
     "keep the fresh databases of failed tests and print their URLs; the next run drops them"),
    ("--overlord-cache-max-age", "overlord_cache_max_age", "OVERLORD_CACHE_MAX_AGE",
     "days an embedded server's data folder may stay unused before it is removed (default 7; 0: never)"),
    ("--overlord-extension-dir", "overlord_extension_dirs", "OVERLORD_EXTENSION_DIRS",
     "embedded: a folder of more PostgreSQL 18 extensions (share/extension/*.control, lib/*.so); repeatable"),
    ("--overlord-server-setting", "overlord_server_settings", "OVERLORD_SERVER_SETTINGS",
     "NAME=VALUE for the server the plugin starts (embedded, docker), e.g. work_mem=64MB; repeatable"),
]
NO_VECTOR_TYPES = "--overlord-no-pgvector-types"  # short for --overlord-pgvector-types=off


def add(parser: pytest.Parser) -> None:
    group = parser.getgroup("overlord-db", "migration-verified PostgreSQL test databases")
    for flag, ini, env, help_text in OPTIONS:
        shape = {"action": "store_true"} if ini in FLAGS else {"action": "append"} if ini in LISTS else {"metavar": "VALUE"}
        group.addoption(flag, dest=ini, default=None, help=f"{help_text} [env {env}, ini {ini}]", **shape)
        if ini in LISTS:
            parser.addini(ini, help=help_text, type="linelist", default=None)
        else:
            parser.addini(ini, help=help_text, default=None)
    group.addoption(NO_VECTOR_TYPES, dest="overlord_no_pgvector_types", action="store_true", default=False,
                    help="a vector column reads back as text: no pgvector types on the fixtures' connections")
    group.addoption(
        "--overlord-roundtrip",
        action="store_true",
        default=False,
        help="add one test per migration proving apply -> rollback -> apply leaves the schema exact",
    )


def value(config: pytest.Config, ini: str, env: str) -> tuple[str | list[str] | None, str]:
    """The value of one option and where it came from."""
    if ini == "overlord_pgvector_types" and config.getoption("overlord_no_pgvector_types"):
        return "off", f"command line {NO_VECTOR_TYPES}"
    if config.getoption(ini):
        return config.getoption(ini), "command line"
    if os.environ.get(env):
        return os.environ[env], f"env {env}"
    if config.getini(ini):
        return config.getini(ini), f"ini {ini}"
    return None, "default"


def values(config: pytest.Config) -> dict[str, tuple[str | list[str] | None, str]]:
    return {ini: value(config, ini, env) for _, ini, env, _ in OPTIONS}


def uses_overlord(config: pytest.Config) -> bool:
    """Whether the user asked for us explicitly (any option) or has the files we work on."""
    explicit = any(v for v, _ in values(config).values()) or config.getoption("overlord_roundtrip")
    return bool(explicit) or (config.rootpath / "yoyo.ini").is_file() or (config.rootpath / "migrations").is_dir()
