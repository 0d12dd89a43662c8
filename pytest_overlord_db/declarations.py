"""What a project declares about its own round trip, in pyproject.toml or yoyo.ini, each entry with a reason:

- accepted leftovers: an object a migration's rollback keeps on purpose
  (``[[tool.overlord_db.accepted]]`` with migration, object, reason, or a
  ``[overlord_db:accepted]`` section of ``<migration> <object> = <reason>`` lines);
- irreversible migrations: a migration that cannot be rolled back, on purpose
  (``[[tool.overlord_db.irreversible]]`` with migration, reason, or a
  ``[overlord_db:irreversible]`` section of ``<migration> = <reason>`` lines).

Both are checked against what the round trip finds: one that matches nothing is reported as stale.
"""
from __future__ import annotations

import configparser
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError

ACCEPTED_SECTION = "overlord_db:accepted"
IRREVERSIBLE_SECTION = "overlord_db:irreversible"


def read_accepted(root: Path, ini_path: Path | None = None) -> tuple[dict[str, str], ...]:
    entries = []
    for key, reason in _ini_section(ini_path, ACCEPTED_SECTION):
        migration, _, obj = key.strip().partition(" ")
        if not obj.strip() or not reason.strip():
            raise ConfigError(
                f"{ini_path}: [{ACCEPTED_SECTION}] lines read `<migration> <object> = <reason>`; {key!r} is not one."
            )
        entries.append({"migration": migration, "object": obj.strip(), "reason": reason.strip()})
    return tuple(entries) + _pyproject_entries(root, "accepted", ("migration", "object", "reason"))


def read_irreversible(root: Path, ini_path: Path | None = None) -> tuple[dict[str, str], ...]:
    entries = []
    for key, reason in _ini_section(ini_path, IRREVERSIBLE_SECTION):
        if " " in key.strip() or not reason.strip():
            raise ConfigError(
                f"{ini_path}: [{IRREVERSIBLE_SECTION}] lines read `<migration> = <reason>`; {key!r} is not one."
            )
        entries.append({"migration": key.strip(), "reason": reason.strip()})
    found = tuple(entries) + _pyproject_entries(root, "irreversible", ("migration", "reason"))
    seen: set[str] = set()
    for entry in found:
        if entry["migration"] in seen:
            raise ConfigError(f"Migration {entry['migration']} is declared irreversible twice; keep one declaration.")
        seen.add(entry["migration"])
    return found


def _ini_section(ini_path: Path | None, section: str) -> list[tuple[str, str]]:
    if ini_path is None:
        return []
    parser = configparser.ConfigParser(interpolation=None, default_section="\0no-defaults")
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep object names' case
    parser.read(ini_path, encoding="utf-8")
    return parser.items(section) if parser.has_section(section) else []


def tool_table(root: Path) -> dict[str, Any]:
    """The ``[tool.overlord_db]`` table of the project's pyproject.toml ({} when there is none)."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    try:
        data: dict[str, Any] = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except Exception as exc:
        raise ConfigError(f"{pyproject}: cannot parse it: {exc}") from None
    table = data.get("tool", {}).get("overlord_db", {})
    return table if isinstance(table, dict) else {}


def _pyproject_entries(root: Path, table: str, keys: tuple[str, ...]) -> tuple[dict[str, str], ...]:
    pyproject = root / "pyproject.toml"
    entries = tool_table(root).get(table, [])
    for entry in entries:
        missing = set(keys) - set(entry)
        if missing:
            raise ConfigError(
                f"{pyproject}: every [[tool.overlord_db.{table}]] entry needs {', '.join(keys[:-1])} and "
                f"{keys[-1]}; {entry!r} lacks {', '.join(sorted(missing))}."
            )
    return tuple({k: str(entry[k]) for k in keys} for entry in entries)


def refuse_crossing(rolled_back: list[str], irreversible: tuple[dict[str, str], ...]) -> None:
    """A rollback of the migrations ``rolled_back`` (ids, newest first) must stop at one declared irreversible."""
    declared = {d["migration"]: d["reason"] for d in irreversible}
    stop = next((m for m in rolled_back if m in declared), None)
    if stop is not None:
        raise ConfigError(
            f"{stop} is declared irreversible ({declared[stop]}), so rolling back past it is refused: "
            f"{len(rolled_back)} migration(s) were asked for, and nothing was rolled back. Roll back to {stop} "
            "or later, or remove the declaration if its rollback really works.")
