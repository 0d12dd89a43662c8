"""Every setting of the plugin, the CLI and ``ensure_migrations()``, resolved once, each with its source.

Precedence everywhere: an explicit option (a pytest flag, a CLI option or an
argument), then an environment variable, then the pytest ini setting, then
yoyo.ini (the section chosen by ``--env`` / ``OVERLORD_ENV``), then the
default. ``Settings.sources`` says, for each value, which one it came from;
``pytest -v`` prints them in its header.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import serverconf, urls
from .declarations import read_accepted, read_irreversible
from .errors import ConfigError
from .inifile import YoyoIni, open_ini

DEFAULT_IMAGE = "pgvector/pgvector:pg17"
BACKENDS = ("auto", "embedded", "docker", "url")
DOCKER_NETWORKS = ("default", "host")  # default: the engine's own network and a published port
SWITCH = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False, "0": False}


@dataclass(frozen=True)
class Settings:
    root: Path
    migrations_dir: Path
    seeds_dir: Path
    seed: str | None = None
    backend: str = "auto"
    db_url: str | None = None  # the server the plugin creates its databases on (--overlord-db-url)
    image: str = DEFAULT_IMAGE
    docker_network: str = "default"
    reuse_container: bool = False  # keep the project's container between runs, so its template survives
    reuse_idle: float = 1800.0  # seconds a kept container waits for the next run before it stops itself
    datadir: Path | None = None
    ini_path: Path | None = None
    accepted: tuple[dict[str, str], ...] = field(default=())
    irreversible: tuple[dict[str, str], ...] = field(default=())  # migrations irreversible on purpose
    migrator: str = "auto"  # auto, yoyo, sqlfolders, or module:Class
    # The CLI's and ensure_migrations()' view: which application database, which yoyo.ini section.
    env: str | None = None
    database_url: str | None = None
    batch_mode: bool = False
    migration_timeout: float | None = None  # seconds one migration may run before it is cancelled
    data_rows: int = 3  # rows the round trip generates in every table before each migration (0: none)
    data_seed: int = 0  # the same seed draws the same rows
    pgvector_types: bool = True  # register pgvector's types on the fixtures' connections (when it is installed)
    # Sharing one server between runs, branches and CI runners (docs/how-to/shared-server.md).
    host_id: str | None = None  # names this machine in database names and marks (default: the host name)
    project: str | None = None  # groups templates for collection (default: folder names, not their path)
    admin_db: str | None = None  # the database of the --overlord-db-url server to connect to first
    keep_templates: int = 3  # unused templates of the project kept besides the ones live runs use
    template_max_age: float = 7 * 86400.0  # seconds an unused template is kept
    lease_timeout: float = 60.0  # seconds a vanished runner's session (its lease) may outlive it over TCP
    keep_failed: bool = False  # keep the fresh databases of failed tests (the next run drops them)
    cache_max_age: float = 7.0  # days an embedded data directory may stay unused before it is removed (0: never)
    extension_dirs: tuple[Path, ...] = ()  # more extensions for the embedded server (serverconf.py)
    server_settings: tuple[tuple[str, str], ...] = ()  # (name, value) for the servers the plugin starts
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def seed_files(self) -> list[Path]:
        return seed_files(self.seeds_dir, self.seed) if self.seed else []

    def __repr__(self) -> str:  # pytest --showlocals prints it: passwords masked
        shown = ", ".join(f"{name}={value}" for name, value, _ in self.describe())
        return f"Settings(root={str(self.root)!r}, {shown})"

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "No database configured: pass --database-url, set DATABASE_URL, or give the "
                f"[{self.env or 'DEFAULT'}] section of yoyo.ini a `database =` line."
            )
        return self.database_url

    def describe(self) -> list[tuple[str, str, str]]:
        """(name, value, source) of every setting that has a source, passwords masked."""
        rows = []
        for name, source in self.sources.items():
            value = getattr(self, name)
            shown = urls.mask(value) if name in ("db_url", "database_url") and value else value
            if isinstance(value, tuple):
                shown = "; ".join("=".join(v) if isinstance(v, tuple) else str(v) for v in value) or None
            rows.append((name, "(unset)" if shown is None else str(shown), source))
        return rows


def environments(seeds_dir: Path) -> list[str]:
    if not seeds_dir.is_dir():
        return []
    return sorted(p.name for p in seeds_dir.iterdir() if p.is_dir() and any(p.glob("*.sql")))


def seed_files(seeds_dir: Path, env: str) -> list[Path]:
    """The seed files of ``env`` in the order they run, or an error naming the ones that exist."""
    folder = seeds_dir / env
    files = sorted(folder.glob("*.sql")) if folder.is_dir() else []
    if not files:
        known = environments(seeds_dir)
        listing = ", ".join(known) if known else f"none (no seeds/<ENV>/*.sql under {seeds_dir})"
        raise ConfigError(f"Unknown seed environment {env!r}: {folder} has no .sql files. Environments that exist: {listing}.")
    return files


class _Resolver:
    """Picks each value by precedence and remembers where it came from."""

    def __init__(self, given: Mapping[str, Any], given_sources: Mapping[str, str], environ: Mapping[str, str],
                 ini: YoyoIni | None, env: str | None) -> None:
        self.given, self.given_sources, self.environ = given, given_sources, environ
        self.ini, self.env = ini, env
        self.sources: dict[str, str] = {}

    def pick(self, name: str, env_var: str | None = None, ini_key: str | None = None, default: Any = None) -> Any:
        if self.given.get(name) not in (None, ""):
            self.sources[name] = self.given_sources.get(name, "option")
            return self.given[name]
        if env_var and self.environ.get(env_var):
            self.sources[name] = f"env {env_var}"
            return self.environ[env_var]
        if ini_key and self.ini is not None:
            value = self.ini.get(ini_key, self.env)
            if value:
                self.sources[name] = f"{self.ini.path} [{self.env or 'DEFAULT'}] {ini_key}"
                return value
        self.sources[name] = "default"
        return default


def _flag(r: _Resolver, name: str, raw: Any) -> bool:
    """An on/off setting: a flag (True), or on/off words from the environment or an ini file."""
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name.replace('_', '-')} must be on or off (true/false, yes/no, 1/0), not {raw!r} "
                      f"(from {r.sources[name]}).")


def find_root(start: Path | None = None) -> Path:
    """The project folder a command run in ``start`` (default: here) means, as pytest finds its rootdir: the
    nearest folder upwards holding yoyo.ini, pyproject.toml or a migrations folder; ``start`` when none does."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "yoyo.ini").is_file() or (folder / "pyproject.toml").is_file() or (folder / "migrations").is_dir():
            return folder
    return here


