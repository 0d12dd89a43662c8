"""yoyo.ini + options + environment -> one Settings object.

Precedence everywhere: an explicit option, then an environment variable, then
the pytest ini / yoyo.ini, then the default.
"""
from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .errors import ConfigError

DEFAULT_IMAGE = "pgvector/pgvector:pg17"
BACKENDS = ("auto", "embedded", "docker", "url")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Settings:
    root: Path
    migrations_dir: Path
    seeds_dir: Path
    seed: str | None = None
    backend: str = "auto"
    db_url: str | None = None
    image: str = DEFAULT_IMAGE
    datadir: Path | None = None
    ini_path: Path | None = None
    accepted: tuple[dict, ...] = field(default=())
    migrator: str = "auto"  # auto, yoyo, sqlfolders, or module:Class

    def seed_files(self) -> list[Path]:
        return seed_files(self.seeds_dir, self.seed) if self.seed else []


class YoyoIni:
    """The seed's yoyo.ini: sections per environment, ``${VAR}`` from the environment.

    Values are expanded when read, so an unset variable in a section nobody
    asked for is never an error.
    """

    def __init__(self, path: Path, environ: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.environ = os.environ if environ is None else environ
        self.parser = configparser.ConfigParser(interpolation=None)
        try:
            self.parser.read(path, encoding="utf-8")
        except configparser.Error as exc:
            raise ConfigError(f"{path}: cannot parse it as an ini file: {exc}") from None

    def sections(self) -> list[str]:
        return self.parser.sections()

    def get(self, key: str, env: str | None = None) -> str | None:
        section = env or "DEFAULT"
        if section != "DEFAULT" and not self.parser.has_section(section):
            known = ", ".join(["DEFAULT", *self.sections()])
            raise ConfigError(
                f"{self.path}: there is no [{section}] section for environment {section!r}; "
                f"sections there: {known}."
            )
        raw = self.parser.get(section, key, fallback=None)
        if raw is None:
            return None
        return self._expand(raw, key, section)

    def _expand(self, raw: str, key: str, section: str) -> str:
        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.environ:
                raise ConfigError(
                    f"{self.path}: [{section}] {key} uses ${{{name}}}, but the environment "
                    f"variable {name} is not set. Set it, or pass the value as an option."
                )
            return self.environ[name]

        value = _VAR.sub(repl, raw)
        # yoyo's own interpolation: %(here)s is the folder holding the file.
        return value.replace("%(here)s", str(self.path.parent))

    def migrations_dir(self, env: str | None = None) -> Path | None:
        value = self.get("migrations", env) or self.get("sources", env)
        if not value:
            return None
        first = value.split()[0]
        path = Path(first)
        return path if path.is_absolute() else self.path.parent / path


def find_ini(root: Path) -> Path | None:
    candidate = root / "yoyo.ini"
    return candidate if candidate.is_file() else None


def open_ini(root: Path, environ: Mapping[str, str]) -> YoyoIni | None:
    """The project's yoyo.ini, if it has one."""
    path = find_ini(root)
    return YoyoIni(path, environ) if path else None


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


ACCEPTED_SECTION = "overlord_db:accepted"


def read_accepted(root: Path, ini_path: Path | None = None) -> tuple[dict, ...]:
    """Accepted round-trip exceptions: ``[[tool.overlord_db.accepted]]`` in pyproject.toml and/or a
    ``[overlord_db:accepted]`` section of yoyo.ini, one ``<migration> <object> = <reason>`` per line."""
    entries: list[dict] = []
    if ini_path is not None:
        parser = configparser.ConfigParser(interpolation=None, default_section="\0no-defaults")
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep object names' case
        parser.read(ini_path, encoding="utf-8")
        if parser.has_section(ACCEPTED_SECTION):
            for key, reason in parser.items(ACCEPTED_SECTION):
                migration, _, obj = key.strip().partition(" ")
                if not obj.strip() or not reason.strip():
                    raise ConfigError(
                        f"{ini_path}: [{ACCEPTED_SECTION}] lines read `<migration> <object> = <reason>`; {key!r} is not one."
                    )
                entries.append({"migration": migration, "object": obj.strip(), "reason": reason.strip()})
    return tuple(entries) + _read_accepted_pyproject(root)


def _read_accepted_pyproject(root: Path) -> tuple[dict, ...]:
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return ()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except Exception as exc:
        raise ConfigError(f"{pyproject}: cannot parse it: {exc}") from None
    entries = data.get("tool", {}).get("overlord_db", {}).get("accepted", [])
    for entry in entries:
        missing = {"migration", "object", "reason"} - set(entry)
        if missing:
            raise ConfigError(
                f"{pyproject}: every [[tool.overlord_db.accepted]] entry needs migration, object and "
                f"reason; {entry!r} lacks {', '.join(sorted(missing))}."
            )
    return tuple(entries)


def locate(
    root: Path,
    ini: YoyoIni | None,
    migrations: str | os.PathLike[str] | None = None,
    seeds: str | os.PathLike[str] | None = None,
    env: str | None = None,
) -> tuple[Path, Path, str]:
    """(migrations folder, seeds folder, where the first came from): option, yoyo.ini, or ./migrations."""
    if migrations:
        migrations_dir, origin = Path(migrations), "--overlord-migrations"
        if not migrations_dir.is_absolute():
            migrations_dir = root / migrations_dir
    elif ini is not None and ini.migrations_dir(env):
        migrations_dir, origin = ini.migrations_dir(env), f"{ini.path} (migrations =)"  # type: ignore[assignment]
    else:
        migrations_dir, origin = root / "migrations", "the default ./migrations"
    seeds_value = seeds or (ini.get("seeds", env) if ini else None)
    seeds_dir = Path(seeds_value) if seeds_value else root / "seeds"
    if not seeds_dir.is_absolute():
        seeds_dir = (ini.path.parent if ini is not None and not seeds else root) / seeds_dir
    return migrations_dir.resolve(), seeds_dir.resolve(), origin


def resolve(
    root: Path,
    *,
    migrations: str | os.PathLike[str] | None = None,
    seeds: str | os.PathLike[str] | None = None,
    seed: str | None = None,
    backend: str | None = None,
    db_url: str | None = None,
    image: str | None = None,
    datadir: str | os.PathLike[str] | None = None,
    migrator: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build and validate Settings; every problem is a ConfigError naming the culprit."""
    environ = os.environ if environ is None else environ
    root = Path(root).resolve()
    ini = open_ini(root, environ)
    ini_path = ini.path if ini else None

    migrations_dir, seeds_dir, origin = locate(root, ini, migrations, seeds)
    if not migrations_dir.is_dir():
        raise ConfigError(
            f"Migrations folder {migrations_dir} does not exist (taken from {origin}). "
            "Create it, or point --overlord-migrations / OVERLORD_MIGRATIONS at your yoyo migrations."
        )

    backend = (backend or environ.get("OVERLORD_BACKEND") or "auto").lower()
    if backend not in BACKENDS:
        raise ConfigError(f"--overlord-backend={backend!r} is not one of {', '.join(BACKENDS)}.")
    db_url = db_url or environ.get("OVERLORD_DB_URL") or None
    if backend == "url" and not db_url:
        raise ConfigError("--overlord-backend=url needs --overlord-db-url=URL (or OVERLORD_DB_URL).")

    settings = Settings(
        root=root,
        migrations_dir=migrations_dir,
        seeds_dir=seeds_dir,
        seed=seed or None,
        backend=backend,
        db_url=db_url,
        image=image or environ.get("OVERLORD_IMAGE") or DEFAULT_IMAGE,
        datadir=Path(datadir or environ["OVERLORD_DATADIR"]) if (datadir or environ.get("OVERLORD_DATADIR")) else None,
        ini_path=ini_path,
        accepted=read_accepted(root, ini_path),
        migrator=migrator or environ.get("OVERLORD_MIGRATOR") or "auto",
    )
    settings.seed_files()  # an unknown --seed fails here, before any server starts
    return settings