def resolve(
    root: Path | str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    check_migrations: bool = True,
    **given: Any,
) -> Settings:
    """Build and validate Settings; every problem is a ConfigError naming the culprit.

    ``given`` holds explicit values by field name (``migrations_dir``, ``seeds_dir``, ``seed``,
    ``backend``, ``db_url``, ``image``, ``datadir``, ``migrator``, ``env``, ``database_url``); relative
    folders are taken from ``root``. ``sources`` says where each given one came from (default: "option").
    """
    environ = os.environ if environ is None else environ
    root = Path(root or os.getcwd()).resolve()
    env = given.get("env") or environ.get("OVERLORD_ENV") or None
    ini = open_ini(root, environ)
    if env and ini is None:
        raise ConfigError(f"--env {env} needs a yoyo.ini in {root} with a [{env}] section.")
    r = _Resolver(given, sources or {}, environ, ini, env)
    r.sources["env"] = "option" if given.get("env") else ("env OVERLORD_ENV" if env else "default")

    migrations = r.pick("migrations_dir", "OVERLORD_MIGRATIONS")
    if migrations is None and ini is not None and (found := ini.migrations_dir(env)):
        migrations_dir = found[0]
        r.sources["migrations_dir"] = f"{ini.path} [{env or 'DEFAULT'}] {found[1]}"
    else:
        migrations_dir = Path(migrations) if migrations else Path("migrations")
        migrations_dir = migrations_dir if migrations_dir.is_absolute() else root / migrations_dir
    if check_migrations and not migrations_dir.is_dir():
        raise ConfigError(
            f"Migrations folder {migrations_dir} does not exist (taken from {r.sources['migrations_dir']}). "
            "Create it, or point --overlord-migrations / OVERLORD_MIGRATIONS at your migrations."
        )
    seeds = r.pick("seeds_dir", None, "seeds")
    seeds_dir = Path(seeds) if seeds else Path("seeds")
    if not seeds_dir.is_absolute():
        from_ini = ini is not None and r.sources["seeds_dir"].startswith(str(ini.path))
        seeds_dir = (ini.path.parent if from_ini and ini is not None else root) / seeds_dir

    backend = str(r.pick("backend", "OVERLORD_BACKEND", default="auto")).lower()
    if backend not in BACKENDS:
        raise ConfigError(f"--overlord-backend={backend!r} is not one of {', '.join(BACKENDS)}.")
    db_url = r.pick("db_url", "OVERLORD_DB_URL")
    if backend == "url" and not db_url:
        raise ConfigError("--overlord-backend=url needs --overlord-db-url=URL (or OVERLORD_DB_URL).")
    datadir = r.pick("datadir", "OVERLORD_DATADIR")
    network = str(r.pick("docker_network", "OVERLORD_DOCKER_NETWORK", default="default")).strip().lower()
    if network not in DOCKER_NETWORKS:
        raise ConfigError(f"--overlord-docker-network={network!r} (from {r.sources['docker_network']}) is not one of "
                          f"{', '.join(DOCKER_NETWORKS)}: 'host' runs the container in this machine's network, "
                          "'default' on the engine's own network with a published port.")
    reuse = _flag(r, "reuse_container", r.pick("reuse_container", "OVERLORD_REUSE_CONTAINER", default=False))
    reuse_idle = duration(r.pick("reuse_idle", "OVERLORD_REUSE_IDLE", default=1800), "The idle time of a reused container",
                          r.sources["reuse_idle"])
    database_url = r.pick("database_url", "DATABASE_URL", "database")
    batch = r.pick("batch_mode", None, "batch_mode", default="off")
    timeout = r.pick("migration_timeout", "OVERLORD_MIGRATION_TIMEOUT", "migration_timeout")
    try:
        migration_timeout = float(timeout) if timeout not in (None, "") else None
    except ValueError:
        raise ConfigError(f"The migration timeout must be a number of seconds, not {timeout!r} "
                          f"(from {r.sources['migration_timeout']}).") from None
    numbers = {}
    for name, env_var, default in (("data_rows", "OVERLORD_DATA_ROWS", 3), ("data_seed", "OVERLORD_DATA_SEED", 0)):
        raw = r.pick(name, env_var, name, default=default)
        try:
            numbers[name] = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name.replace('_', '-')} must be a whole number, not {raw!r} (from {r.sources[name]}).") from None
        if numbers[name] < 0:
            raise ConfigError(f"{name.replace('_', '-')} must not be negative (from {r.sources[name]}).")
    vector_types = str(r.pick("pgvector_types", "OVERLORD_PGVECTOR_TYPES", "pgvector_types", default="on")).strip().lower()
    if vector_types not in SWITCH:
        raise ConfigError(f"pgvector-types must be on or off, not {vector_types!r} (from {r.sources['pgvector_types']}).")
    shared = _shared_server(r)
    keep_failed = _flag(r, "keep_failed", r.pick("keep_failed", "OVERLORD_KEEP_FAILED", default=False))
    raw_age = r.pick("cache_max_age", "OVERLORD_CACHE_MAX_AGE", default=7.0)
    try:
        cache_max_age = float(raw_age)
    except (TypeError, ValueError):
        cache_max_age = -1.0
    if not cache_max_age >= 0:  # also NaN
        raise ConfigError(f"The cache's max age must be a number of days (0: never remove), not {raw_age!r} "
                          f"(from {r.sources['cache_max_age']}).")
    servers = serverconf.resolve(root, r.pick("extension_dirs", "OVERLORD_EXTENSION_DIRS"),
                                 r.pick("server_settings", "OVERLORD_SERVER_SETTINGS"), r.sources)
    settings = Settings(
        root=root,
        migrations_dir=migrations_dir.resolve(),
        seeds_dir=seeds_dir.resolve(),
        seed=r.pick("seed", "OVERLORD_SEED") or None,
        backend=backend,
        db_url=db_url,
        image=r.pick("image", "OVERLORD_IMAGE", default=DEFAULT_IMAGE),
        docker_network=network,
        reuse_container=reuse,
        reuse_idle=reuse_idle,
        datadir=Path(datadir) if datadir else None,
        ini_path=ini.path if ini else None,
        accepted=read_accepted(root, ini.path if ini else None),
        irreversible=read_irreversible(root, ini.path if ini else None),
        migrator=r.pick("migrator", "OVERLORD_MIGRATOR", "migrator", default="auto"),
        env=env,
        database_url=database_url,
        batch_mode=str(batch).strip().lower() in {"on", "true", "yes", "1"},
        migration_timeout=migration_timeout,
        data_rows=numbers["data_rows"],
        data_seed=numbers["data_seed"],
        pgvector_types=SWITCH[vector_types],
        **shared,
        keep_failed=keep_failed,
        cache_max_age=cache_max_age,
        **servers,
        sources=dict(r.sources),
    )
    settings.seed_files()  # an unknown --seed fails here, before any server starts
    return settings


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(raw: object, what: str, source: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h`` or ``7d``."""
    text = str(raw).strip().lower()
    unit = _UNITS.get(text[-1:], None) if text else None
    try:
        seconds = float(text[:-1] if unit else text) * (unit or 1.0)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigError(f"{what} must be a duration such as 90, 90s, 15m, 12h or 7d, not {raw!r} (from {source}).")
    return seconds


def _shared_server(r: _Resolver) -> dict[str, Any]:
    """The settings for many runs on one server: host identity, project, admin database, template collection."""
    keep = r.pick("keep_templates", "OVERLORD_KEEP_TEMPLATES", None, default=3)
    try:
        keep_templates = int(keep)
    except (TypeError, ValueError):
        keep_templates = -1
    if keep_templates < 0:
        raise ConfigError(f"keep-templates must be a whole number, 0 or more, not {keep!r} (from {r.sources['keep_templates']}).")
    age = r.pick("template_max_age", "OVERLORD_TEMPLATE_MAX_AGE", None, default="7d")
    lease = r.pick("lease_timeout", "OVERLORD_LEASE_TIMEOUT", None, default="60")
    lease_timeout = duration(lease, "lease-timeout", r.sources["lease_timeout"])
    if lease_timeout < 1:
        raise ConfigError(f"lease-timeout must be at least 1 second, not {lease!r} (from {r.sources['lease_timeout']}).")
    return {
        "host_id": r.pick("host_id", "OVERLORD_HOST_ID") or None,
        "project": r.pick("project", "OVERLORD_PROJECT") or None,
        "admin_db": r.pick("admin_db", "OVERLORD_ADMIN_DB") or None,
        "keep_templates": keep_templates,
        "template_max_age": duration(age, "template-max-age", r.sources["template_max_age"]),
        "lease_timeout": lease_timeout,
    }
